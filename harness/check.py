"""``trustlab check PROXY FILE``: your own proxy config against every identity, on real servers.

The config is adapted to run in the lab (:mod:`harness.configs`: trust directives kept exactly,
paths, listeners and client-side certificates replaced, each change said), then every HTTPS
upstream it names is answered by the backend seat inside a private lab namespace: host names go
into the namespace's hosts file (one lab address each), IP targets are put on the namespace's own
loopback, and one seat listens per upstream port. Each upstream gets a PKI minted for it: the
legitimate certificate names the upstream's host (or, for an IP target, the name the config
expects), and ``ip-san`` carries the upstream's lab address. Then one request per
upstream x identity, through the listener, Host and path that reach that upstream.

The verdict: ``ok`` when, for every upstream, ``legit`` is served and every impostor is blocked
(identities listed in ``accept`` excepted, e.g. ``wildcard`` when your PKI never issues one).

``check(..., pinned=Backend(...))`` is how a challenge is graded: the same run, except that the
backend is the declared one instead of whatever the config names. Its name alone gets the
legitimate certificate, its address and port alone reach the seat (any other upstream host
resolves to an unrouted address and is reported, not probed), and one more request, the
declared Host and path, must reach the seat there and be served. A config that expects another
name, proxies elsewhere or answers that request itself is not ok, with a :class:`Problem` or a
failing cell saying which.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.configs import adapter, guess_proxy
from harness.configs.base import Adapted, LabPaths, Ports, Upstream, is_ip, read_config
from harness.errors import ConfigError, LabError
from harness.pki import CA_FILE, LabPKI
from harness.proxies import Installation, driver
from harness.runtimes.base import ConfigJob, PreparedProxy, Runtime
from harness.runtimes.contract import CellSpec, ProxyEvent
from harness.vocab import (
    ALL_IDENTITY_IDS,
    BACKEND_NAME,
    BACKEND_PORT,
    IDENTITY_IDS,
    LEGITIMATE_IDS,
    LOCAL_LAB_IP,
    OPTIONAL_IDENTITY_IDS,
    PUBLIC_HOST,
    SIBLING_NAME,
    Outcome,
    ProxyKind,
)

IMPOSTORS = tuple(i for i in IDENTITY_IDS if i not in LEGITIMATE_IDS)
#: Who ``wrong-name`` is issued to: the lab's sibling, unless the config itself uses that name.
_SIBLINGS = (SIBLING_NAME, "other-svc.trustlab.test", "sibling.trustlab.test", "sibling-2.trustlab.test")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
#: What a client may send as Host: a name or address, an optional port.
_HOST_HEADER = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?$")
#: Lab addresses given to the config's upstream host names, one each (10.203.0.20, .21 ...).
_NAME_NET = "10.203.0."
_NAME_FIRST = 20
#: The most upstreams (and upstream host names) one check runs: each name needs a lab address
#: in _NAME_NET (.20 to .219), and each upstream group its own lab.
MAX_UPSTREAMS = 200
#: Where a pinned lab sends every host that is not the declared backend: TEST-NET-1 (RFC 5737),
#: which no lab namespace or container has a route to, so a connection fails at once.
UNROUTED = "192.0.2.1"
#: The label of the pinned lab's graded request (the declared Host and path).
GRADED = "the graded request"


@dataclass(frozen=True)
class Backend:
    """The backend a challenge pins (``check(..., pinned=Backend(...))``, see the module doc).

    *name* is the only name the legitimate certificate carries, *address*:*port* the only place
    the lab routes to the seat; *host* and *path* are the request the grade is about.
    """

    name: str = BACKEND_NAME
    port: int = BACKEND_PORT
    address: str = LOCAL_LAB_IP
    host: str = PUBLIC_HOST
    path: str = "/"
    #: The internal root's path on the challenge's host: the one CA file a config may name (see
    #: :attr:`harness.configs.base.LabPaths.ca_files`). None: any path stands for the lab's root.
    ca_file: str | None = None

    @property
    def ca_files(self) -> tuple[str, ...] | None:
        return None if self.ca_file is None else (self.ca_file,)

    @property
    def dest(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Problem:
    """Why a pinned config is wrong before any request: the upstream, its line, what is wrong."""

    upstream: str
    line: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckCell:
    """One request through the user's proxy to one upstream, answered by one identity."""

    upstream: str
    identity: str
    outcome: Outcome
    status: int | None
    reason: str
    sni: str | None
    #: The upstream's line in the checked file (``None`` for the graded request).
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


@dataclass
class CheckResult:
    """What ``trustlab check`` found; ``ok`` is the verdict, ``summary()`` says why."""

    proxy: str
    config: str
    adaptations: list[str]
    cells: list[CheckCell] = field(default_factory=list)
    rejected: str | None = None
    accept: tuple[str, ...] = ()
    duration_s: float = 0.0
    #: Where the proxy ran: ``local`` or ``docker``.
    runtime: str = "local"
    #: Which version of the proxy ran it, and its TLS library (issue 15).
    proxy_version: str | None = None
    tls_library: str | None = None
    #: Per upstream (issue 19): its label, the config line that names it and that line's text,
    #: the server name a client reaches it by, and the name its legitimate certificate carries.
    upstream_info: list[dict[str, Any]] = field(default_factory=list)
    #: The pinned backend (a challenge's grade), and what the config gets wrong about it.
    pinned: Backend | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def upstreams(self) -> list[str]:
        return list(dict.fromkeys(c.upstream for c in self.cells))

    @property
    def failures(self) -> list[CheckCell]:
        """Cells that make the check fail: legit not served, or an impostor not blocked."""
        bad = []
        for c in self.cells:
            if c.identity == "legit":
                if c.outcome is not Outcome.SERVED:
                    bad.append(c)
            elif c.identity in LEGITIMATE_IDS:
                if c.outcome in (Outcome.CONFIG_REJECTED, Outcome.ERROR):
                    bad.append(c)
            elif c.identity not in self.accept and c.outcome is not Outcome.BLOCKED:
                bad.append(c)
        return bad

    @property
    def ok(self) -> bool:
        return bool(self.cells) and not self.rejected and not self.failures and not self.problems

    def outcome(self, identity: str, upstream: str | None = None) -> Outcome:
        """The outcome for *identity* (at the first upstream, or the one whose label contains *upstream*)."""
        for c in self.cells:
            if c.identity == identity and (upstream is None or upstream in c.upstream):
                return c.outcome
        raise KeyError((identity, upstream))

    def summary(self) -> str:
        """A short human explanation of the verdict."""
        if self.rejected:
            return f"{self.proxy} refused the config: {self.rejected}"
        if self.ok:
            extra = f" ({', '.join(self.accept)} accepted by policy)" if self.accept else ""
            return f"ok: {len(self.upstreams)} upstream(s): legit served, every impostor blocked{extra}"
        lines = [f"{len(self.failures) + len(self.problems)} problem(s):"]
        lines += [f"  {p.upstream}: {p.text}" for p in self.problems]
        for c in self.failures:
            if c.outcome is Outcome.ERROR:  # the lab could not tell: never a verdict on the config
                what = "error: the lab could not tell what the proxy does here"
            elif c.outcome is Outcome.CONFIG_REJECTED:
                what = "the proxy did not start"
            elif c.identity in LEGITIMATE_IDS:
                what = "the legitimate backend was not served"
            else:
                what = "impostor got through"
            lines.append(f"  {c.upstream}: {c.identity} -> {c.outcome.value} ({what}; {c.reason})")
        return "\n".join(lines)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "config": self.config,
            "adaptations": self.adaptations,
            "cells": [c.to_dict() for c in self.cells],
            "ok": self.ok,
            "rejected": self.rejected,
            "duration_s": round(self.duration_s, 3),
            "runtime": self.runtime,
            "proxy_version": self.proxy_version,
            "tls_library": self.tls_library,
            "upstreams": self.upstream_info,
            "problems": [p.to_dict() for p in self.problems],
        }


def _lab_paths(base: Path, run_dir: Path, pinned: Backend | None = None) -> LabPaths:
    return LabPaths(
        run_dir=run_dir,
        ca=base / "pki" / CA_FILE,
        bundle=base / "pki" / "system-bundle.pem",
        ca_dir=base / "pki" / "ca-dir",
        bundle_dir=base / "pki" / "bundle-dir",
        cert=base / "front" / "cert.pem",
        key=base / "front" / "key.pem",
        combined=base / "front" / "combined.pem",
        crl_chain=base / "pki" / "crl-chain.pem",
        crl_leaf=base / "pki" / "crl-intermediate.pem",
        ca_files=pinned.ca_files if pinned is not None else None,
    )


def _front_cert(directory: Path) -> None:
    """A lab-minted certificate for the proxy's client side (not what the lab tests)."""
    import trustme

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="trustlab client-side CA")
    leaf = ca.issue_cert(PUBLIC_HOST, "localhost")
    chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    (directory / "cert.pem").write_bytes(chain)
    (directory / "key.pem").write_bytes(key)
    (directory / "key.pem").chmod(0o600)
    (directory / "combined.pem").write_bytes(chain + key)
    (directory / "combined.pem").chmod(0o600)


def _hashed_dir(directory: Path, pem: Path) -> None:
    """A CApath-style directory (``openssl rehash``) holding *pem*'s certificates."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    directory.mkdir(mode=0o700, exist_ok=True)
    for i, cert in enumerate(x509.load_pem_x509_certificates(pem.read_bytes())):
        (directory / f"ca-{i}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    if shutil.which("openssl"):
        subprocess.run(["openssl", "rehash", str(directory)], capture_output=True, timeout=10)


def kind_of(proxy: str) -> ProxyKind:
    from harness.proxies import names

    if proxy not in names():
        raise ConfigError(f"proxy {proxy!r} is unknown; known: {', '.join(names())}")
    return ProxyKind(proxy)


def check(
    proxy: str,
    config: str | Path,
    *,
    accept: tuple[str, ...] = (),
    identities: tuple[str, ...] = IDENTITY_IDS,
    keep: bool = False,
    sni_routing: bool = False,
    runtime: str | Runtime = "local",
    version: str | None = None,
    pinned: Backend | None = None,
    dynamic: tuple[str | Path, ...] = (),
) -> CheckResult:
    """Run *config* (a real ``proxy`` config file) against every identity; see the module doc.

    *identities* may include optional ones (``legit-deep``: minted only when asked). With
    *sni_routing* the legitimate backend routes by SNI like a multi-site server (no SNI, or
    another name than ``backend-api.internal``, gets its default site's certificate).

    *runtime* is ``local`` (the host's proxies in a private namespace), ``docker`` (the lab
    image's, in one container per upstream group with no network) or ``auto`` (docker when
    its daemon and image are there, else local); both give the same verdicts. *version* (a
    prefix: ``1.31``) picks the installed version of the proxy that runs it (default: the
    kind's default installation). *pinned* grades against a declared backend instead of the
    one the config names (a challenge; see the module doc). *dynamic*: Traefik dynamic files
    named explicitly (``--dynamic``), read beside those the static file's provider names.
    """
    return check_many(
        proxy,
        [config],
        accept=accept,
        identities=identities,
        keep=keep,
        sni_routing=sni_routing,
        runtime=runtime,
        version=version,
        pinned=pinned,
        dynamic=dynamic,
    )[0]


@dataclass
class _Plan:
    """One config of a :func:`check_many` call: its upstreams and where the lab puts them."""

    path: Path
    text: str
    first: Adapted
    #: The identities its cells run (``revoked`` added when the config names a CRL, issue 24).
    identities: tuple[str, ...]
    problems: list[Problem]
    groups: dict[tuple[str, str, str], list[tuple[int, Upstream]]]
    hosts: dict[str, str]
    addresses: list[str]
    seat_ports: list[int]
    sibling: str


#: (config number, group number within it, group key, members): one proxy process.
_Unit = tuple[int, int, tuple[str, str, str], list[tuple[int, Upstream]]]
#: A pinned lab runs at most this many proxy processes (configs x upstream groups) at once.
_BATCH = 12


def check_many(
    proxy: str,
    configs: list[str | Path],
    *,
    accept: tuple[str, ...] = (),
    identities: tuple[str, ...] = IDENTITY_IDS,
    keep: bool = False,
    sni_routing: bool = False,
    runtime: str | Runtime = "local",
    version: str | None = None,
    pinned: Backend | None = None,
    dynamic: tuple[str | Path, ...] = (),
) -> list[CheckResult]:
    """:func:`check` for several configs of one kind: one result each, in order.

    With *pinned* every config meets the same backend, so their proxies (one process per config
    and upstream group, never shared) run side by side in one lab: a grader checks a dozen
    attempts for little more than the cost of one. Without it each upstream group keeps its own
    lab (its own PKI, for the name it names).
    """
    from harness.runner import lab_dir

    kind = kind_of(proxy)
    paths = [Path(c) for c in configs]
    texts = [read_config(path) for path in paths]
    _check_accept(accept)
    adapt = _adapter_for(kind, dynamic)
    rt = pick_runtime(runtime)
    rt.preflight({kind.value})
    inst = _installation(rt, kind, version)
    t0 = time.perf_counter()
    with lab_dir(keep=keep) as lab:
        _front_cert(lab / "front")
        plans = [
            _plan(adapt, kind, path, text, lab / f"probe{n}", pinned, identities)
            for n, (path, text) in enumerate(zip(paths, texts, strict=True))
        ]
        run = _Run(lab, rt, kind, inst, adapt, plans, pinned, sni_routing)
        results = _run_batches(run, _batches(plans, pinned))
    elapsed = time.perf_counter() - t0
    return [_result(run, p, [r for r in results if r[0] == p], accept, elapsed / len(plans)) for p in range(len(plans))]


def _check_accept(accept: tuple[str, ...]) -> None:
    for ident in accept:
        if ident not in IMPOSTORS:
            raise ConfigError(f"--accept: {ident!r} is not an impostor identity; choose from {', '.join(IMPOSTORS)}")


def _adapter_for(kind: ProxyKind, dynamic: tuple[str | Path, ...]) -> Any:
    """*kind*'s adapter, given the Traefik dynamic files named on the command line."""
    adapt = adapter(kind)
    if not dynamic:
        return adapt
    if kind is not ProxyKind.TRAEFIK:
        raise ConfigError(f"--dynamic: only Traefik has dynamic files; {kind.value} reads its config alone")
    import functools

    return functools.partial(adapt, dynamic=tuple(Path(d) for d in dynamic))


@dataclass(frozen=True)
class _Run:
    """What every proxy process of one :func:`check_many` call shares."""

    lab: Path
    rt: Runtime
    kind: ProxyKind
    inst: Installation | None
    adapt: Any
    plans: list[_Plan]
    pinned: Backend | None
    sni_routing: bool


#: One proxy process's outcome: (config number, its cells, the proxy's refusal, its adapted config).
_Done = tuple[int, list[CheckCell], str | None, Adapted]


def _batches(plans: list[_Plan], pinned: Backend | None) -> list[list[_Unit]]:
    """The proxy processes to run, by lab: a pinned lab holds up to :data:`_BATCH` of them, any
    other lab one (its PKI names its upstream group's name)."""
    units: list[_Unit] = [
        (p, g, key, members) for p, plan in enumerate(plans) for g, (key, members) in enumerate(plan.groups.items())
    ]
    if pinned is not None:
        return [units[i : i + _BATCH] for i in range(0, len(units), _BATCH)]
    return [[u] for u in units]


def _run_batches(run: _Run, batches: list[list[_Unit]]) -> list[_Done]:
    """Every batch's lab, four at a time; an interruption stops the lab workers at once."""
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        futures = [pool.submit(_run_batch, run, b, batch) for b, batch in enumerate(batches)]
        return [r for f in futures for r in f.result()]
    except BaseException:
        # Ctrl-C/SIGTERM lands here, in the main thread: stop the lab workers the other
        # threads are reading, so they end now rather than after every upstream (38 s for 80).
        pool.shutdown(wait=False, cancel_futures=True)
        run.rt.stop()  # local stops its workers, docker removes its labs
        raise
    finally:
        pool.shutdown(wait=True)


def _run_batch(run: _Run, b: int, batch: list[_Unit]) -> list[_Done]:
    """One lab: its PKI for the batch's upstream name and address, each unit's proxy, every cell."""
    name, addr, _ = batch[0][2]
    mine = [run.plans[p] for p, *_ in batch]
    hosts = {n: a for plan in mine for n, a in plan.hosts.items()}
    seat_ports = sorted({port for plan in mine for port in plan.seat_ports})
    base = run.lab / f"b{b}"
    optional = tuple(dict.fromkeys(i for plan in mine for i in plan.identities if i in OPTIONAL_IDENTITY_IDS))
    pki = LabPKI.mint(backend_ip=addr, backend_name=name, optional=optional, sibling_name=mine[0].sibling)
    pki.write_to(base / "pki")
    shutil.copytree(run.lab / "front", base / "front")
    files = _lab_paths(base, base)
    _hashed_dir(files.ca_dir, files.ca)
    _hashed_dir(files.bundle_dir, files.bundle)
    units = [_prepare(run, base, n, unit, seat_ports) for n, unit in enumerate(batch)]
    events: list[ProxyEvent] = []
    job = ConfigJob(
        proxies=tuple(u.proxy for u in units),
        cells=tuple(c for u in units for c in u.cells),
        pki_dir=base / "pki",
        hosts={n: a for n, a in hosts.items() if n != BACKEND_NAME},
        addresses=tuple(sorted({a for plan in mine for a in plan.addresses})),
        seat_ports=tuple(seat_ports),
    )
    raw = list(run.rt.run(job, lab_dir=base, on_proxy=events.append))
    out = []
    for u in units:
        plan, key = run.plans[u.plan], u.proxy.key
        judged, rejected = _judge(
            u.members,
            [r for r in raw if r.key == key],
            [e for e in events if e.key == key],
            plan.path,
            u.proxy.config,
            u.adapted,
            addr,
            plan.identities,
            run.pinned,
        )
        out.append((u.plan, u.unprobed + judged, rejected, u.adapted))
    return out


@dataclass
class _Prepared:
    """One proxy process of a batch: its adapted config, the cells sent through it, and the cells
    of its upstreams no request can reach."""

    plan: int
    members: list[tuple[int, Upstream]]
    proxy: PreparedProxy
    adapted: Adapted
    cells: list[CellSpec]
    unprobed: list[CheckCell]


def _prepare(run: _Run, base: Path, n: int, unit: _Unit, seat_ports: list[int]) -> _Prepared:
    """Unit *n* of a batch's lab: its config adapted into ``run{n}`` and its cells."""
    p, g, key, members = unit
    plan, pk, run_dir = run.plans[p], f"p{n}", base / f"run{n}"
    run_dir.mkdir(parents=True)
    # Each proxy process of a shared lab listens on its own ports.
    ports = Ports(avoid=set(seat_ports), first=20000 + 100 * n)
    # The config names the paths where the proxy sees these files (/lab/... in docker).
    seen = _lab_paths(run.rt.lab_path(base, base), run.rt.lab_path(base, run_dir), run.pinned)
    adapted = run.adapt(plan.path, seen, ports=ports, focus=key[2] or None)
    cfg = run_dir / (adapted.config_name or driver_config_name(run.kind))
    cfg.write_text(adapted.text)
    for extra, body in adapted.extra_files.items():  # remap.config beside records.config
        (run_dir / extra).write_text(body)
    unprobed = [
        CheckCell(u.label, ident, Outcome.ERROR, None, f"not probed: {u.why_unroutable}", None, u.line)
        for _, u in members
        if u.route is None
        for ident in plan.identities
    ]
    cells = [_cell(run, pk, i, u, ident, adapted, ports) for i, u in members if u.route for ident in plan.identities]
    listen = next(iter(adapted.listeners.values()), ports("80"))
    if run.pinned is not None and g == 0:
        cells.append(_graded_cell(run.pinned, pk, listen, adapted, members, run.sni_routing))
    proxy = PreparedProxy(pk, run.kind.value, run_dir, cfg, listen, run.inst)
    return _Prepared(p, members, proxy, adapted, cells, unprobed)


def _cell(run: _Run, pk: str, i: int, u: Upstream, ident: str, adapted: Adapted, ports: Ports) -> CellSpec:
    """The request that reaches upstream *i* (through its route), answered by *ident*."""
    assert u.route is not None
    return CellSpec(
        key=pk,
        identity=ident,
        label=i,
        port=adapted.listeners.get(u.route.listener, ports(u.route.listener)),
        host=u.route.host,
        path=u.route.path,
        tls=u.route.tls,
        method=u.route.method,
        headers=u.route.headers,
        sni_routing=run.sni_routing,
    )


def _graded_cell(
    pinned: Backend, pk: str, listen: int, adapted: Adapted, members: list[tuple[int, Upstream]], sni_routing: bool
) -> CellSpec:
    """The declared request, once, with legit: it must reach the seat and be served."""
    first_listener = next(iter(adapted.listeners), "80")
    tls = any(u.route and u.route.listener == first_listener and u.route.tls for _, u in members)
    return CellSpec(
        key=pk,
        identity="legit",
        label=-1,
        port=listen,
        host=pinned.host,
        path=pinned.path,
        tls=tls,
        sni_routing=sni_routing,
    )


def _result(run: _Run, p: int, mine: list[_Done], accept: tuple[str, ...], duration: float) -> CheckResult:
    """Config *p*'s result: its cells in the config's upstream order, then by identity."""
    plan, pinned, inst = run.plans[p], run.pinned, run.inst
    rank = {ident: i for i, ident in enumerate(ALL_IDENTITY_IDS)}
    order = {u.label: i for i, u in enumerate(plan.first.upstreams)}
    cells = sorted((c for r in mine for c in r[1]), key=lambda c: (order.get(c.upstream, len(order)), rank[c.identity]))
    rejected = next((r[2] for r in mine if r[2]), None)
    problems = list(plan.problems)
    if pinned is not None and not rejected and not any(c.upstream.startswith(GRADED) for c in cells):
        problems.append(
            Problem(
                GRADED,
                0,
                f"Host {pinned.host}, path {pinned.path} was never sent: no upstream of "
                f"the config goes to the backend {pinned.name}:{pinned.port}",
            )
        )
    # Relabelled before deduplicating: each group's notes name its own lab paths.
    notes = list(dict.fromkeys(_relabel(n) for r in mine for n in r[3].adaptations))
    return CheckResult(
        proxy=run.kind.value,
        config=str(plan.path),
        adaptations=notes or [_relabel(n) for n in plan.first.adaptations],
        cells=cells,
        rejected=rejected,
        accept=tuple(accept),
        duration_s=duration,  # configs checked side by side share the lab's time
        runtime=run.rt.name,
        proxy_version=inst.version if inst else None,
        tls_library=(inst.tls or None) if inst else None,
        pinned=pinned,
        problems=problems,
        upstream_info=[_upstream_info(u, plan.text) for u in plan.first.upstreams],
    )


def _plan(
    adapt: Any, kind: ProxyKind, path: Path, text: str, probe: Path, pinned: Backend | None, identities: tuple[str, ...]
) -> _Plan:
    """*path*'s upstreams, and where the lab puts each one (see the module doc)."""
    first = _first_adapt(adapt, kind, path, probe, pinned)
    # A config that names a CRL is checked against a revoked backend too (issue 24).
    lab_files = _lab_paths(probe, probe)
    if any(str(crl) in first.text for crl in (lab_files.crl_chain, lab_files.crl_leaf)) and "revoked" not in identities:
        identities = (*identities, "revoked")
    if pinned is None:
        return _unpinned(path, text, first, identities)
    return _pinned(path, text, first, identities, pinned)


def _first_adapt(adapt: Any, kind: ProxyKind, path: Path, probe: Path, pinned: Backend | None) -> Adapted:
    """*path* adapted once, to read its upstreams; a config the lab cannot check is a ConfigError."""
    try:
        first: Adapted = adapt(path, _lab_paths(probe, probe, pinned), ports=Ports())
    except ConfigError as exc:
        raise ConfigError(f"{exc}{_looks_like(path, kind)}") from None
    if not first.upstreams:
        raise ConfigError(
            f"{path}: no HTTPS upstream found ({driver(kind).check_hint}); nothing to check{_looks_like(path, kind)}"
        )
    _check_names(path, first)
    names = _host_names(first)
    if len(first.upstreams) > MAX_UPSTREAMS or len(names) > MAX_UPSTREAMS:
        raise ConfigError(
            f"{path}: {len(first.upstreams)} upstreams ({len(names)} host names); trustlab checks at most "
            f"{MAX_UPSTREAMS} of each in one run: split the config, or check the part that decides trust"
        )
    return first


def _host_names(adapted: Adapted) -> list[str]:
    """Every host name (not address) the config's upstreams and other settings name, sorted."""
    return sorted({u.host for u in adapted.upstreams if not is_ip(u.host)} | set(_other_names(adapted)))


def _unpinned(path: Path, text: str, first: Adapted, identities: tuple[str, ...]) -> _Plan:
    """Each upstream answered where the config sends it: one lab address per host name, one group
    (one lab, its own PKI) per name, address and pool."""
    names = _host_names(first)
    # backend-api.internal keeps the lab's own backend address: the lab's hosts file already
    # names it there (a second line would give nginx two peers), and an SNI-routing seat
    # knows it as the backend.
    hosts = {n: LOCAL_LAB_IP if n == BACKEND_NAME else f"{_NAME_NET}{_NAME_FIRST + i}" for i, n in enumerate(names)}
    taken = set(names) | {u.name for u in first.upstreams}
    sibling = next(n for n in _SIBLINGS if n not in taken)
    addresses = sorted({u.host for u in first.upstreams if is_ip(u.host)} | set(hosts.values()))
    groups: dict[tuple[str, str, str], list[tuple[int, Upstream]]] = {}
    for i, u in enumerate(first.upstreams):
        addr = u.host if u.is_ip else hosts[u.host]
        groups.setdefault((u.name, addr, u.pool), []).append((i, u))
    seat_ports = sorted({u.port for u in first.upstreams})
    return _Plan(path, text, first, identities, [], groups, hosts, addresses, seat_ports, sibling)


def _pinned(path: Path, text: str, first: Adapted, identities: tuple[str, ...], pinned: Backend) -> _Plan:
    """Only the upstreams that go to the pinned backend, all at its address; every other host name
    the config names resolves to an unrouted address (so the proxy still starts) and is not probed."""
    probed, problems = _pin(path, first.upstreams, pinned)
    others = {u.host for u in first.upstreams if not is_ip(u.host)} | set(_other_names(first))
    hosts = {n: UNROUTED for n in sorted(others - {pinned.name})}
    if pinned.name != BACKEND_NAME:
        hosts[pinned.name] = pinned.address
    sibling = SIBLING_NAME if pinned.name != SIBLING_NAME else _SIBLINGS[1]
    groups: dict[tuple[str, str, str], list[tuple[int, Upstream]]] = {}
    for i, u in probed:
        groups.setdefault((pinned.name, pinned.address, u.pool), []).append((i, u))
    return _Plan(path, text, first, identities, problems, groups, hosts, [pinned.address], [pinned.port], sibling)


def _judge(
    members: list[tuple[int, Upstream]],
    raw: list[Any],
    events: list[ProxyEvent],
    path: Path,
    cfg: Path,
    adapted: Adapted,
    addr: str,
    identities: tuple[str, ...],
    pinned: Backend | None,
) -> tuple[list[CheckCell], str | None]:
    """One proxy process's cells, each judged (did the request reach the backend?), and its refusal."""
    failed = next((e for e in events if not e.started), None)
    # Killed or out of disk before it listened: an error of the lab, not a rejected config.
    died = failed.message if failed and failed.failure is Outcome.ERROR else None
    rejected = None if died or not failed else learner_lines(failed.message, cfg.name, adapted.text, path)
    by_label = {i: u for i, u in members}
    out = [_judged(r, by_label.get(r.label), addr, pinned) for r in raw]
    # A proxy that never listened: every routable cell gets its reason (how it died, or the
    # proxy's own refusal).
    for outcome, why in ((Outcome.ERROR, died), (Outcome.CONFIG_REJECTED, rejected)):
        if why:
            out += [
                CheckCell(u.label, ident, outcome, None, why, None, u.line)
                for _, u in members
                if u.route
                for ident in identities
            ]
    return out, rejected


def _judged(r: Any, u: Upstream | None, addr: str, pinned: Backend | None) -> CheckCell:
    """Cell *r* (to upstream *u*, or the graded request when None) as judged: an answer that did
    not come from the backend's address is an error of the lab, never a verdict."""
    assert r.label is not None
    outcome, reason = r.outcome, r.reason
    if pinned is not None:
        want = pinned.dest
    else:
        assert u is not None
        want = f"{addr}:{u.port}" if not u.host.startswith("127.") else f"{u.host}:{u.port}"
    if r.dest and r.dest != want and outcome is not Outcome.BLOCKED:
        outcome, reason = Outcome.ERROR, f"the request reached {r.dest}, not the backend ({want}); {reason}"
    elif pinned is not None and not r.dest and r.status is not None and r.status < 500:
        # An answer no connection to the seat produced (a static 200 with a forged marker, a
        # 403): the proxy answered by itself.
        outcome, reason = (
            Outcome.ERROR,
            f"status {r.status}, but no connection reached the backend at {want}: the proxy answered by "
            f"itself ({reason})",
        )
    if u is None:
        assert pinned is not None
        graded = f"{GRADED} (Host {pinned.host}, path {pinned.path})"
        return CheckCell(graded, r.identity, outcome, r.status, reason, r.sni)
    return CheckCell(u.label, r.identity, outcome, r.status, reason, r.sni, u.line)


def _upstream_info(u: Upstream, text: str) -> dict[str, Any]:
    """What ``check`` heads an upstream's block with. The line's text is shown only when it names
    the upstream's host or target (a line number from an included file would point elsewhere in
    this one)."""
    lines = text.splitlines()
    line = lines[u.line - 1].strip() if 0 < u.line <= len(lines) else ""
    return {
        "label": u.label,
        "line": u.line,
        "text": line if line and (u.host in line or u.label.split()[0] in line) else None,
        "server": u.route.host if u.route else None,
        # The request that exercises it (what its route's matchers ask for), or why none can.
        "request": u.route.describe() if u.route else None,
        "unroutable": (u.why_unroutable or None) if not u.route else None,
        "name": u.name,
    }


def learner_lines(message: str, name: str, adapted: str, path: Path) -> str:
    """*message* with each ``<lab path>/NAME:LINE`` (``line N of <lab path>``) made the learner's own
    file and line: the proxy read the adapted file, the learner wrote *path*."""
    try:
        original = read_config(path).splitlines()
    except ConfigError:
        return message
    lab = adapted.splitlines()

    def line_of(n: int) -> int | None:
        if not 0 < n <= len(lab):
            return None
        words = lab[n - 1].split()
        if not words:
            return None
        # The same text (the k-th time it occurs), else the line sharing the longest word prefix
        # (a server line whose ca-file path the lab replaced).
        same = [i for i, ln in enumerate(original, 1) if ln.split() == words]
        if same:
            k = sum(1 for ln in lab[: n - 1] if ln.split() == words)
            return same[min(k, len(same) - 1)]
        best, score = None, 1
        for i, ln in enumerate(original, 1):
            ow = ln.split()
            pairs = enumerate(zip(words, ow, strict=False))
            common = next((j for j, (a, b) in pairs if a != b), min(len(words), len(ow)))
            if common > score:
                best, score = i, common
        return best

    def sub(m: re.Match[str]) -> str:
        n = line_of(int(m.group("a") or m.group("b")))
        if n is None:
            return m.group(0)
        return f"line {n} of {path}" if m.group("a") else f"{path}:{n}"

    pat = re.escape(name)
    return re.sub(rf"line (?P<a>\d+) of /\S*{pat}|/\S*{pat}:(?P<b>\d+)", sub, message)


def _pin(path: Path, upstreams: list[Upstream], pinned: Backend) -> tuple[list[tuple[int, Upstream]], list[Problem]]:
    """The upstreams that go to the pinned backend (to probe), and what is wrong with the others."""
    probed, problems = [], []
    where = f"{pinned.name}:{pinned.port}"
    for i, u in enumerate(upstreams):
        if u.host not in (pinned.name, pinned.address) or u.port != pinned.port:
            problems.append(
                Problem(
                    u.label,
                    u.line,
                    f"{u.file or path.name}:{u.line} sends requests to {u.host}:{u.port}, not "
                    f"to the backend {where} (lab address {pinned.dest}); not probed",
                )
            )
            continue
        if u.name != pinned.name and not is_ip(u.name):
            problems.append(
                Problem(
                    u.label,
                    u.line,
                    f"{u.file or path.name}:{u.line} expects the backend's certificate to name "
                    f"{u.name!r}; the backend is {pinned.name}",
                )
            )
        probed.append((i, u))
    return probed, problems


def _installation(rt: Runtime, kind: ProxyKind, version: str | None) -> Installation | None:
    """The installation of *kind* whose version starts with *version* (default: the first)."""
    from harness.versions import matches_prefix, parse

    installed = rt.installations(kind.value)
    if version is None:
        return installed[0] if installed else None
    try:
        parse(version)
    except ValueError:
        raise ConfigError(f"--proxy-version: {version!r} is not a version; write 1.22 or 1.22.1") from None
    picked = [i for i in installed if matches_prefix(i.version, version)]
    if not picked:
        have = ", ".join(i.version for i in installed) or "none"
        raise ConfigError(
            f"--proxy-version: no installed {kind.value} {version} on the {rt.name} runtime "
            f"(installed: {have}); trustlab doctor lists every version"
        )
    return picked[0]


def pick_runtime(runtime: str | Runtime) -> Runtime:
    """The runtime object for ``local``, ``docker`` or ``auto`` (resolved as ``trustlab run``
    does); a runtime object as it is (the tests' :class:`~harness.runtimes.base.FakeRuntime`)."""
    from harness.runner import get_runtime, resolve_auto

    if not isinstance(runtime, str):
        return runtime
    if runtime == "auto":
        runtime, _ = resolve_auto()
    if runtime == "remote":
        raise ConfigError(
            "the remote runtime runs scenarios only (run_scenario, trustlab run/matrix); in a "
            "classroom server, `trustlab challenge check` sends a config to the grader"
        )
    if runtime not in ("local", "docker"):
        raise ConfigError(f"runtime {runtime!r} is unknown; choose local, docker or auto")
    return get_runtime(runtime)


def _looks_like(path: Path, kind: ProxyKind) -> str:
    """A hint when the file looks like another proxy's config."""
    try:
        other = guess_proxy(read_config(path))
    except ConfigError:
        return ""
    if other is kind:
        return ""
    article = "an" if other.value[0] in "aeiou" else "a"
    return f" (it looks like {article} {other.value} config: trustlab check {other.value} {path})"


def dns_name_problem(name: str) -> str | None:
    """Why *name* cannot be a certificate's DNS name (and so cannot be checked), or ``None``.

    nginx and HAProxy accept host names no CA would certify (``my_backend``, non-ASCII, a label
    over 63 characters); the lab cannot mint a legitimate certificate for them either."""
    if not name.isascii():
        return "is not ASCII; write its IDNA form (xn--...), the name a certificate carries"
    if len(name.rstrip(".")) > 253:
        return f"is {len(name)} characters long; a DNS name has at most 253"
    labels = name.rstrip(".").split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and len(labels) > 2:
            continue  # a wildcard name (proxy_ssl_name *.corp.example) is a valid certificate name
        if len(label) > 63:
            return f"has a label of {len(label)} characters ({label[:20]}...); a DNS label has at most 63"
        if not _LABEL.match(label):
            bad = next((ch for ch in label if not (ch.isalnum() or ch == "-")), "-")
            return f"holds {bad!r} in label {label!r}; a DNS name has letters, digits and inner hyphens only"
    return None


def _check_names(path: Path, adapted: Adapted) -> None:
    """Refuse, in one line, an upstream the lab cannot stand in for or a route it cannot send."""
    for u in adapted.upstreams:
        for name in dict.fromkeys(n for n in (u.host, u.name) if not is_ip(n)):
            why = dns_name_problem(name)
            if why:
                raise ConfigError(
                    f"{path}: line {u.line}: upstream name {name!r} {why}; no certificate can name it, so "
                    "trustlab cannot check it: use a valid DNS name"
                )
        if u.route and not _HOST_HEADER.match(u.route.host):
            raise ConfigError(
                f"{path}: the server name {u.route.host!r} (for the upstream at line {u.line}) is not a host "
                "name a client can send (control characters, spaces or escapes); fix the server_name/ServerName"
            )


def _other_names(adapted: Adapted) -> list[str]:
    return [n for n in getattr(adapted, "other_hosts", []) if not is_ip(n)]


def _relabel(note: str) -> str:
    """Lab temp paths in a note become what they stand for."""
    import re

    # A local lab's temp dir, or /lab in the docker runtime's container.
    lab = r"\S*/trustlab-[^/\s]+/\S*|(?<!\S)/lab/\S*"
    return re.sub(lab, lambda m: "<lab>/" + m.group(0).rsplit("/", 1)[-1], note)


def driver_config_name(kind: ProxyKind) -> str:
    return driver(kind).config_name


def render(result: CheckResult) -> str:
    """The text ``trustlab check`` prints."""
    lines = [f"trustlab check {result.proxy} {result.config}", "", "adapted to run in the lab:"]
    lines += [f"  - {n}" for n in result.adaptations]
    lines.append("")
    for up in result.upstreams:
        lines.append(f"upstream {up}")
        for c in (c for c in result.cells if c.upstream == up):
            verdict = c.outcome.value.upper() if c.outcome is Outcome.SPOOFED else c.outcome.value
            sni = f" sni={c.sni}" if c.sni else " sni=(none)"
            lines.append(f"  {c.identity:<15} {verdict:<16} {str(c.status or '-'):<4}{sni}  {c.reason}")
        lines.append("")
    lines.append(("PASS " if result.ok else "FAIL ") + result.summary())
    on = f", {result.proxy} {result.proxy_version}" if result.proxy_version else ""
    lib = f" with {result.tls_library}" if result.tls_library else ""
    lines.append(f"({result.duration_s:.2f} s, {result.runtime} runtime{on}{lib})")
    return "\n".join(lines)


__all__ = ["Backend", "CheckCell", "CheckResult", "LabError", "Problem", "check", "check_many", "render"]


@dataclass
class HeldConfig:
    """What ``trustlab up --config`` starts: one upstream of a user's config, as ``check`` runs it."""

    proxy: PreparedProxy
    pki_dir: Path
    hosts: dict[str, str]
    addresses: list[str]
    seat_ports: list[int]
    #: The upstream held (its route: how a request reaches it; its name: what its certificate carries).
    upstream: Upstream
    identities: tuple[str, ...]
    #: The config's other HTTPS upstreams (not held: ``up`` holds the first one).
    others: list[str]


#: The identities a held config lab can present: the built-ins, then the optional ones any config
#: can meet (``present cn-only`` shows nginx's CN fallback on your own config).
HELD_OPTIONAL = ("legit-deep", "cn-only", "san-other-cn-backend")


def held_config(proxy: str, config: str | Path, lab: Path) -> HeldConfig:
    """Prepare *config*'s first HTTPS upstream in *lab* as ``check`` would run it (same adapter,
    same names and addresses, same PKI layout), for a lab that stays up. Bad input raises
    :class:`ConfigError` in one line, as ``check`` does."""
    kind = kind_of(proxy)
    path = Path(config)
    text = read_config(path)
    adapt = adapter(kind)
    plan = _plan(adapt, kind, path, text, lab / "probe", None, IDENTITY_IDS + HELD_OPTIONAL)
    routed = [(key, u) for key, members in plan.groups.items() for _, u in members if u.route is not None]
    if not routed:
        why = next((u.why_unroutable for members in plan.groups.values() for _, u in members), "")
        raise ConfigError(f"{path}: no upstream a request can reach ({why}); nothing to hold")
    (name, addr, pool), upstream = routed[0]
    assert upstream.route is not None
    pki = LabPKI.mint(
        backend_ip=addr,
        backend_name=name,
        optional=tuple(i for i in plan.identities if i in OPTIONAL_IDENTITY_IDS),
        sibling_name=plan.sibling,
    )
    pki.write_to(lab / "pki")
    _front_cert(lab / "front")
    files = _lab_paths(lab, lab / "run")
    _hashed_dir(files.ca_dir, files.ca)
    _hashed_dir(files.bundle_dir, files.bundle)
    (lab / "run").mkdir()
    ports = Ports(avoid=set(plan.seat_ports))
    adapted = adapt(path, files, ports=ports, focus=pool or None)
    cfg = lab / "run" / (adapted.config_name or driver_config_name(kind))
    cfg.write_text(adapted.text)
    for extra, body in adapted.extra_files.items():
        (lab / "run" / extra).write_text(body)
    # The listener that reaches the held upstream: the one the lab relays to its socket.
    port = adapted.listeners.get(upstream.route.listener, ports(upstream.route.listener))
    return HeldConfig(
        proxy=PreparedProxy("proxy", kind.value, lab / "run", cfg, port, None),
        pki_dir=lab / "pki",
        hosts={n: a for n, a in plan.hosts.items() if n != BACKEND_NAME},
        addresses=plan.addresses,
        seat_ports=plan.seat_ports,
        upstream=upstream,
        identities=plan.identities,
        others=[u.label for _, u in routed[1:]],
    )
