"""The one door of every runtime: a job in, cell events out.

A runtime (:mod:`~harness.runtimes.local` namespaces, :mod:`~harness.runtimes.docker`
containers, the classroom's :mod:`~harness.runtimes.remote` lab service, the tests'
:class:`FakeRuntime`) implements :class:`Runtime`. Its callers build a :data:`Job`:

* :class:`ScenarioJob`: built-in or file scenarios, each against its identities (the matrix,
  notebooks, conformance, ``trustlab up``);
* :class:`ConfigJob`: configs someone else adapted, with the requests that reach each upstream
  (``trustlab check``, challenge grading, ``trustlab up --config``);

and either **run** it (:meth:`Runtime.run`: one :class:`~harness.runtimes.contract.CellEvent`
per cell, in completion order) or **hold** it (:meth:`Runtime.hold`: ``trustlab up``, the lab
serving until the context exits). A scenario job carries how to mint its PKI (:attr:`ScenarioJob.mint`),
not a PKI: the runtime mints it once per lab, for the address its seat has there.

Every runtime's lab worker writes the same events (:mod:`~harness.runtimes.contract`);
:class:`EventReader` is the one place they are turned into cells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from harness.errors import LabError
from harness.runtimes.contract import CellEvent, CellSpec, DoneEvent, FatalEvent, ProxyEvent, dump_event, load_event
from harness.vocab import LOCAL_LAB_IP

if TYPE_CHECKING:
    from harness.pki import LabPKI
    from harness.proxies.base import Installation
    from harness.results import Cell, Results
    from harness.scenarios import Scenario

#: Called with each proxy's start event (``started``, ``message``, ``start_s``).
OnProxy = Callable[[ProxyEvent], None]


@dataclass(frozen=True)
class ScenarioJob:
    """Rendered scenarios against identities.

    A scenario's id is its key in the lab (``scenario@version`` when a run holds it on more than
    one version: :func:`harness.runner.plan_targets`)."""

    scenarios: tuple[Scenario, ...]
    #: The identities every scenario runs, and those a scenario runs besides (by key: legit-deep).
    identities: tuple[str, ...]
    #: The lab's PKI for a seat at the given address; a runtime calls it once per lab.
    mint: Callable[[str], LabPKI]
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The installation that runs a scenario (by key); absent: its kind's default.
    installations: Mapping[str, Installation] = field(default_factory=dict)
    #: Shuffle the cells with this seed (the reliability tests' random orders).
    seed: int | None = None
    #: Labs side by side (default: one per core).
    shards: int | None = None
    #: ``trustlab up``: the identity the held lab's seat presents.
    hold: str | None = None

    def identities_of(self, key: str) -> tuple[str, ...]:
        """The identities the scenario keyed *key* runs against."""
        return tuple(self.identities) + tuple(self.extra.get(key, ()))

    @property
    def cell_count(self) -> int:
        return sum(len(self.identities_of(s.id)) for s in self.scenarios)


@dataclass(frozen=True)
class PreparedProxy:
    """A proxy config rendered by someone else (``trustlab check``), ready to start."""

    key: str
    kind: str
    run_dir: Path
    config: Path
    listen_port: int
    #: Which installation starts it (``check --proxy-version``); ``None``: the kind's default.
    inst: Installation | None = None


@dataclass(frozen=True)
class ConfigJob:
    """Adapted configs in one lab, with the requests (cells) sent through them.

    Every path lies under the lab directory; the configs name them as the proxies see them
    (:meth:`Runtime.lab_path`). *hosts* maps names to lab addresses, *addresses* are put on the
    lab's loopback, one seat listens per port in *seat_ports*. A cell names its proxy (``key``)
    and ``identity`` and may carry ``port``, ``host``, ``path``, ``tls`` and a ``label`` echoed
    back. A proxy that refuses to start yields no cells: its start event says why."""

    proxies: tuple[PreparedProxy, ...]
    cells: tuple[CellSpec, ...]
    pki_dir: Path
    hosts: Mapping[str, str] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    seat_ports: tuple[int, ...] = ()
    backend_ip: str = LOCAL_LAB_IP
    #: ``trustlab up --config``: the identity the held lab's seat presents.
    hold: str | None = None


#: What a runtime is handed.
Job = ScenarioJob | ConfigJob


@dataclass(frozen=True)
class Held:
    """Where a held lab (``trustlab up``) answers, while :meth:`Runtime.hold`'s context lasts."""

    #: The proxy's config and error log (as the host sees them; docker: in the container).
    config: str
    log: str
    #: The seat's control socket (``present ID``, ``log``).
    control: str
    #: Local: the unix socket relaying to the proxy's listener.
    socket: str = ""
    #: Docker: the worker container, where the proxy listens on *port* of its loopback.
    container: str = ""
    port: int = 0
    lab: str = ""
    #: Blocks until the lab ends by itself (its worker exits); ``trustlab down`` ends the holder.
    wait: Callable[[], object] = field(default=lambda: None, compare=False, repr=False)


@runtime_checkable
class Runtime(Protocol):
    """What runs labs: ``local``, ``docker``, ``remote``, the tests' :class:`FakeRuntime`."""

    name: str

    def preflight(self, kinds: set[str]) -> None:
        """A one-line :class:`~harness.errors.PrerequisiteError` when *kinds* cannot run here."""

    def versions(self) -> dict[str, str]:
        """Each kind's default version here (and ``openssl`` where the runtime has its own)."""

    def installations(self, kind: str) -> list[Installation]:
        """What this runtime can run of *kind*, its default first."""

    def lacking(self, kinds: Iterable[str], matches: Callable[[str, str], bool] = ...) -> str:
        """One line when versions of *kinds* a run asks for exist but this runtime cannot run them
        (``""``: nothing lacking)."""

    def lab_path(self, lab_dir: Path, path: Path) -> Path:
        """Where the proxies see *path*, a file under *lab_dir*."""

    def run(self, job: Job, *, lab_dir: Path, on_proxy: OnProxy | None = None) -> Iterator[CellEvent]:
        """Run *job* in *lab_dir*; one event per cell, in completion order."""

    def hold(self, job: Job, *, lab_dir: Path) -> contextlib.AbstractContextManager[Held]:
        """Start *job*'s one proxy and keep its lab serving until the context exits."""

    def facts(self) -> dict[str, Any]:
        """What the last run adds to its results' ``meta`` (``backend_ip``: the seat's address)."""

    def stop(self) -> None:
        """Stop every lab this runtime runs now (Ctrl-C, from another thread); no new one starts."""


class EventReader:
    """Turns a lab worker's event lines into cell events: the one reader every runtime uses.

    A proxy that never listened becomes one ``error`` cell per identity it would have run
    (*identities* by key); *on_proxy* sees every start event; ``done`` ends the reading; a fatal
    event is a :class:`~harness.errors.LabError` naming *where* (``local``, ``docker``)."""

    def __init__(
        self, identities: Callable[[str], Iterable[str]], on_proxy: OnProxy | None = None, *, where: str
    ) -> None:
        self.identities = identities
        self.on_proxy = on_proxy
        self.where = where
        self.done = False
        self._buffer = b""

    def line(self, line: bytes | str) -> Iterator[CellEvent]:
        """The cells one event line stands for."""
        if not line.strip():
            return
        event = load_event(line)
        if isinstance(event, ProxyEvent):
            if self.on_proxy:
                self.on_proxy(event)
            if not event.started:
                for ident in self.identities(event.key):
                    yield CellEvent.never_listened(event, ident)
        elif isinstance(event, CellEvent):
            yield event
        elif isinstance(event, DoneEvent):
            self.done = True
        elif isinstance(event, FatalEvent):
            raise LabError(f"{self.where} lab failed: {event.message}")

    def chunk(self, data: bytes) -> Iterator[CellEvent]:
        """The cells of the whole lines in *data* (a stream's next bytes); the rest waits."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if self.done:  # nothing the worker says after "done" is a cell
                return
            yield from self.line(line)

    def stream(self, chunks: Iterable[bytes]) -> Iterator[CellEvent]:
        """Every cell of *chunks* up to the worker's ``done`` (then reading stops)."""
        for data in chunks:
            yield from self.chunk(data)
            if self.done:
                return


def refuse_unstarted(event: ProxyEvent) -> None:
    """``on_proxy`` of a held lab: a proxy that did not start makes the lab no use."""
    if not event.started:
        raise LabError(f"the proxy refused to start: {event.message}")


def event_of(cell: Cell) -> CellEvent:
    """The cell event a :class:`~harness.results.Cell` was made from (its key: its scenario)."""
    return CellEvent(
        key=cell.scenario,
        identity=cell.identity,
        outcome=cell.outcome,
        status=cell.status,
        reason=cell.reason,
        sni=cell.sni,
        tls=cell.tls,
        duration_s=cell.duration_s,
        reuse=cell.reuse,
        client_cert=cell.client_cert,
        primed=cell.primed,
    )


def _digest(job: ConfigJob, lab_dir: Path, proxy: PreparedProxy) -> str:
    """*proxy*'s config as the job ran it, without the lab directory and the line naming the
    file it was adapted from: the same config adapted in another lab has the same digest."""
    lines = Path(proxy.config).read_text().replace(str(lab_dir), "{lab}").splitlines()
    text = "\n".join(line for line in lines if "trustlab check: adapted from " not in line)
    return hashlib.sha256(f"{proxy.kind}\n{text}".encode()).hexdigest()[:16]


def _cell_key(digest: str, spec: CellSpec) -> str:
    return f"{digest} {spec.identity} {spec.host}{spec.path} {spec.label}"


class Recorder:
    """Wraps a real runtime and keeps what it answers, for :class:`FakeRuntime` to replay:
    each scenario cell by (scenario, identity); each config job's start events and cells by
    the digest of the config that ran (:func:`_digest`) and the request."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.name = inner.name
        self.scenario_cells: dict[str, str] = {}
        self.config_cells: dict[str, str] = {}
        self.refusals: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:  # preflight, versions, installations ...
        return getattr(self.inner, name)

    def run(self, job: Job, *, lab_dir: Path, on_proxy: OnProxy | None = None) -> Iterator[CellEvent]:
        if isinstance(job, ScenarioJob):
            for ev in self.inner.run(job, lab_dir=lab_dir, on_proxy=on_proxy):
                self.scenario_cells[f"{ev.key} {ev.identity}"] = dump_event(ev)
                yield ev
            return
        digests = {p.key: _digest(job, lab_dir, p) for p in job.proxies}
        specs = {(c.key, c.label, c.identity): c for c in job.cells}

        def started(event: ProxyEvent) -> None:
            if not event.started:
                self.refusals[digests[event.key]] = dump_event(event)
            if on_proxy:
                on_proxy(event)

        for ev in self.inner.run(job, lab_dir=lab_dir, on_proxy=started):
            spec = specs[(ev.key, ev.label, ev.identity)]
            self.config_cells[_cell_key(digests[ev.key], spec)] = dump_event(ev)
            yield ev

    def dump(self) -> dict[str, Any]:
        """The recording as JSON data (:meth:`FakeRuntime.load` reads it)."""
        return {
            "runtime": self.name,
            "scenario_cells": dict(sorted(self.scenario_cells.items())),
            "config_cells": dict(sorted(self.config_cells.items())),
            "refusals": dict(sorted(self.refusals.items())),
        }


class FakeRuntime:
    """Replays recorded cells: runner, check, notebook helpers and graders tested without a proxy.

    It answers a scenario cell by (scenario, identity), and a config job's cell by the digest of
    the config that runs and the request (:class:`Recorder` made the recording; a config never
    recorded has no answer). A cell nobody recorded is a :class:`LabError`: a replay never invents
    an outcome. A recorded refusal replays as the proxy's start event.
    """

    name = "fake"

    def __init__(
        self,
        scenario_cells: Mapping[str, CellEvent] | None = None,
        *,
        config_cells: Mapping[str, CellEvent] | None = None,
        refusals: Mapping[str, ProxyEvent] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self.scenario_cells = dict(scenario_cells or {})
        self.config_cells = dict(config_cells or {})
        self.refusals = dict(refusals or {})
        self._versions = dict(versions or {})
        #: Every job this runtime was handed, in order (what the tests assert on).
        self.jobs: list[Job] = []
        #: Every PKI a scenario job minted (once per job: the runtime's one lab).
        self.minted: list[LabPKI] = []

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> FakeRuntime:
        """The runtime that replays a :meth:`Recorder.dump`."""

        def events(raw: Mapping[str, str]) -> dict[str, Any]:
            return {k: load_event(v) for k, v in raw.items()}

        return cls(
            events(data.get("scenario_cells", {})),
            config_cells=events(data.get("config_cells", {})),
            refusals=events(data.get("refusals", {})),
        )

    @classmethod
    def from_results(cls, results: Results) -> FakeRuntime:
        """The runtime that answers each scenario cell of *results* as it was answered there."""
        cells = {f"{c.scenario} {c.identity}": event_of(c) for c in results.cells}
        return cls(cells, versions=results.meta.get("versions") or {})

    def preflight(self, kinds: set[str]) -> None:
        return None

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def installations(self, kind: str) -> list[Installation]:
        return []

    def lacking(self, kinds: Iterable[str], matches: Callable[[str, str], bool] = lambda k, v: True) -> str:
        return ""

    def lab_path(self, lab_dir: Path, path: Path) -> Path:
        return path

    def facts(self) -> dict[str, Any]:
        return {"backend_ip": LOCAL_LAB_IP}

    def stop(self) -> None:
        return None

    def hold(self, job: Job, *, lab_dir: Path) -> contextlib.AbstractContextManager[Held]:
        raise LabError("the fake runtime replays recorded cells; it holds no lab")

    def run(self, job: Job, *, lab_dir: Path, on_proxy: OnProxy | None = None) -> Iterator[CellEvent]:
        self.jobs.append(job)
        if isinstance(job, ScenarioJob):
            self.minted.append(job.mint(LOCAL_LAB_IP))
            return self._scenario_cells(job)
        return self._config_cells(job, lab_dir, on_proxy)

    def _scenario_cells(self, job: ScenarioJob) -> Iterator[CellEvent]:
        for sc in job.scenarios:
            for ident in job.identities_of(sc.id):
                recorded = self.scenario_cells.get(f"{sc.id} {ident}")
                if recorded is None:
                    raise LabError(f"fake runtime: no recorded cell for {sc.id} x {ident}")
                yield dataclasses.replace(recorded, key=sc.id)

    def _config_cells(self, job: ConfigJob, lab_dir: Path, on_proxy: OnProxy | None) -> Iterator[CellEvent]:
        digests = {p.key: _digest(job, lab_dir, p) for p in job.proxies}
        for p in job.proxies:
            refusal = self.refusals.get(digests[p.key])
            event = dataclasses.replace(refusal, key=p.key) if refusal else ProxyEvent(p.key, started=True)
            if on_proxy:
                on_proxy(event)
        for spec in job.cells:
            if digests[spec.key] in self.refusals:
                continue
            recorded = self.config_cells.get(_cell_key(digests[spec.key], spec))
            if recorded is None:
                raise LabError(
                    f"fake runtime: no recorded cell for {spec.host}{spec.path} (upstream {spec.label}) x "
                    f"{spec.identity} through this config"
                )
            yield dataclasses.replace(recorded, key=spec.key, label=spec.label)
