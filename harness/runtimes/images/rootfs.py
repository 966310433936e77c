"""The offline base: a minimal Debian root fs made by ``mmdebstrap`` from the host's own apt
sources and ``docker import``-ed as ``trustlab/base:<inputs>`` (or, for CI, as the Dockerfile's
``debian:bookworm-slim``). Builds run in a private scratch directory that is never removed while
it still holds a mount, under a process group stopped as a whole on an interrupt."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import LabError, PrerequisiteError
from harness.runtimes.images.daemon import client, get
from harness.runtimes.images.names import (
    BASE_REPO,
    LABEL_INPUTS,
    LABEL_KIND,
    LABEL_PACKAGES,
    Progress,
    digest,
    stderr_progress,
)
from harness.runtimes.images.plan import dockerfile_base, packages, recorded_packages

SUITE_FALLBACK = "bookworm"

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
    # ICU (36 MB, its data file alone 31 MB) and libxml2 (1.7 MB): in the whole image only
    # Apache's mod_proxy_html and mod_xml2enc link them (ldd over every file), and no lab loads
    # those two (labs/apache/httpd.conf.tmpl, harness/configs/apache.py MODULES): they go too.
    '"$1"/usr/lib/*-linux-gnu/libicu* "$1"/usr/lib/*-linux-gnu/libxml2.so* '
    '"$1"/usr/lib/apache2/modules/mod_proxy_html.so "$1"/usr/lib/apache2/modules/mod_xml2enc.so',
    # Traffic Server's log and cache tools (3.4 MB): the lab runs traffic_server alone.
    '"$1"/usr/bin/traffic_logcat "$1"/usr/bin/traffic_logstats "$1"/usr/bin/traffic_top '
    '"$1"/usr/bin/traffic_cache_tool "$1"/usr/bin/traffic_via',
    # Python's own test package and help() texts (2.2 MB): the seat and worker import neither.
    '"$1"/usr/lib/python3*/test "$1"/usr/lib/python3*/pydoc_data',
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


def base_inputs() -> str:
    """Hash of what the offline base image is made of."""
    suite = host_release()
    sources = [f"{p}\n{p.read_text()}" for p in apt_sources(suite)]
    # The packages whose versions the base records (each registered proxy's) are an input too: a
    # base built before a proxy was registered would carry its package but not its version.
    recorded = " ".join(recorded_packages())
    return digest("base-v1", suite, platform.machine(), " ".join(packages()), recorded, *MMDEBSTRAP_ARGS, *sources)


def ensure_base(
    c: Any, base_hash: str, say: Progress, steps: dict[str, float], *, force: bool
) -> tuple[str, dict[str, str]]:
    """The offline base image for *base_hash* (``trustlab/base:<hash>``) and its packages' versions:
    the one on the daemon when its inputs match, else a new root fs from mmdebstrap, imported."""
    ref = f"{BASE_REPO}:{base_hash[:12]}"
    img = get(c, ref)
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
    with scratch_dir() as tmp:
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
    say = progress or stderr_progress()
    c = client(timeout=600)
    name = dockerfile_base()
    existing = get(c, name)
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
    with scratch_dir() as tmp:
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
def scratch_dir() -> Iterator[str]:
    """A private build directory, removed afterwards without ever descending into a mount.

    mmdebstrap (root mode) mounts /proc, /sys and /dev inside its chroot here. Interrupted at the
    wrong moment it can exit with them still mounted; a plain rmtree would then walk into the
    host's /proc and /dev. Mounts are detached first; a directory that still holds one is left."""
    tmp = tempfile.mkdtemp(prefix="trustlab-image-", dir=_scratch())
    try:
        yield tmp
    finally:
        unmount_below(Path(tmp))
        if mounts_below(Path(tmp)):
            raise LabError(f"images build: {tmp} still holds mounts; unmount them, then remove it")
        shutil.rmtree(tmp, ignore_errors=True)


def mounts_below(root: Path) -> list[str]:
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


def unmount_below(root: Path) -> None:
    for point in mounts_below(root):
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
    query = " ".join(recorded_packages())
    cmd = [
        "mmdebstrap",
        *args,
        *hooks,
        f"--include={include}",
        *(f"--aptopt={opt}" for opt in apt_proxy()),
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
            stop_group(proc)
        proc.stdout.close()
    if proc.wait() != 0:
        raise LabError(f"images build: mmdebstrap failed (exit {proc.returncode}): {' | '.join(tail[-5:])}")


def stop_group(proc: subprocess.Popen[str]) -> None:
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


def apt_proxy() -> list[str]:
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
