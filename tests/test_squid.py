"""Squid 5.7 (harness/proxies/squid.py): its scenarios on the real server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import runner, scenarios
from harness.proxies import RenderContext, driver
from harness.proxies.squid import PEER_PLUMBING
from harness.vocab import IDENTITY_IDS, LEGITIMATE_IDS, Outcome, ProxyKind

pytestmark = pytest.mark.integration

SQUID = driver(ProxyKind.SQUID)
IDS = [s.id for s in scenarios.builtin().values() if s.proxy is ProxyKind.SQUID]
IMPOSTORS = [i for i in IDENTITY_IDS if i not in LEGITIMATE_IDS]


@pytest.fixture(scope="module")
def squid(local_runtime: str) -> runner.Results:
    if not SQUID.find_binary():
        msg = f"squid is not installed; run: {SQUID.install_hint()}"
        if (
            os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1"
        ):
            pytest.fail(msg)
        pytest.skip(msg)
    return runner.run(scenarios.select(IDS), runtime=local_runtime)


def outcomes(results: runner.Results, sid: str) -> dict[str, Outcome]:
    return {c.identity: c.outcome for c in results.cells if c.scenario == sid}


def test_the_scenarios_are_there() -> None:
    assert {
        "squid/good",
        "squid/default-ca",
        "squid/dont-verify-peer",
        "squid/no-ca",
        "squid/dont-verify-domain",
    } <= set(IDS)
    assert len([i for i in IDS if i.startswith("reported/")]) >= 2


def test_every_cell_matches_its_scenario(squid: runner.Results) -> None:
    assert len(squid.cells) == sum(len(scenarios.resolve(i).identities) for i in IDS)
    assert [(c.scenario, c.identity, c.reason) for c in squid.cells if c.outcome is Outcome.ERROR] == []
    assert [(c.scenario, c.identity, c.outcome.value) for c in squid.mismatches] == []


def test_good_blocks_with_squids_own_reason_and_its_matcher_takes_the_wildcard(squid: runner.Results) -> None:
    assert squid.cell("squid/good", "legit").outcome is Outcome.SERVED
    for ident in IMPOSTORS:
        cell = squid.cell("squid/good", ident)
        if ident == "wildcard":
            # Squid matches names itself (not OpenSSL's X509_check_host): *.internal passes.
            assert cell.outcome is Outcome.SPOOFED
            continue
        assert cell.outcome is Outcome.BLOCKED and cell.status == 503, ident
        assert SQUID.block_reason(cell.reason), cell.reason
    assert "Certificate has expired" in squid.cell("squid/good", "expired").reason
    assert "does not match domainname" in squid.cell("squid/good", "wrong-name").reason


def test_the_system_store_is_the_labs_bundle(squid: runner.Results) -> None:
    # tls-default-ca is on for peers: the lab's system bundle (SSL_CERT_FILE), never the host's store.
    assert squid.cell("squid/good", "public-ca").outcome is Outcome.BLOCKED
    for sid in ("squid/default-ca", "squid/no-ca", "reported/squid-rotating-proxy-23"):
        assert squid.cell(sid, "public-ca").outcome is Outcome.SPOOFED, sid
    assert squid.cell("squid/no-ca-default-off", "legit").outcome is Outcome.BLOCKED
    assert SQUID.environment("/run", "/lab/pki") == {"SSL_CERT_FILE": "/lab/pki/system-bundle.pem"}


def test_dont_verify_domain_changes_nothing_on_a_peer(squid: runner.Results) -> None:
    # The identities both run (good also runs the optional ones).
    peer, good = outcomes(squid, "squid/dont-verify-domain"), outcomes(squid, "squid/good")
    assert peer == {i: good[i] for i in peer}
    assert "does not match domainname" in squid.cell("squid/dont-verify-domain", "wrong-name").reason


def test_dont_verify_peer_accepts_anything_silently(squid: runner.Results) -> None:
    for sid in ("squid/dont-verify-peer", "reported/squid-pfsense-1194"):
        for ident in IMPOSTORS:
            cell = squid.cell(sid, ident)
            assert (cell.outcome, cell.reason) == (Outcome.SPOOFED, f"response from impostor {ident}"), (sid, ident)


def test_an_ip_peer_matches_no_ip_san(squid: runner.Results) -> None:
    cell = squid.cell("squid/ip-target", "ip-san")
    assert cell.outcome is Outcome.BLOCKED and cell.sni is None
    assert "does not match domainname" in cell.reason
    assert squid.cell("squid/ip-target-with-domain", "legit").outcome is Outcome.SERVED


def test_every_peer_line_gets_the_labs_fail_limit(tmp_path: Path) -> None:
    ctx = RenderContext(
        run_dir=str(tmp_path), listen="127.0.0.1:20001", ca="/lab/ca.pem", bundle="/lab/b.pem", backend_ip="10.203.0.10"
    )
    good = SQUID.render(scenarios.resolve("squid/good"), ctx)
    assert (
        "cache_peer backend-api.internal parent 8443 0 no-query no-digest originserver name=be tls "
        f"tls-cafile=/lab/ca.pem tls-default-ca=off {PEER_PLUMBING}" in good
    )
    assert "http_port 127.0.0.1:20001 accel" in good
    reported = SQUID.render(scenarios.resolve("reported/squid-pfsense-1194"), ctx)
    assert reported.count("connect-fail-limit") == 1 and "sslflags=DONT_VERIFY_PEER" in reported


def test_audit_reads_a_peer_line(tmp_path: Path) -> None:
    """squid.conf has a check adapter and audit rules (harness/configs/squid.py; they were refused
    before): a bare ``tls`` peer trusts the system store."""
    from harness.audit import audit

    conf = tmp_path / "squid.conf"
    conf.write_text("http_port 3128 accel\ncache_peer backend-api.internal parent 443 0 originserver tls\n")
    report = audit(conf)
    assert report.proxy == "squid" and "squid-system-store" in report.rules()


# cache.log lines as Squid 5.7 wrote them in the lab image (debug_options ALL,1 83,5 15,2): the
# peer is configured (its lookup ended) and the port listens before the start probe comes back.
_STARTED = (
    "2026/12/07 22:30:21| Configuring Parent backend-api.internal/8443/0\n"
    "2026/12/07 22:30:21.231| Accepting reverse-proxy HTTP Socket connections at conn2 "
    "local=127.0.0.1:3180 remote=[::] FD 10 flags=9\n"
)
_PROBED = (
    "2026/12/07 22:30:21.367| 15,2| neighbors.cc(1308) peerConnectSucceded: "
    "TCP connection to backend-api.internal/8443 succeeded\n"
)


@pytest.mark.parametrize(
    ("log", "ready"),
    [
        ("", False),  # not even configured
        (_STARTED, False),  # listening, the probe still out: a request now gets 502 at once
        (_STARTED + _PROBED, True),
        # A probe refused: settled (the cells then show the peer down, with this line as the tail).
        (_STARTED + "2026/12/07 22:30:21.3| 15,2| neighbors.cc(1284) peerConnectFailedSilent: "
         "TCP connection to backend-api.internal/8443 dead\n", True),
        # No address: Squid never probes it.
        ("2026/12/07 22:29:34| Configuring Parent backend-api.internal/8443/0\n"
         "2026/12/07 22:29:34| WARNING: DNS lookup for 'backend-api.internal' failed!\n", True),
        # Another peer's probe does not make this one ready.
        (_STARTED + _PROBED.replace("backend-api.internal/8443", "backend-api.internal/9443"), False),
        # Squid 6 and later name the peer by its name=.
        ("2026/01/01 00:00:00 kid1| Configuring Parent be\n", False),
        ("2026/01/01 00:00:00 kid1| Configuring Parent be\n"
         "2026/01/01 00:00:00.1 kid1| 15,2| CachePeer.cc(63) noteSuccess: connection to be succeeded\n", True),
    ],
)  # fmt: skip
def test_ready_waits_for_the_peers_start_probe(log: str, ready: bool) -> None:
    """Squid listens before its peer is up (CachePeer::tcp_up starts at 0 until the start probe
    connects): ready means the probe came back (issue: squid/default-ca legit 502 in CI)."""
    assert SQUID.ready("127.0.0.1", 1, lambda: log) is ready


def test_the_lab_logs_the_probe(tmp_path: Path) -> None:
    """Readiness reads section 15 at level 2: the template sets it (``check``'s adapter too:
    tests/golden/adapt/squid)."""
    from harness.proxies.squid import DEBUG_OPTIONS

    ctx = RenderContext(
        run_dir=str(tmp_path), listen="127.0.0.1:20001", ca="/lab/ca.pem", bundle="/lab/b.pem", backend_ip="10.203.0.10"
    )
    assert "15,2" in DEBUG_OPTIONS
    assert f"\ndebug_options {DEBUG_OPTIONS}\n" in SQUID.render(scenarios.resolve("squid/good"), ctx)
