"""Image build: the lab image (offline base or Dockerfile, the lab layer, each kind's default
installation) and the versions image FROM it, each a no-op when an image with the same inputs
is there."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.runtimes.images.daemon import client, find, get
from harness.runtimes.images.names import (
    LAB_IMAGE,
    LABEL_INPUTS,
    LABEL_KIND,
    LABEL_PACKAGES,
    LABEL_PROXIES,
    LABEL_VERSIONS,
    Progress,
    digest,
    lab_image,
    loaded_tag,
    stderr_progress,
    upstream,
    version_tag,
    versions_image,
)
from harness.runtimes.images.plan import (
    ImageEntry,
    docker_dir,
    dockerfile_base,
    image_inputs,
    image_plan,
    lab_inputs,
    lab_layer,
    packages,
    split_plan,
    write_image_context,
)
from harness.runtimes.images.rootfs import base_inputs, ensure_base, scratch_dir
from harness.runtimes.images.status import dpkg_versions, image_versions_of, versions_from_packages


@dataclass
class BuildResult:
    """What :func:`build` did."""

    image: str
    tags: list[str]
    versions: dict[str, str]
    skipped: bool
    duration_s: float
    steps: dict[str, float] = field(default_factory=dict)


def build(
    *,
    progress: Progress | None = None,
    force: bool = False,
    method: str = "offline",
    image: str = LAB_IMAGE,
    versions: bool = False,
) -> BuildResult:
    """Build the lab image (a no-op when an image with the same inputs exists).

    Args:
        progress: called with one line per step; default: lines on stderr.
        force: rebuild even when the inputs are unchanged, and even when ``current`` is an
            image that ``images load`` brought (which a build would otherwise refuse to replace).
        method: ``offline`` (mmdebstrap + docker import) or ``dockerfile`` (``labs/docker/Dockerfile``;
            pulls its base image only when it is missing).
        image: the alias to tag (``trustlab/lab:current``); the versioned tag goes to the same
            repository. Tests build into a throwaway repository, never over ``current``.
        versions: also build the versions image (:func:`versions_image` of *image*) FROM the lab
            image: every other installation this host has (:func:`image_plan`). The result is
            then the versions image's.
    """
    say = progress or stderr_progress()
    t0 = time.perf_counter()
    c = client(timeout=600)
    defaults, extras = split_plan(image_plan())
    lab = _build_lab(c, defaults, say=say, force=force, method=method, image=image, t0=t0)
    if not versions:
        return lab
    target = versions_image() if image == lab_image() else versions_image(image)
    return _build_versions(c, lab, extras, say=say, force=force, image=target, t0=t0)


def _build_lab(
    c: Any, plan: list[ImageEntry], *, say: Progress, force: bool, method: str, image: str, t0: float
) -> BuildResult:
    """The default lab image: the base, the lab layer and each kind's default installation."""
    steps: dict[str, float] = {}
    if method == "dockerfile":
        base_name = dockerfile_base()
        base_img = get(c, base_name)
        base_id = base_img.id if base_img is not None else "missing"
        base_hash = digest("dockerfile-v1", (docker_dir() / "Dockerfile").read_text(), " ".join(packages()), base_id)
    elif method == "offline":
        base_hash = base_inputs()
    else:
        raise LabError(f"images build --method: {method!r} is unknown; choose offline or dockerfile")
    inputs = lab_inputs(base_hash, image_inputs(plan))
    done = _up_to_date(c, "lab", inputs, image, say=say, force=force, t0=t0)
    if done is not None:
        return done
    # The layer below the proxies gets its own inputs label: only the finished image is "up to date".
    if method == "dockerfile":
        img = _build_dockerfile(c, f"{inputs}-layer", say, steps)
    else:
        base, pkgs = ensure_base(c, base_hash, say, steps, force=force)
        img = _build_layer(c, base, pkgs, f"{inputs}-layer", say, steps)
    img = _build_proxies(c, img, plan, inputs, say, steps, apt=True)
    return _finish(c, img, image, say, steps, t0)


def _build_versions(
    c: Any, lab: BuildResult, plan: list[ImageEntry], *, say: Progress, force: bool, image: str, t0: float
) -> BuildResult:
    """The versions image: FROM the lab image (its layers shared), plus every other installation."""
    steps = dict(lab.steps)
    base = c.images.get(lab.image)
    inputs = digest("versions-v1", base.id, image_inputs(plan))
    done = _up_to_date(c, "lab-versions", inputs, image, say=say, force=force, t0=t0)
    if done is not None:
        return done
    if not plan:
        say("versions image: this host has no installation beyond the defaults (trustlab proxies install --all)")
    img = _build_proxies(c, base, plan, inputs, say, steps, kind="lab-versions", label="versions layer")
    return _finish(c, img, image, say, steps, t0)


def _up_to_date(
    c: Any, kind: str, inputs: str, image: str, *, say: Progress, force: bool, t0: float
) -> BuildResult | None:
    """The image of *kind* already built from *inputs*, tagged *image* (a :class:`BuildResult`
    marked skipped), or None: build it. Refuses to move an alias that `images load` put there."""
    loaded = _loaded_current(c, image)
    if force:
        return None
    for img in find(c, **{LABEL_KIND: kind, LABEL_INPUTS: inputs}):
        if loaded is not None and img.id != loaded.id:
            break  # the up-to-date image is not the loaded one: moving current needs --force
        versions = image_versions_of(c, img)
        tags = _tag(img, versions, image)
        say(f"up to date: {', '.join(tags)} (inputs {inputs[:12]})")
        return BuildResult(image, tags, versions, True, time.perf_counter() - t0)
    if loaded is not None:
        versions = image_versions_of(c, loaded)
        raise LabError(
            f"images build: {image} was loaded from a file (trustlab images load; "
            f"{', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}); a build would replace it with "
            "one made from this machine's own packages. Keep it, or pass --force to rebuild "
            f"({loaded_tag(image)} keeps the loaded image either way)"
        )
    return None


def _finish(c: Any, img: Any, image: str, say: Progress, steps: dict[str, float], t0: float) -> BuildResult:
    versions = json.loads(img.labels.get(LABEL_VERSIONS, "{}"))
    tags = _tag(img, versions, image)
    # The images this build replaced are now untagged: drop them (ours only, by label).
    with contextlib.suppress(Exception):
        c.images.prune(filters={"dangling": True, "label": LABEL_KIND})
    duration = time.perf_counter() - t0
    say(f"built {', '.join(tags)} in {duration:.1f}s")
    return BuildResult(image, tags, versions, False, duration, steps)


def _loaded_current(c: Any, image: str) -> Any:
    """The image at *image* when `images load` put it there (it carries the ``loaded`` tag), else None."""
    current, loaded = get(c, image), get(c, loaded_tag(image))
    return current if current is not None and loaded is not None and current.id == loaded.id else None


def _tag(img: Any, versions: dict[str, str], image: str = LAB_IMAGE) -> list[str]:
    repo = image.rpartition(":")[0]
    tags = [f"{repo}:{version_tag(versions)}", image]
    for t in tags:
        if t not in img.tags:
            r, _, tag = t.rpartition(":")
            img.tag(r, tag)
    return tags


def _build_layer(c: Any, base: str, pkgs: dict[str, str], inputs: str, say: Progress, steps: dict[str, float]) -> Any:
    versions = versions_from_packages(pkgs)
    say(f"lab layer on {base}")
    t = time.perf_counter()
    img = _docker_build(
        c,
        {"Dockerfile": lab_layer(base).encode()},
        say,
        labels={
            LABEL_KIND: "lab",
            LABEL_INPUTS: inputs,
            LABEL_VERSIONS: json.dumps(versions, sort_keys=True),
            LABEL_PACKAGES: json.dumps(pkgs, sort_keys=True),
        },
    )
    steps["layer_s"] = time.perf_counter() - t
    return img


def _build_proxies(
    c: Any,
    img: Any,
    plan: list[ImageEntry],
    inputs: str,
    say: Progress,
    steps: dict[str, float],
    *,
    apt: bool = False,
    kind: str = "lab",
    label: str = "proxies layer",
) -> Any:
    """The top layer: the host's non-Debian proxy binaries copied in (no network), and the
    ``trustlab.proxies`` label listing every installation the image carries: *img*'s own (its
    Debian packages' when *apt*, else its label) and *plan*'s."""
    t = time.perf_counter()
    labels = {k: v for k, v in (img.labels or {}).items() if k.startswith("trustlab.")}
    if apt:
        below = _apt_records(json.loads(labels.get(LABEL_PACKAGES, "{}")))
    else:
        below = list(json.loads(labels.get(LABEL_PROXIES, "[]")))
    records = [*below, *(e.record() for e in plan)]
    labels.update({LABEL_KIND: kind, LABEL_INPUTS: inputs, LABEL_PROXIES: json.dumps(records, sort_keys=True)})
    with scratch_dir() as tmp:
        context = Path(tmp) / "context.tar"
        size = write_image_context(plan, context, img.id, {})
        say(f"{label}: {', '.join(f'{e.kind} {e.version}' for e in plan) or 'none'} ({size / 1e6:.0f} MB)")
        with open(context, "rb") as fh:
            out = _docker_build_file(c, fh, say, labels=labels)
    key = "versions" if kind == "lab-versions" else "proxies"
    steps[f"{key}_s"] = time.perf_counter() - t
    steps[f"{key}_mb"] = round(size / 1e6, 1)
    return out


def _apt_records(pkgs: dict[str, str]) -> list[dict[str, str]]:
    """The image's own Debian proxies, as ``trustlab.proxies`` records (versions from its dpkg)."""
    from harness.proxies import driver, kinds

    out = []
    for kind in kinds():
        drv = driver(kind)
        version = upstream(pkgs.get(drv.image_package, "")) if drv.image_package else ""
        if not version or not drv.image_binary:
            continue
        out.append(_apt_record(drv, drv.image_package, drv.image_binary, pkgs))
    return out


def _apt_record(drv: Any, package: str, binary: str, pkgs: dict[str, str]) -> dict[str, str]:
    """One Debian proxy of the image. When the host has the same build of that package, the
    version and TLS library are what the binary itself says on the host (Debian's trafficserver
    9.2.5+ds-0+deb12u4 says 9.2.9); else the package's upstream version."""
    version, tls = upstream(pkgs[package]), ""
    if _host_package_version(package) == pkgs[package]:
        same = next((i for i in drv.installations() if i.source == "apt" and i.binary == binary), None)
        if same is not None:
            version, tls = same.version, same.tls
    if tls.startswith("OpenSSL") and pkgs.get("libssl3"):
        tls = f"OpenSSL {upstream(pkgs['libssl3'])}"  # the image's own libssl, not the host's
    return {"kind": drv.kind.value, "version": version, "tls": tls, "from": "apt", "binary": binary}


def _host_package_version(package: str) -> str:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _build_dockerfile(c: Any, inputs: str, say: Progress, steps: dict[str, float]) -> Any:
    files = {name: (docker_dir() / name).read_bytes() for name in ("Dockerfile", "packages.txt")}
    base = dockerfile_base()
    present = get(c, base) is not None
    if present:
        say(f"base {base} is present: not pulling it")
    else:
        say(f"base {base} is missing: pulling it (needs a registry; offline: trustlab images build)")
    t = time.perf_counter()
    # The RUN steps' apt-get needs the network the base's apt sources name (none for a base
    # whose packages are already installed, as in CI).
    img = _docker_build(c, files, say, labels={LABEL_KIND: "lab", LABEL_INPUTS: inputs}, pull=not present, network=True)
    steps["dockerfile_s"] = time.perf_counter() - t
    # Versions are only known after the build: read them inside the image, then relabel.
    pkgs = dpkg_versions(c, img.id)
    return _docker_build(
        c,
        {"Dockerfile": f"FROM {img.id}\n".encode()},
        say,
        labels={
            LABEL_KIND: "lab",
            LABEL_INPUTS: inputs,
            LABEL_VERSIONS: json.dumps(versions_from_packages(pkgs), sort_keys=True),
            LABEL_PACKAGES: json.dumps(pkgs, sort_keys=True),
        },
    )


def _docker_build(
    c: Any, files: dict[str, bytes], say: Progress, *, labels: dict[str, str], pull: bool = False, network: bool = False
) -> Any:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return _docker_build_file(c, buf, say, labels=labels, pull=pull, network=network)


def _docker_build_file(
    c: Any, buf: Any, say: Progress, *, labels: dict[str, str], pull: bool = False, network: bool = False
) -> Any:
    """``docker build`` of a context tar (*buf*: a file object, streamed to the daemon)."""
    import docker.errors

    try:
        img, logs = c.images.build(
            fileobj=buf,
            custom_context=True,
            labels=labels,
            rm=True,
            forcerm=True,
            pull=pull,
            network_mode="default" if network else "none",
        )
    except docker.errors.BuildError as exc:
        lines = [str(x.get("stream") or x.get("error") or "").strip() for x in exc.build_log]
        raise LabError(
            f"images build: docker build failed: {exc.msg}; {' | '.join(ln for ln in lines if ln)[-600:]}"
        ) from None
    for entry in logs:
        line = str(entry.get("stream", "")).strip()
        if line.startswith("Step "):
            say(f"  {line}")
    return img
