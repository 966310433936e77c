"""Run scenarios on a runtime and collect :class:`Results`.

A *lab* is one private temp directory (0700; keys 0600) holding the run's PKI and rendered
configs, plus whatever the runtime starts. It is removed at the end (also on errors and
Ctrl-C) unless ``keep=True``; a lab whose owner was killed is swept by the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import stat as _stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__, _process, lockfile
from harness.errors import LabError
from harness.pki import LabPKI
from harness.results import Cell, Results
from harness.runtimes.contract import CellEvent, ProxyEvent
from harness.scenarios import Scenario, backends_of
from harness.versions import Selector, nearest
from harness.vocab import ALL_IDENTITY_IDS, IDENTITY_IDS, LOCAL_LAB_IP

if TYPE_CHECKING:
    from harness.proxies import Installation

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
            raise LabError(
                f"{root}: cannot create a lab directory there ({exc.strerror}); "
                "set TRUSTLAB_TMPDIR to a writable directory"
            ) from None
        os.chmod(path, 0o700)
        try:
            (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise LabError(
                f"{root}: cannot write a lab there ({exc.strerror}); "
                "free some space or set TRUSTLAB_TMPDIR to another directory"
            ) from None
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
        raise LabError(
            f"{root}: the lab root is full ({free // 1000} kB free, a lab needs "
            f"{MIN_FREE_BYTES // 1_000_000} MB); free some space or set TRUSTLAB_TMPDIR to "
            "another directory"
        )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def get_runtime(name: str) -> Any:
    """The runtime object for ``local``, ``docker`` or ``remote`` (the classroom's lab service;
    ``auto`` is resolved by the caller)."""
    if name == "remote":
        from harness.runtimes.remote import RemoteRuntime

        return RemoteRuntime()
    if name == "local":
        from harness.runtimes.local import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from harness.runtimes.docker import DockerRuntime

        return DockerRuntime()
    raise LabError(f"--runtime: {name!r} is unknown; choose local, docker, remote or auto")


@dataclass(frozen=True)
class Target:
    """One scenario on one installation of its proxy: one proxy process of a lab.

    *key* names it to the runtime: the scenario id, or ``scenario@version`` when the run holds
    the scenario on more than one version."""

    scenario: Scenario
    installation: Installation | None
    key: str

    @property
    def version(self) -> str | None:
        return self.installation.version if self.installation else None


def side(results: Results, selector: Selector) -> tuple[str, list[dict[str, Any]]]:
    """``("nginx@1.31.3", cells)``: the cells (JSON shape) one ``KIND@PREFIX`` selected from
    *results*, for :func:`harness.versions.diff`; a prefix that matched two versions is a
    :class:`LabError`."""
    cells = [c for c in results.cells if c.proxy_version and selector.matches(c.proxy, c.proxy_version)]
    found = sorted({str(c.proxy_version) for c in cells})
    if len(found) > 1:
        raise LabError(f"{selector}: matches {', '.join(found)}; give a longer version prefix")
    return (f"{selector.kind}@{found[0]}" if found else str(selector)), [c.to_dict() for c in cells]


def installations_of(rt: Any, kind: str) -> list[Installation]:
    """What *rt* can run of *kind*, its default first (the runtime's ``installations``, else the
    driver's)."""
    own = getattr(rt, "installations", None)
    if own is not None:
        return list(own(kind))
    from harness.proxies import driver

    return driver(kind).installations()


def plan_targets(
    scenarios: list[Scenario],
    available: Callable[[str], list[Installation]],
    *,
    selectors: list[Selector] | None = None,
    all_versions: bool = False,
    where: str = "",
    lacking: Callable[..., str] | None = None,
) -> list[Target]:
    """Which installation(s) each scenario runs on.

    * ``all_versions``: every installation of its proxy (those matching a ``KIND@PREFIX``
      selector, when one names the kind);
    * a ``KIND@PREFIX`` selector: the installations whose version starts with the prefix;
    * otherwise the default installation, except a reported case with ``reported_on``: the
      installed version nearest to the one it was reported on.

    A selector that matches no installed version is a :class:`LabError` naming what is installed.
    *lacking* (the docker runtime's :meth:`~harness.runtimes.docker.DockerRuntime.lacking`):
    ``lacking(kinds, matches)`` is one line when this host has versions the runtime cannot run yet
    (its versions image is missing): a selector or ``all_versions`` that asks for one fails with it.
    """
    selectors = selectors or []
    cache: dict[str, list[Installation]] = {}

    def of(kind: str) -> list[Installation]:
        if kind not in cache:
            cache[kind] = available(kind)
        return cache[kind]

    kinds_run = {s.proxy.value for s in scenarios}
    for sel in selectors:
        wanted = sel.prefix and sel.kind in kinds_run
        if wanted and not any(sel.matches(sel.kind, i.version) for i in of(sel.kind)):
            line = lacking([sel.kind], sel.matches) if lacking else ""
            if line:
                raise LabError(line)
            have = ", ".join(i.version for i in of(sel.kind)) or "none"
            on = f" on the {where} runtime" if where else ""
            raise LabError(
                f"--proxy: {sel} matches no installed {sel.kind}{on} (installed: {have}); "
                "see trustlab doctor for what is installed and how to add versions"
            )
    if all_versions and lacking:
        line = lacking(sorted(kinds_run - {s.kind for s in selectors if s.prefix}))
        if line:
            raise LabError(line)
    chosen: list[tuple[Scenario, Installation | None]] = []
    for sc in scenarios:
        kind = sc.proxy.value
        insts = of(kind)
        pinned = [s for s in selectors if s.kind == kind and s.prefix]
        if pinned:
            picked = [i for i in insts if any(s.matches(kind, i.version) for s in pinned)]
        elif all_versions:
            picked = insts
        elif sc.reported_on and insts:
            near = nearest(sc.reported_on, [i.version for i in insts if i.version != "unknown"])
            picked = [next(i for i in insts if i.version == near)] if near else insts[:1]
        else:
            picked = insts[:1]
        chosen += [(sc, i) for i in picked] or [(sc, None)]
    count: dict[str, int] = {}
    for sc, _ in chosen:
        count[sc.id] = count.get(sc.id, 0) + 1
    return [Target(sc, inst, f"{sc.id}@{inst.version}" if count[sc.id] > 1 and inst else sc.id) for sc, inst in chosen]


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
    selectors: list[Selector] | None = None,
    all_versions: bool = False,
) -> Results:
    """Run every scenario against every identity and return the results (sorted).

    *runtime* is a runtime's name, or a runtime object (``LocalRuntime(sandbox=False)``, the
    sandbox tests' and benchmark's opt-out). *selectors* (``nginx@1.31``) and *all_versions*
    choose the proxy versions each scenario runs on (:func:`plan_targets`); each cell names
    its ``proxy_version``.
    """
    if not scenarios:
        raise LabError("no scenarios selected")
    if runtime == "remote":
        return _run_remote(
            scenarios, identities=identities, selectors=selectors, all_versions=all_versions, keep=keep, on_cell=on_cell
        )
    # An explicit identity list applies to every scenario; by default each scenario also runs
    # the optional identities it lists in [expected] (legit-deep).
    identities_given = bool(identities)
    identities = identities or IDENTITY_IDS
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    rt.preflight({s.proxy.value for s in scenarios})
    targets = plan_targets(
        scenarios,
        lambda kind: installations_of(rt, kind),
        selectors=selectors,
        all_versions=all_versions,
        where=getattr(rt, "name", ""),
        lacking=getattr(rt, "lacking", None),
    )
    by_key = {t.key: t for t in targets}
    extra = (
        {}
        if identities_given
        else {t.key: t.scenario.optional_identities for t in targets if t.scenario.optional_identities}
    )
    # The runtime knows a proxy process by its key (``scenario@version`` on a versioned run).
    keyed = [t.scenario if t.key == t.scenario.id else dataclasses.replace(t.scenario, id=t.key) for t in targets]
    installs = {t.key: t.installation for t in targets if t.installation is not None}
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    cells: list[Cell] = []
    with lab_dir(keep=keep) as path:
        # Minted even when an explicit identity list does not run them: a scenario's config may
        # name their files (the proxy's client certificate, CRLs).
        wanted = tuple(dict.fromkeys(i for s in scenarios for i in s.optional_identities))
        pki = LabPKI.mint(backend_ip=LOCAL_LAB_IP, optional=wanted, backends=backends_of(scenarios))
        kw: dict[str, Any] = {"extra": extra} if extra else {}
        if installs and getattr(rt, "runs_installations", False):
            kw["installations"] = installs
        events: Iterable[CellEvent] = rt.run(
            keyed, lab_dir=path, pki=pki, identities=identities, seed=seed, shards=shards, on_proxy=on_proxy, **kw
        )
        for ev in events:
            target = by_key[ev.key]
            sc, inst = target.scenario, target.installation
            cell = Cell(
                scenario=sc.id,
                proxy=sc.proxy.value,
                variant=sc.variant,
                identity=ev.identity,
                outcome=ev.outcome,
                expected=sc.expected_for(target.version).get(ev.identity),
                status=ev.status,
                reason=ev.reason,
                sni=ev.sni,
                tls=ev.tls,
                duration_s=ev.duration_s,
                reuse=ev.reuse,
                client_cert=ev.client_cert,
                primed=ev.primed,
                proxy_version=target.version,
                tls_library=(inst.tls or None) if inst else None,
            )
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    order = {s.id: i for i, s in enumerate(scenarios)}
    ident_order = {i: n for n, i in enumerate(ALL_IDENTITY_IDS)}
    cells.sort(key=lambda c: (order[c.scenario], _version_key(c.proxy_version), ident_order[c.identity]))
    expected_count = len(targets) * len(identities) + sum(len(v) for v in extra.values())
    if len(cells) != expected_count:
        raise LabError(f"lab returned {len(cells)} cells, expected {expected_count}")
    meta = {
        "trustlab": __version__,
        "runtime": rt.name,
        # The runtime's own OpenSSL wins: the docker image carries its own libssl.
        "versions": {"openssl": _openssl_version(), **rt.versions()},
        # Versions as an axis (issue 15): every installation the cells ran on.
        "proxy_versions": [
            {"proxy": i.kind.value, "version": i.version, "source": i.source, "tls_library": i.tls}
            for i in dict.fromkeys(t.installation for t in targets if t.installation is not None)
        ],
        # The locked Python dependency set the lab ran with (requirements.lock; None outside one).
        "lock": lockfile.digest(),
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 3),
        # The seat's lab address (IP targets and the ip-san identity name it): fixed on the
        # local runtime, the lab network's .10 on the docker runtime.
        "backend_ip": getattr(rt, "backend_ip", None) or pki.backend_ip,
    }
    return Results(meta=meta, cells=cells)


def _run_remote(
    scenarios: list[Scenario],
    *,
    identities: tuple[str, ...] | None,
    selectors: list[Selector] | None,
    all_versions: bool,
    keep: bool,
    on_cell: Callable[[Cell], None] | None,
) -> Results:
    """:func:`run` on the classroom's lab service: built-in scenario ids and identity ids go
    there (data, never a scenario file); the cells come back."""
    from harness import scenarios as _scenarios
    from harness.runtimes import remote

    if selectors or all_versions:
        raise LabError(
            "the remote runtime runs each scenario on the lab service's default proxy version; "
            "drop --proxy KIND@VERSION / --all-versions"
        )
    if keep:
        raise LabError("--keep: the remote runtime's lab directory is on the lab service; drop --keep")
    known = _scenarios.builtin()
    for sc in scenarios:
        if known.get(sc.id) is None or sc.path != known[sc.id].path:
            raise LabError(
                f"{sc.id}: the remote runtime runs built-in scenarios only (trustlab matrix --list), "
                "not a scenario file"
            )
    results = remote.run([s.id for s in scenarios], identities=identities)
    if on_cell:
        for cell in results.cells:  # all at once: the service answers when the run is over
            on_cell(cell)
    return results


def _version_key(version: str | None) -> tuple[int, ...]:
    from harness.versions import parse

    try:
        return parse(version) if version else ()
    except ValueError:
        return ()


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
