"""Run scenarios on a runtime and collect :class:`Results`.

A *lab* is one private temp directory (0700; keys 0600) holding the run's PKI and rendered
configs, plus whatever the runtime starts. It is removed at the end (also on errors and
Ctrl-C) unless ``keep=True``; a lab whose owner was killed is swept by the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import stat as _stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from harness import __version__, _process
from harness.errors import LabError
from harness.pki import LabPKI
from harness.results import Cell, Results
from harness.runtimes.contract import CellEvent, ProxyEvent
from harness.scenarios import Scenario, backends_of
from harness.vocab import ALL_IDENTITY_IDS, IDENTITY_IDS, LOCAL_LAB_IP

LAB_PREFIX = "trustlab-"
OWNER_FILE = "owner.pid"


def lab_root() -> Path:
    """Where labs are created: ``$TRUSTLAB_TMPDIR``, else the system temp directory."""
    chosen = os.environ.get("TRUSTLAB_TMPDIR")
    root = Path(chosen or tempfile.gettempdir())
    if chosen and not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise LabError(f"TRUSTLAB_TMPDIR={chosen}: {what}; create the directory or unset TRUSTLAB_TMPDIR")
    return root


def stale_labs(root: Path | None = None) -> list[Path]:
    """Lab directories of this user whose owning process is gone (left by a killed run).

    Only the caller's own directories count: anyone can create ``trustlab-*`` in a shared /tmp."""
    stale = []
    for path in (root or lab_root()).glob(f"{LAB_PREFIX}*"):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not _stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue
        owner = path / OWNER_FILE
        try:
            pid = int(owner.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            if path.is_dir() and time.time() - path.stat().st_mtime > 60:
                stale.append(path)
            continue
        if not _alive(pid):
            stale.append(path)
    return stale


def sweep(root: Path | None = None) -> list[Path]:
    """Remove stale lab directories (in *root*, default the lab root); return what was removed."""
    removed = []
    for path in stale_labs(root):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    return _process.alive(pid)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a short critical section; a pending one arrives right after.

    Creating and removing a lab directory must not stop halfway: an interrupt inside
    ``rmtree`` left a partly removed lab behind."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks, nothing to hold
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def lab_dir(*, keep: bool = False, root: Path | None = None) -> Iterator[Path]:
    """A private (0700) lab directory in *root* (default: the lab root), removed on exit (also
    on Ctrl-C) unless *keep*."""
    root = root or lab_root()
    sweep(root)
    check_space(root)
    with _signals_held():
        try:
            path = Path(tempfile.mkdtemp(prefix=LAB_PREFIX, dir=root))
        except OSError as exc:
            raise LabError(f"{root}: cannot create a lab directory there ({exc.strerror}); "
                           "set TRUSTLAB_TMPDIR to a writable directory") from None
        os.chmod(path, 0o700)
        try:
            (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise LabError(f"{root}: cannot write a lab there ({exc.strerror}); "
                           "free some space or set TRUSTLAB_TMPDIR to another directory") from None
        # SIGTERM should unwind like Ctrl-C so the finally below runs.
        previous = signal.getsignal(signal.SIGTERM)
        installed = False
        try:
            signal.signal(signal.SIGTERM, _raise_interrupt)
            installed = True
        except ValueError:  # not the main thread
            pass
    try:
        yield path
    finally:
        with _signals_held():
            if installed:
                signal.signal(signal.SIGTERM, previous)
            if keep:
                (path / OWNER_FILE).unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)


#: Free space a lab needs in its root: PKI, configs and logs of a full matrix take under 2 MB.
MIN_FREE_BYTES = 8_000_000


def check_space(root: Path) -> None:
    """Refuse to start a lab in a (nearly) full directory: its proxies could not write their
    logs, and every cell would be an ``error`` that blames the proxies."""
    try:
        st = os.statvfs(root)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES or (st.f_files and st.f_favail < 100):
        raise LabError(f"{root}: the lab root is full ({free // 1000} kB free, a lab needs "
                       f"{MIN_FREE_BYTES // 1_000_000} MB); free some space or set TRUSTLAB_TMPDIR to "
                       "another directory")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def get_runtime(name: str) -> Any:
    """The runtime object for ``local`` or ``docker`` (``auto`` is resolved by the caller)."""
    if name == "local":
        from harness.runtimes.local import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from harness.runtimes.docker import DockerRuntime

        return DockerRuntime()
    raise LabError(f"--runtime: {name!r} is unknown; choose local, docker or auto")


def run(
    scenarios: list[Scenario],
    *,
    runtime: str | Any = "local",
    identities: tuple[str, ...] | None = None,
    seed: int | None = None,
    shards: int | None = None,
    keep: bool = False,
    on_cell: Callable[[Cell], None] | None = None,
    on_proxy: Callable[[ProxyEvent], None] | None = None,
) -> Results:
    """Run every scenario against every identity and return the results (sorted).

    *runtime* is a runtime's name, or a runtime object (``LocalRuntime(sandbox=False)``, the
    sandbox tests' and benchmark's opt-out).
    """
    if not scenarios:
        raise LabError("no scenarios selected")
    # An explicit identity list applies to every scenario; by default each scenario also runs
    # the optional identities it lists in [expected] (legit-deep).
    extra = {} if identities else {s.id: s.optional_identities for s in scenarios if s.optional_identities}
    identities = identities or IDENTITY_IDS
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    rt.preflight({s.proxy.value for s in scenarios})
    by_id = {s.id: s for s in scenarios}
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    cells: list[Cell] = []
    with lab_dir(keep=keep) as path:
        # Minted even when an explicit identity list does not run them: a scenario's config may
        # name their files (the proxy's client certificate, CRLs).
        wanted = tuple(dict.fromkeys(i for s in scenarios for i in s.optional_identities))
        pki = LabPKI.mint(backend_ip=LOCAL_LAB_IP, optional=wanted, backends=backends_of(scenarios))
        kw: dict[str, Any] = {"extra": extra} if extra else {}
        events: Iterable[CellEvent] = rt.run(
            scenarios, lab_dir=path, pki=pki, identities=identities, seed=seed, shards=shards,
            on_proxy=on_proxy, **kw,
        )
        for ev in events:
            sc = by_id[ev.key]
            cell = Cell(
                scenario=sc.id,
                proxy=sc.proxy.value,
                variant=sc.variant,
                identity=ev.identity,
                outcome=ev.outcome,
                expected=sc.expected.get(ev.identity),
                status=ev.status,
                reason=ev.reason,
                sni=ev.sni,
                tls=ev.tls,
                duration_s=ev.duration_s,
                reuse=ev.reuse,
                client_cert=ev.client_cert,
                primed=ev.primed,
            )
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    order = {s.id: i for i, s in enumerate(scenarios)}
    ident_order = {i: n for n, i in enumerate(ALL_IDENTITY_IDS)}
    cells.sort(key=lambda c: (order[c.scenario], ident_order[c.identity]))
    expected_count = len(scenarios) * len(identities) + sum(len(v) for v in extra.values())
    if len(cells) != expected_count:
        raise LabError(f"lab returned {len(cells)} cells, expected {expected_count}")
    meta = {
        "trustlab": __version__,
        "runtime": rt.name,
        # The runtime's own OpenSSL wins: the docker image carries its own libssl.
        "versions": {"openssl": _openssl_version(), **rt.versions()},
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 3),
        # The seat's lab address (IP targets and the ip-san identity name it): fixed on the
        # local runtime, the lab network's .10 on the docker runtime.
        "backend_ip": getattr(rt, "backend_ip", None) or pki.backend_ip,
    }
    return Results(meta=meta, cells=cells)


def _openssl_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return ""
    parts = out.split()
    return parts[1] if len(parts) > 1 else out.strip()


def resolve_auto() -> tuple[str, str]:
    """Pick ``docker`` when a daemon answers and the lab images are built, else ``local``."""
    try:
        from harness import images  # type: ignore[attr-defined]
    except ImportError:
        return "local", "the docker runtime is not part of this build"
    try:
        ready, why = images.docker_ready()
    except Exception as exc:  # noqa: BLE001 - any docker failure means: use local
        return "local", f"docker unavailable: {exc}"
    return ("docker", why) if ready else ("local", why)
