"""The host <-> worker contract: what one side writes, the other reads back unchanged."""

from __future__ import annotations

import json

import pytest

from harness.proxies import Installation
from harness.runtimes.contract import (
    CellEvent,
    CellSpec,
    DoneEvent,
    FatalEvent,
    HoldSpec,
    ProxyEvent,
    ProxySpec,
    SandboxSpec,
    WorkerJob,
    dump_event,
    dump_job,
    load_event,
    load_job,
)
from harness.scenarios import resolve
from harness.vocab import Outcome, ProxyKind


def _job() -> WorkerJob:
    inst = Installation(
        ProxyKind.NGINX,
        "1.22.1",
        "/opt/nginx/sbin/nginx",
        "cache",
        "OpenSSL 3.0.15",
        env=(("LD_LIBRARY_PATH", "/opt/nginx/lib"),),
        paths=("/opt/nginx",),
        root="/opt/root",
    )
    proxy = ProxySpec(
        "nginx/good",
        "nginx",
        20000,
        "/lab/proxies/nginx--good",
        "/lab/proxies/nginx--good/error.log",
        "/lab/proxies/nginx--good/nginx.conf",
        installation=inst,
        env={"SSL_CERT_FILE": "/lab/pki/b.pem"},
        host="proxy-0",
        sandbox=SandboxSpec(("/lab/pki/ca.pem",), ("/lab/pki/k.key",)),
        exit_file="/x/exit",
    )
    return WorkerJob(
        (proxy, ProxySpec("apache/good", "apache", 20001, "/r", "/r/error.log", "/r/httpd.conf", unconfined=True)),
        (
            CellSpec(
                "nginx/good",
                "legit",
                sni_routing=True,
                client_auth=True,
                keepalive=True,
                prime="/loose/",
                backend="api.svc.internal",
                port=443,
                host="www.example.test",
                path="/api/",
                tls=True,
                label=3,
            ),
            CellSpec("apache/good", "rogue-ca"),
        ),
        mode="prepared",
        pki_dir="/lab/pki",
        backend_ip="10.203.0.10",
        seat_ports=(8443, 443),
        seat_host="::",
        seat_control_port=9000,
        addresses=("10.203.0.20",),
        hosts_file="/lab/hosts",
        hosts="127.0.0.1 localhost\n",
        backend_names=("backend-api.internal",),
        start_timeout=30,
        hold=HoldSpec(
            "legit",
            "/lab/control.sock",
            sni_routing=True,
            modes={"client_auth": True},
            backend="api.svc.internal",
            socket_dir="/lab",
        ),
        unconfined=True,
    )


def test_a_job_reads_back_as_written() -> None:
    job = _job()
    assert load_job(dump_job(job)) == job
    assert load_job(dump_job(job).encode()) == job  # a worker reads bytes from stdin


def test_every_event_reads_back_as_written() -> None:
    events = [
        ProxyEvent("nginx/good", True, start_s=0.012),
        ProxyEvent("haproxy/defaults", False, message="[ALERT] no CA file", output="...", died=False),
        ProxyEvent("apache/good", False, message="killed by SIGKILL", died=True),
        CellEvent(
            "nginx/good",
            "rogue-ca",
            Outcome.BLOCKED,
            502,
            "upstream SSL certificate verify error",
            sni="backend-api.internal",
            tls="TLSv1.3",
            duration_s=0.004,
            connections=1,
            dest="10.203.0.10:8443",
            label=2,
            reuse="reused connection",
            client_cert="CN=p",
            primed="p",
        ),
        DoneEvent(),
        FatalEvent("cannot add the lab address"),
    ]
    for event in events:
        line = dump_event(event)
        assert "\n" not in line
        assert load_event(line) == event
    assert type(load_event(dump_event(events[3]))).__name__ == "CellEvent"
    assert load_event(dump_event(events[3])).outcome is Outcome.BLOCKED  # type: ignore[union-attr]


def test_a_proxy_that_never_listened_gives_its_cells_its_reason() -> None:
    rejected = CellEvent.never_listened(ProxyEvent("k", False, message="[emerg] bad"), "legit")
    assert (rejected.outcome, rejected.reason, rejected.status) == (Outcome.CONFIG_REJECTED, "[emerg] bad", None)
    for how in ({"died": True}, {"timeout": True}):  # killed, out of disk, never listened: not the config's fault
        assert CellEvent.never_listened(ProxyEvent("k", False, message="m", **how), "legit").outcome is Outcome.ERROR


def test_an_unknown_field_is_refused_not_dropped() -> None:
    raw = json.loads(dump_job(_job()))
    raw["proxies"][0]["comand"] = ["nginx"]
    with pytest.raises(ValueError, match="ProxySpec: unknown field"):
        load_job(json.dumps(raw))
    with pytest.raises(ValueError, match="CellEvent: unknown field"):
        load_event(
            json.dumps(
                {
                    "event": "cell",
                    "key": "k",
                    "identity": "legit",
                    "outcome": "served",
                    "status": 200,
                    "reason": "r",
                    "sni_seen": "x",
                }
            )
        )


def test_a_scenario_cell_and_hold_carry_its_seat_modes() -> None:
    sc = resolve("nginx/subdomain-backend")
    cell = CellSpec.of(sc, "wildcard-parent")
    assert (cell.key, cell.identity, cell.backend) == (sc.id, "wildcard-parent", "api.svc.internal")
    hold = HoldSpec.of(sc, "legit", control="/c")
    assert (hold.backend, hold.sni_routing, hold.modes) == ("api.svc.internal", sc.sni_routing, {})
    assert HoldSpec.of(resolve("nginx/good"), "legit", control="/c").backend is None


def test_the_worker_builds_the_command_from_the_installation() -> None:
    spec = _job().proxies[0]
    assert spec.argv()[0] == "/opt/nginx/sbin/nginx"
    assert "/lab/proxies/nginx--good/nginx.conf" in spec.argv()
