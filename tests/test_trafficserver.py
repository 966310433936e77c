"""Apache Traffic Server 9.2 (harness/proxies/trafficserver.py): its scenarios on the real server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import runner, scenarios
from harness.proxies import RenderContext, driver
from harness.runtimes.probe import Response, decide
from harness.vocab import IDENTITY_IDS, LEGITIMATE_IDS, Outcome, ProxyKind

pytestmark = pytest.mark.integration

ATS = driver(ProxyKind.TRAFFICSERVER)
IDS = [s.id for s in scenarios.builtin().values() if s.proxy is ProxyKind.TRAFFICSERVER]
IMPOSTORS = [i for i in IDENTITY_IDS if i not in LEGITIMATE_IDS]


@pytest.fixture(scope="module")
def ats(local_runtime: str) -> runner.Results:
    if not ATS.find_binary():
        msg = f"traffic_server is not installed; run: {ATS.install_hint()}"
        if (
            os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1"
        ):
            pytest.fail(msg)
        pytest.skip(msg)
    return runner.run(scenarios.select(IDS), runtime=local_runtime)


def test_the_scenarios_are_there() -> None:
    variants = {i for i in IDS if i.startswith("trafficserver/")}
    assert {
        "trafficserver/good",
        "trafficserver/permissive-default",
        "trafficserver/properties-signature",
        "trafficserver/policy-disabled",
        "trafficserver/system-bundle",
    } <= variants
    assert len([i for i in IDS if i.startswith("reported/")]) >= 2


def test_every_cell_matches_its_scenario(ats: runner.Results) -> None:
    assert len(ats.cells) == sum(len(scenarios.resolve(i).identities) for i in IDS)
    assert [(c.scenario, c.identity, c.reason) for c in ats.cells if c.outcome is Outcome.ERROR] == []
    assert [(c.scenario, c.identity, c.outcome.value) for c in ats.mismatches] == []


def test_good_serves_legit_and_refuses_every_impostor_with_its_warning(ats: runner.Results) -> None:
    assert ats.cell("trafficserver/good", "legit").outcome is Outcome.SERVED
    for ident in IMPOSTORS:
        cell = ats.cell("trafficserver/good", ident)
        assert cell.outcome is Outcome.BLOCKED, ident
        assert cell.status == 502
        assert "Action=Terminate" in cell.reason and ATS.block_reason(cell.reason), cell.reason


def test_permissive_forwards_every_impostor_and_the_warning_is_the_reason(ats: runner.Results) -> None:
    # The 9.2 default logs the failure and serves anyway (apache/trafficserver#7474).
    for sid in ("trafficserver/permissive-default", "reported/trafficserver-7474"):
        for ident in IMPOSTORS:
            cell = ats.cell(sid, ident)
            assert cell.outcome is Outcome.SPOOFED and cell.status == 200, (sid, ident)
            assert cell.reason.startswith("WARNING: ") and "Action=Continue" in cell.reason, cell.reason
            assert f"response from impostor {ident}" in cell.reason
        no_chain = ats.cell(sid, "legit-no-chain")
        assert no_chain.outcome is Outcome.SERVED and "Action=Continue" in no_chain.reason
        assert ats.cell(sid, "legit").reason == "response from legit"


def test_disabled_and_signature_only_log_nothing_for_what_they_let_through(ats: runner.Results) -> None:
    for ident in IMPOSTORS:
        assert ats.cell("trafficserver/policy-disabled", ident).reason == f"response from impostor {ident}"
    sig = "trafficserver/properties-signature"
    for ident in ("wrong-name", "ip-san", "wildcard"):
        assert ats.cell(sig, ident).reason == f"response from impostor {ident}"
    assert ats.cell(sig, "expired").outcome is Outcome.BLOCKED


def test_pristine_host_checks_the_clients_host(ats: runner.Results) -> None:
    cell = ats.cell("trafficserver/pristine-host", "legit")
    assert cell.outcome is Outcome.BLOCKED and cell.sni == "www.trustlab.test"
    assert "SNI (www.trustlab.test) not in certificate" in cell.reason


def test_the_fix_of_pr_7587_gives_the_good_outcomes(ats: runner.Results) -> None:
    fixed = {c.identity: c.outcome for c in ats.cells if c.scenario == "reported/trafficserver-7587"}
    good = {c.identity: c.outcome for c in ats.cells if c.scenario == "trafficserver/good"}
    assert fixed == {i: good[i] for i in fixed}  # the identities both run (good also runs optional ones)


# -- without a server --------------------------------------------------------------------


def test_decide_keeps_a_logged_failure_for_a_forwarded_response() -> None:
    line = "WARNING: Core server certificate verification failed for (x). Action=Continue Error=self-signed"
    outcome, why = decide(
        presented="self-signed", response=Response(200, "self-signed"), block_reason=None, warning=line
    )
    assert outcome is Outcome.SPOOFED and why.startswith(line)
    outcome, why = decide(presented="self-signed", response=Response(200, "self-signed"), block_reason=None)
    assert (outcome, why) == (Outcome.SPOOFED, "response from impostor self-signed")
    outcome, why = decide(presented="legit", response=Response(200, "legit"), block_reason=None, warning=line)
    assert outcome is Outcome.SERVED and line in why


def test_ready_only_once_the_host_file_is_loaded() -> None:
    early = "NOTE: Traffic Server is fully initialized.\nNOTE: traffic server running\n"
    loaded = "DEBUG: <HostDB.cc:2184 (ParseHostFile)> (hostdb) Loading host file '/etc/hosts'\n"
    assert not ATS.ready("127.0.0.1", 20000, lambda: early)
    assert ATS.ready("127.0.0.1", 20000, lambda: loaded) is True


def test_render_writes_a_config_directory(tmp_path: Path) -> None:
    sc = scenarios.resolve("trafficserver/good")
    ctx = RenderContext(
        run_dir=str(tmp_path), listen="127.0.0.1:20001", ca="/lab/ca.pem", bundle="/lab/b.pem", backend_ip="10.203.0.10"
    )
    records = ATS.render(sc, ctx)
    assert "CONFIG proxy.config.http.server_ports STRING 20001:ip-in=127.0.0.1" in records
    assert "CONFIG proxy.config.ssl.client.verify.server.policy STRING ENFORCED" in records
    assert "CONFIG proxy.config.ssl.client.CA.cert.filename STRING /lab/ca.pem" in records
    files = ATS.extra_files(sc, ctx)
    assert set(files) == {"remap.config", "ip_allow.yaml", "storage.config"}
    assert "map / https://backend-api.internal:8443/" in files["remap.config"]
    assert ATS.environment(str(tmp_path)) == {"PROXY_CONFIG_CONFIG_DIR": str(tmp_path)}
    ip = scenarios.parse(
        {"proxy": "trafficserver", "title": "t", "target": "ip", "expected": {"legit": "blocked"}},
        scenario_id="x/y",
        where="x.toml",
    )
    assert "map / https://10.203.0.10:8443/" in ATS.extra_files(ip, ctx)["remap.config"]


def test_a_client_session_it_cannot_create_ends_the_wait_for_a_verification_line() -> None:
    """Traffic Server with a CA file it cannot load answers every request 502 with its own error
    line and never a verification line: the lab stops waiting there (a refusal graded as fast as
    a pass, issue 27), and only there."""
    line = "[Dec  7 22:31:07.123] [ET_NET 0] ERROR: failed to create SSL client session"
    assert ATS.refused(line) and ATS.block_reason(line) is None
    verify = "WARNING: Core server certificate verification failed for (backend-api.internal)"
    assert not ATS.refused(verify) and ATS.block_reason(verify)
    assert not any(driver(k).refused(line) for k in ProxyKind if k is not ProxyKind.TRAFFICSERVER)
