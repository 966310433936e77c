"""The lab's start-cost savings change no verdict (issue 27 item 2).

Envoy starts with ``--concurrency 1 --disable-hot-restart`` (and no admin interface); Traefik is
given a throwaway default certificate (else it generates an RSA-2048 one at every start). Each
kind's built-in scenarios run twice in one test, the kind's plain start then the lab's, on the
same lab PKI, and every cell (scenario x identity: outcome, status, SNI, TLS version) must be the
same. What the savings are worth is a benchmark's figure (benchmarks/bench_phases.py), not a
timed test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REQUIRE_PROXIES

from harness import runner, scenarios
from harness.proxies import RenderContext, driver
from harness.runtimes.contract import ProxySpec
from harness.runtimes.local import LocalRuntime

KINDS = ("envoy", "traefik")


def _ctx(tmp_path: Path, lean: bool = True) -> RenderContext:
    return RenderContext(
        run_dir=str(tmp_path),
        listen="127.0.0.1:20000",
        ca="/lab/pki/internal-pki.pem",
        bundle="/lab/pki/system-bundle.pem",
        backend_ip="10.203.0.10",
        lean=lean,
    )


# -- what "plain" and "lean" start, without a proxy -------------------------------------------
def test_envoy_plain_command_drops_only_the_start_flags() -> None:
    spec = ProxySpec(
        key="envoy/good", kind="envoy", listen_port=20007, run_dir="/r", log="/r/access.log", config="/r/envoy.yaml"
    )
    lean, plain = spec.argv(), dataclasses.replace(spec, plain=True).argv()
    assert "--disable-hot-restart" in lean and lean[lean.index("--concurrency") + 1] == "1"
    assert "--disable-hot-restart" not in plain and "--concurrency" not in plain
    # Hot restart binds a domain socket per --base-id: one id per Envoy of a lab (its port).
    assert plain[-2:] == ["--base-id", "20007"]
    # Everything else is kept (config, log flushing, log level).
    assert [a for a in lean if a not in ("--concurrency", "1", "--disable-hot-restart")] == plain[:-2]


def test_other_kinds_have_no_plain_start() -> None:
    for kind in ("nginx", "haproxy", "apache", "caddy", "squid", "trafficserver"):
        argv = ["/bin/x", "-c", "conf"]
        assert driver(kind).plain_command(argv, 20000) == argv


def test_traefik_default_certificate_rendered_only_when_lean(tmp_path: Path) -> None:
    drv, sc = driver("traefik"), scenarios.select(["traefik/good"])[0]
    lean, plain = drv.render(sc, _ctx(tmp_path)), drv.render(sc, _ctx(tmp_path, lean=False))
    assert f'certFile: "{tmp_path}/default-cert.pem"' in lean and f'keyFile: "{tmp_path}/default-key.pem"' in lean
    assert "defaultCertificate" not in plain and "\ntls:" not in plain
    files = drv.extra_files(sc, _ctx(tmp_path))
    assert files["default-cert.pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in files["default-key.pem"] and "RSA" not in files["default-key.pem"]
    assert drv.extra_files(sc, _ctx(tmp_path, lean=False)) == {}
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = x509.load_pem_x509_certificate(files["default-cert.pem"].encode())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


# -- the same cells, on the real proxies ------------------------------------------------------
def _cells(res: runner.Results) -> dict[tuple[str, str], tuple[str, int | None, str | None, str | None]]:
    return {(c.scenario, c.identity): (c.outcome.value, c.status, c.sni, c.tls) for c in res.cells}


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_lean_start_gives_the_same_cells(kind: str, local_runtime: str) -> None:
    if not driver(kind).find_binary():
        msg = f"{kind} is not installed: {driver(kind).install_hint()}"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    chosen = [s for s in scenarios.select() if s.proxy.value == kind]
    started: dict[bool, list[str]] = {True: [], False: []}
    results = {}
    for plain in (True, False):
        rt = LocalRuntime(plain_start=plain)
        results[plain] = runner.run(
            chosen, runtime=rt, seed=1, on_proxy=lambda e, p=plain: started[p].append(e.key) if e.started else None
        )
    before, after = _cells(results[True]), _cells(results[False])
    assert len(before) == len(after) >= 10 * len(chosen)
    differing = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not differing, f"the lean start changed cells: {differing}"
    # Both runs started their proxies (a run where every proxy refused would compare equal too).
    assert sorted(started[True]) == sorted(started[False]) and len(started[True]) >= len(chosen) - 2
    assert not results[False].mismatches


# -- docker: proxies started in batches, each with its own deadline -----------------------------
def test_batches_cover_every_proxy_once_in_order() -> None:
    from harness.runtimes.contract import batches

    keys = [f"k{i}" for i in range(45)]
    got = batches(keys, 20)
    assert [len(b) for b in got] == [20, 20, 5] and [k for b in got for k in b] == keys
    assert batches(keys, 0) == [keys] and batches([], 20) == [[]]


def test_docker_batches_mix_the_kinds() -> None:
    from harness.runtimes import docker as dockerrt

    every = scenarios.select()
    plans = [dockerrt.Plan(sc, sc.id, "/lab/x", 20000 + i, "127.0.0.1") for i, sc in enumerate(every)]
    mixed = dockerrt.interleaved(plans)
    assert sorted(p.scenario.id for p in mixed) == sorted(p.scenario.id for p in plans)
    kinds_present = {p.scenario.proxy.value for p in plans}
    first = mixed[: dockerrt.START_BATCH]
    # The first batch holds every kind, not twenty of one (the plans' own order is by kind).
    assert {p.scenario.proxy.value for p in first} == kinds_present
    assert len({p.scenario.proxy.value for p in plans[: dockerrt.START_BATCH]}) < len(kinds_present)
    # Each kind keeps its own order.
    for kind in kinds_present:
        assert [p for p in mixed if p.scenario.proxy.value == kind] == [
            p for p in plans if p.scenario.proxy.value == kind
        ]


def test_squid_has_a_service_name_of_its_own() -> None:
    """Squids of one docker container share /dev/shm: each names its segments by its own service
    name (one that exited removed segments another used: a 502 in a later batch's cell)."""
    sq = driver("squid")
    a = sq.command("/lab/proxies/a/squid.conf", "/lab/proxies/a")
    b = sq.command("/lab/proxies/b/squid.conf", "/lab/proxies/b")
    name = lambda argv: argv[argv.index("-n") + 1]  # noqa: E731
    assert name(a) != name(b) and name(a) == name(sq.command("/x", "/lab/proxies/a"))
    assert name(a).isalnum() and len(name(a)) <= 32


def _fake_docker_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kinds: list[str], start_batch: int
) -> tuple[list[str], list[list[str]]]:
    """The docker worker's main on a job of *kinds*, with seat, proxies and cells faked: what it
    started (the seat as "seat"), in order, and the proxies of each batch it ran (each batch is
    stopped after its cells)."""
    from harness.runtimes import dockerworker as worker
    from harness.runtimes import nsworker
    from harness.runtimes.contract import ProxyEvent, WorkerJob, dump_job

    order: list[str] = []
    ran: list[list[str]] = []

    @contextlib.contextmanager
    def seat_of(job: WorkerJob, *, deadline: float) -> Iterator[object]:
        order.append("seat")
        yield object()

    class Proxy:
        def __init__(self, spec: ProxySpec) -> None:
            self.key, self.driver, self.started_at, self.proc = spec.key, driver(spec.kind), 0.0, None

        def start(self) -> None:
            order.append(self.key)
            self.started_at = 1.0

        def wait_ready(self, deadline: float) -> ProxyEvent:
            return ProxyEvent(self.key, True)

    for module, name, fake in (
        (worker, "seat_of", seat_of),
        (worker, "Proxy", Proxy),
        (worker, "wait_for_name", lambda *a: None),
        (worker, "stop_all", lambda proxies: None),
        (worker, "emit", lambda event: None),
        (nsworker, "stop_all", lambda group: ran.append([p.key for p in group])),
        (nsworker, "emit", lambda event: None),
    ):
        monkeypatch.setattr(module, name, fake)
    specs = tuple(
        ProxySpec(key=f"{kind}/{i}", kind=kind, listen_port=20000 + i, run_dir="/r", log="/r/l", config="/r/c")
        for i, kind in enumerate(kinds)
    )
    job = tmp_path / "job.json"
    job.write_text(dump_job(WorkerJob(proxies=specs, cells=(), start_batch=start_batch)))
    assert worker.main(["worker", str(job)]) == 0
    return order, ran


def test_docker_worker_starts_squid_once_the_seat_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Squid probes its peer once as it starts; refused (the seat not listening yet), the peer
    stays down, and the next requests get 502 ``found all 0 destinations`` until a probe a
    second later (issue 27: a docker cell in error in small batches). The docker worker's seat
    answers before any proxy starts (as in a local lab, where the seat starts first)."""
    order, ran = _fake_docker_worker(monkeypatch, tmp_path, ["squid", "nginx", "squid", "nginx"], start_batch=3)
    assert order == ["seat", "squid/0", "nginx/1", "squid/2", "nginx/3"]
    assert ran == [["squid/0", "nginx/1", "squid/2"], ["nginx/3"]]


def test_a_proxy_ready_after_a_timer_starts_with_the_first_batch_and_runs_last(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Traffic Server is ready on HostDB's first one-second tick whatever the load: it starts with
    the first batch and its cells run after every other batch's, so that second overlaps them
    (in each batch it had cost up to a second of waiting)."""
    assert driver("trafficserver").ready_delay_s and not driver("squid").ready_delay_s
    order, ran = _fake_docker_worker(
        monkeypatch, tmp_path, ["nginx", "nginx", "trafficserver", "nginx", "nginx"], start_batch=2
    )
    assert order == ["seat", "nginx/0", "nginx/1", "trafficserver/2", "nginx/3", "nginx/4"]
    assert ran == [["nginx/0", "nginx/1"], ["nginx/3", "nginx/4"], ["trafficserver/2"]]


def test_batches_put_the_early_keys_last() -> None:
    from harness.runtimes.contract import batches

    keys = [f"k{i}" for i in range(7)]
    assert batches(keys, 3, early=frozenset({"k1", "k5"})) == [["k0", "k2", "k3"], ["k4", "k6"], ["k1", "k5"]]
    assert batches(keys, 0, early=frozenset({"k6"})) == [keys[:6], ["k6"]]
    assert batches(["k0"], 3, early=frozenset({"k0"})) == [[], ["k0"]]  # the first batch is empty


@pytest.mark.docker
def test_docker_matrix_in_small_batches_equals_local(
    docker_ready: str, local_matrix: runner.Results, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 3 (several Squids, Envoys and Traefiks stopped while later ones run): the same
    cells as the local runtime (the shared full local matrix's), every proxy reported once, none
    in error."""
    from harness.runtimes import docker as dockerrt

    monkeypatch.setattr(dockerrt, "START_BATCH", 3)
    chosen = [s for s in scenarios.select() if s.proxy.value in ("squid", "envoy", "traefik", "nginx")][::2]
    seen: list[str] = []
    on_docker = runner.run(chosen, runtime=docker_ready, seed=3, on_proxy=lambda e: seen.append(e.key))
    ids = {s.id for s in chosen}
    on_local = [c for c in local_matrix.cells if c.scenario in ids]
    assert sorted(seen) == sorted(s.id for s in chosen)  # one event each, across all batches
    assert len(chosen) > 3 * 3
    errors = [c for c in on_docker.cells if c.outcome.value == "error"]
    assert not errors, [(c.scenario, c.identity, c.status, c.reason) for c in errors]
    outcome = lambda cells: {(c.scenario, c.identity): c.outcome.value for c in cells}  # noqa: E731
    assert outcome(on_docker.cells) == outcome(on_local)
    assert not on_docker.mismatches


@pytest.mark.integration
def test_local_worker_in_small_batches_gives_the_same_cells(
    local_runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local worker's batched start (off by default there, see local.START_BATCH): batches of
    3, each stopped after its cells, give the cells of the all-at-once start, every proxy once."""
    from harness.runtimes import local

    chosen = [s for s in scenarios.select() if s.proxy.value in ("squid", "envoy", "nginx", "caddy")][::3]
    assert len(chosen) > 3 * 3
    runs = {}
    for batch in (0, 3):
        monkeypatch.setattr(local, "START_BATCH", batch)
        seen: list[str] = []
        runs[batch] = runner.run(chosen, runtime=local_runtime, seed=5, on_proxy=lambda e, s=seen: s.append(e.key))
        assert sorted(seen) == sorted(s.id for s in chosen)
    assert _cells(runs[3]) == _cells(runs[0])
    assert not runs[3].mismatches and not [c for c in runs[3].cells if c.outcome.value == "error"]


def _two_listeners(tmp_path: Path, delay: float) -> tuple[Any, int, int, int]:
    """A Proxy whose process listens on one port at once and on a second *delay* seconds later
    (a proxy binding its listeners one after another, slowed down); a third port never binds."""
    import socket
    import subprocess
    import sys

    from harness.runtimes.nsworker import Proxy

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    first, second, never = ports
    script = (
        "import socket, time\n"
        f"a = socket.socket(); a.bind(('127.0.0.1', {first})); a.listen(8)\n"
        f"time.sleep({delay})\n"
        f"b = socket.socket(); b.bind(('127.0.0.1', {second})); b.listen(8)\n"
        "time.sleep(30)\n"
    )
    proxy = Proxy(ProxySpec("k", "nginx", first, str(tmp_path), str(tmp_path / "error.log"), str(tmp_path / "c")))
    proxy.proc = subprocess.Popen([sys.executable, "-c", script])
    proxy.started_at = time.perf_counter()
    return proxy, first, second, never


def test_a_proxy_is_ready_once_every_port_its_cells_use_accepts(tmp_path: Path) -> None:
    """A cell sent to a config's second listener the moment the first answered was refused
    (nginx, ``listen 80`` and ``listen 443 ssl``, under load: a ``check`` cell in error): the
    worker waits for every port its cells use. The control shows the race without it."""
    import socket

    from harness.runtimes import nsworker

    def accepts(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    proxy, first, second, _ = _two_listeners(tmp_path, delay=0.5)
    try:
        assert proxy.wait_ready(time.perf_counter() + 10).started
        assert accepts(first) and not accepts(second)  # the control: the second is not there yet
    finally:
        proxy.proc.kill()
        proxy.proc.wait()
    proxy, first, second, never = _two_listeners(tmp_path, delay=0.5)
    proxy.ports = (first, second)
    try:
        assert proxy.wait_ready(time.perf_counter() + 10).started
        assert accepts(second)
    finally:
        proxy.proc.kill()
        proxy.proc.wait()
    # A listener that never binds is its cell's to report: the wait is bounded, the proxy ready.
    proxy, first, second, never = _two_listeners(tmp_path, delay=0.0)
    proxy.ports = (first, never)
    try:
        t0 = time.perf_counter()
        assert proxy.wait_ready(time.perf_counter() + 10).started
        assert nsworker.OTHER_PORTS_S <= time.perf_counter() - t0 < nsworker.OTHER_PORTS_S + 2
    finally:
        proxy.proc.kill()
        proxy.proc.wait()
