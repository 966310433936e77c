"""Run scenarios on a runtime and collect :class:`Results`.

A *lab* is one private temp directory (0700; keys 0600) holding the run's PKI and rendered
configs, plus whatever the runtime starts. It is removed at the end (also on errors and
Ctrl-C) unless ``keep=True``; a lab whose owner was killed is swept by the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import shutil
import signal
import stat as _stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__, lockfile
from harness import processes as _process
from harness.errors import LabError
from harness.pki import LabPKI
from harness.results import Cell, Results
from harness.runtimes.base import OnProxy, Runtime, ScenarioJob
from harness.runtimes.contract import CellEvent
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
        if not _process.alive(pid):
            stale.append(path)
    return stale


def sweep(root: Path | None = None) -> list[Path]:
    """Remove stale lab directories (in *root*, default the lab root); return what was removed."""
    removed = []
    for path in stale_labs(root):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


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


def get_runtime(name: str) -> Runtime:
    """The runtime called *name*: ``local``, ``docker`` or ``remote`` (``auto`` is resolved by
    the caller: :func:`resolve_auto`)."""
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
    of = functools.cache(available)
    _check_selectors(scenarios, of, selectors, all_versions, where, lacking)
    chosen: list[tuple[Scenario, Installation | None]] = []
    for sc in scenarios:
        picked = _picked(sc, of(sc.proxy.value), selectors, all_versions)
        chosen += [(sc, i) for i in picked] or [(sc, None)]
    count: dict[str, int] = {}
    for sc, _ in chosen:
        count[sc.id] = count.get(sc.id, 0) + 1
    return [Target(sc, inst, f"{sc.id}@{inst.version}" if count[sc.id] > 1 and inst else sc.id) for sc, inst in chosen]


def _check_selectors(
    scenarios: list[Scenario],
    of: Callable[[str], list[Installation]],
    selectors: list[Selector],
    all_versions: bool,
    where: str,
    lacking: Callable[..., str] | None,
) -> None:
    """A one-line :class:`LabError` when a selector matches no installed version of a kind the run
    has, or when the runtime lacks versions this host has that the run asks for."""
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


def _picked(
    sc: Scenario, insts: list[Installation], selectors: list[Selector], all_versions: bool
) -> list[Installation]:
    """The installations *sc* runs on, of those of its kind (*insts*, the default first)."""
    kind = sc.proxy.value
    pinned = [s for s in selectors if s.kind == kind and s.prefix]
    if pinned:
        return [i for i in insts if any(s.matches(kind, i.version) for s in pinned)]
    if all_versions:
        return insts
    if sc.reported_on and insts:
        near = nearest(sc.reported_on, [i.version for i in insts if i.version != "unknown"])
        return [next(i for i in insts if i.version == near)] if near else insts[:1]
    return insts[:1]


def run(
    scenarios: list[Scenario],
    *,
    runtime: str | Runtime = "local",
    identities: tuple[str, ...] | None = None,
    seed: int | None = None,
    shards: int | None = None,
    keep: bool = False,
    on_cell: Callable[[Cell], None] | None = None,
    on_proxy: OnProxy | None = None,
    selectors: list[Selector] | None = None,
    all_versions: bool = False,
) -> Results:
    """Run every scenario against every identity and return the results (sorted).

    *runtime* is a runtime's name, or a runtime object (``LocalRuntime(sandbox=False)``, the
    sandbox tests' and benchmark's opt-out; a :class:`~harness.runtimes.base.FakeRuntime`).
    *selectors* (``nginx@1.31``) and *all_versions* choose the proxy versions each scenario runs
    on (:func:`plan_targets`); each cell names its ``proxy_version``.
    """
    if not scenarios:
        raise LabError("no scenarios selected")
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    if keep and rt.name == "remote":
        raise LabError("--keep: the remote runtime's lab directory is on the lab service; drop --keep")
    rt.preflight({s.proxy.value for s in scenarios})
    targets = plan_targets(
        scenarios, rt.installations, selectors=selectors, all_versions=all_versions, where=rt.name, lacking=rt.lacking
    )
    job = scenario_job(scenarios, targets, identities, seed=seed, shards=shards)
    by_key = {t.key: t for t in targets}
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    cells: list[Cell] = []
    with lab_dir(keep=keep) as path:
        for ev in rt.run(job, lab_dir=path, on_proxy=on_proxy):
            cell = _cell(by_key[ev.key], ev)
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    order = {s.id: i for i, s in enumerate(scenarios)}
    ident_order = {i: n for n, i in enumerate(ALL_IDENTITY_IDS)}
    cells.sort(key=lambda c: (order[c.scenario], _version_key(c.proxy_version), ident_order[c.identity]))
    if len(cells) != job.cell_count:
        raise LabError(f"lab returned {len(cells)} cells, expected {job.cell_count}")
    return Results(meta=_meta(rt, targets, started, time.perf_counter() - t0), cells=cells)


def scenario_job(
    scenarios: list[Scenario],
    targets: list[Target],
    identities: tuple[str, ...] | None,
    *,
    seed: int | None = None,
    shards: int | None = None,
) -> ScenarioJob:
    """The job that runs *targets* against *identities*: an explicit list applies to every
    scenario; by default each scenario also runs the optional identities it lists in
    [expected] (legit-deep). The runtime knows a proxy process by its target's key."""
    optional = {t.key: t.scenario.optional_identities for t in targets if t.scenario.optional_identities}
    # Minted even when an explicit identity list does not run them: a scenario's config may
    # name their files (the proxy's client certificate, CRLs).
    wanted = tuple(dict.fromkeys(i for s in scenarios for i in s.optional_identities))
    backends = backends_of(scenarios)
    return ScenarioJob(
        scenarios=tuple(
            t.scenario if t.key == t.scenario.id else dataclasses.replace(t.scenario, id=t.key) for t in targets
        ),
        identities=identities or IDENTITY_IDS,
        mint=lambda ip: LabPKI.mint(backend_ip=ip, optional=wanted, backends=backends),
        extra={} if identities else optional,
        installations={t.key: t.installation for t in targets if t.installation is not None},
        seed=seed,
        shards=shards,
    )


def _cell(target: Target, ev: CellEvent) -> Cell:
    """The result cell of *ev*, with what its target expects and which installation answered."""
    sc, inst = target.scenario, target.installation
    return Cell(
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


def _meta(rt: Runtime, targets: list[Target], started: dt.datetime, took: float) -> dict[str, Any]:
    facts = rt.facts()
    return {
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
        "duration_s": round(took, 3),
        # The seat's lab address (IP targets and the ip-san identity name it): fixed on the
        # local runtime, the first lab network's .10 on the docker runtime.
        **facts,
        "backend_ip": facts.get("backend_ip") or LOCAL_LAB_IP,
    }


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
        from harness.runtimes import images  # type: ignore[attr-defined]
    except ImportError:
        return "local", "the docker runtime is not part of this build"
    try:
        ready, why = images.docker_ready()
    except Exception as exc:  # noqa: BLE001 - any docker failure means: use local
        return "local", f"docker unavailable: {exc}"
    return ("docker", why) if ready else ("local", why)
