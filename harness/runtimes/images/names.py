"""What the images are called, the labels they carry, and the small helpers every step shares."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable

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
#: The classroom image (JupyterLab + trustlab on top of the lab image, harness/course/classroom.py).
CLASSROOM_REPO = "trustlab/classroom"
LABEL_KIND = "trustlab.image"
LABEL_INPUTS = "trustlab.inputs"
LABEL_VERSIONS = "trustlab.versions"
LABEL_PACKAGES = "trustlab.packages"
#: Every proxy installation the image carries: ``[{"kind", "version", "tls", "from", "binary"}]``.
LABEL_PROXIES = "trustlab.proxies"

Progress = Callable[[str], None]


def lab_image() -> str:
    """The image the docker runtime starts: ``TRUSTLAB_IMAGE`` when set, else ``trustlab/lab:current``.

    CI sets it to run the matrix on the Dockerfile-built image next to the offline one."""
    return os.environ.get("TRUSTLAB_IMAGE") or LAB_IMAGE


def versions_image(lab: str | None = None) -> str:
    """The image with every installation (:func:`~harness.runtimes.images.build` ``versions=True``):
    ``TRUSTLAB_VERSIONS_IMAGE`` when set, else the lab image's repository plus ``-versions``, same
    tag (``trustlab/lab-versions:current``; ``TRUSTLAB_IMAGE=x/lab:test`` gives ``x/lab-versions:test``)."""
    env = os.environ.get("TRUSTLAB_VERSIONS_IMAGE")
    if env and lab is None:
        return env
    repo, _, tag = (lab or lab_image()).rpartition(":")
    return f"{repo}{VERSIONS_SUFFIX}:{tag}"


def loaded_tag(image: str) -> str:
    """``trustlab/lab:current`` -> ``trustlab/lab:loaded``: the mark `images load` leaves."""
    return f"{image.rpartition(':')[0]}:loaded"


def version_tag(versions: dict[str, str]) -> str:
    """The lab image's versioned tag: ``nginx1.22.1-apache2.4.71-haproxy2.6.12``."""
    return f"nginx{versions['nginx']}-apache{versions['apache']}-haproxy{versions['haproxy']}"


def upstream(debian_version: str) -> str:
    """``1.22.1-9+deb12u11`` -> ``1.22.1`` (no epoch, no Debian revision)."""
    v = debian_version.split(":", 1)[-1]
    return v.rsplit("-", 1)[0] if "-" in v else v


def digest(*parts: str | bytes) -> str:
    """SHA-256 of *parts*, each ended by a NUL (the inputs hash of an image)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()


def stderr_progress() -> Progress:
    """A :data:`Progress` that writes ``[images  12.3s] step`` lines on stderr."""
    t0 = time.perf_counter()

    def show(msg: str) -> None:
        sys.stderr.write(f"[images {time.perf_counter() - t0:6.1f}s] {msg}\n")
        sys.stderr.flush()

    return show
