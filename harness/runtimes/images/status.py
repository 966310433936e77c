"""What the daemon has: whether the images are there, and what they carry (versions, installations)."""

from __future__ import annotations

import json
import shutil
from typing import Any

from harness.errors import PrerequisiteError
from harness.runtimes import dockerhost
from harness.runtimes.images.daemon import client, get
from harness.runtimes.images.names import (
    ALIAS,
    CLASSROOM_REPO,
    LAB_REPO,
    LABEL_PROXIES,
    LABEL_VERSIONS,
    LOADED,
    VERSIONS_BUILD,
    lab_image,
    upstream,
    versions_image,
)
from harness.runtimes.images.plan import recorded_packages


def images_present() -> bool:
    """True when a daemon answers and the lab image (``trustlab/lab:current``) is there."""
    try:
        c = client(timeout=5)
    except PrerequisiteError:
        return False
    return get(c, lab_image()) is not None


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
    img = get(c, ref)
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
    return [*lines, *_image_lines(c)]


def _image_lines(c: Any) -> list[str]:
    """Doctor's lines for the lab, versions and classroom images, and for mmdebstrap."""
    lines = []
    ref = lab_image()
    img = get(c, ref)
    if img is None:
        lines.append(f"NO    image {ref}: trustlab images build (or trustlab images load FILE.tar)")
    else:
        tags = ", ".join(sorted(t for t in img.tags if t.startswith(ref.rpartition(":")[0])))
        lines.append(f"ok    image {tags} ({_what(c, img)})")
    vref = versions_image()
    vimg = get(c, vref)
    if vimg is None:
        lines.append(f"--    image {vref}: only for non-default versions ({VERSIONS_BUILD})")
    else:
        lines.append(f"ok    image {vref} ({_what(c, vimg)})")
    room = get(c, f"{CLASSROOM_REPO}:{ALIAS}")
    lines.append(
        f"ok    classroom image {CLASSROOM_REPO}:{ALIAS} ({room.attrs.get('Size', 0) / 1e6:.0f} MB)"
        if room is not None
        else f"--    classroom image {CLASSROOM_REPO}:{ALIAS}: only for `trustlab classroom` (it builds it)"
    )
    lines.append(
        "ok    mmdebstrap (offline image builds)"
        if shutil.which("mmdebstrap")
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
        what = ", ".join(f"{k} {v}" for k, v in sorted(image_versions_of(c, img).items()))
    return f"{what}; {img.attrs.get('Size', 0) / 1e6:.0f} MB"


def image_versions(c: Any | None = None) -> dict[str, str]:
    """Proxy and OpenSSL versions inside the lab image: ``{"nginx": "1.22.1", ...}``."""
    c = c or client()
    ref = lab_image()
    img = get(c, ref)
    if img is None:
        raise PrerequisiteError(f"docker runtime: image {ref} is missing; run: trustlab images build")
    return image_versions_of(c, img)


def image_versions_of(c: Any, img: Any) -> dict[str, str]:
    """The versions label of image *img*; for an image built by hand (``docker build labs/docker``,
    no labels) the versions are read inside it (dpkg-query in a container without network)."""
    label = (img.labels or {}).get(LABEL_VERSIONS)
    if label:
        return dict(json.loads(label))
    return versions_from_packages(dpkg_versions(c, img.id))


def dpkg_versions(c: Any, image_id: str) -> dict[str, str]:
    """``{package: Debian version}`` of the recorded packages, read by dpkg-query inside the image."""
    out = c.containers.run(
        image_id,
        ["dpkg-query", "-W", "-f=${Package} ${Version}\n", *recorded_packages()],
        remove=True,
        network_mode="none",
    ).decode()
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def versions_from_packages(pkgs: dict[str, str]) -> dict[str, str]:
    """Each kind's Debian package and OpenSSL as upstream versions: ``{"nginx": "1.22.1", ..., "openssl": ...}``."""
    from harness.proxies import driver, kinds

    out = {k.value: upstream(pkgs.get(driver(k).image_package, "")) for k in kinds() if driver(k).image_package}
    return {**out, "openssl": upstream(pkgs.get("libssl3", ""))}


def image_proxies(c: Any | None = None, ref: str | None = None) -> list[dict[str, str]]:
    """The installations the lab image (or *ref*) carries (its ``trustlab.proxies`` label; ``[]``
    for a missing image, or one built before the label existed: its Debian packages only)."""
    return carried_by(c or client(), ref or lab_image()) or []


def carried_by(c: Any, ref: str) -> list[dict[str, str]] | None:
    """The ``trustlab.proxies`` label of image *ref*, or None when there is no such image."""
    img = get(c, ref)
    if img is None:
        return None
    return list(json.loads((img.labels or {}).get(LABEL_PROXIES, "[]")))
