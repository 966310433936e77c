"""Caddy end to end: the driver's facts, the Caddyfile/JSON model that check and audit share, the
audit rules, and real Caddy runs (scenarios, check on cluttered configs, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import runner, scenarios
from harness.audit import SEVERITIES, audit
from harness.check import check
from harness.cli import main
from harness.configs import caddy as cf
from harness.errors import ConfigError
from harness.proxies import driver
from harness.vocab import IDENTITY_IDS, Outcome

CONFIGS = Path(__file__).parent / "configs" / "caddy"
CADDY = driver("caddy")


@pytest.fixture(scope="session")
def caddy_runtime(local_runtime: str) -> str:
    """The local runtime with a Caddy binary (a failure in CI, where the proxies extra installs it)."""
    from tests.conftest import REQUIRE_PROXIES

    if not CADDY.find_binary():
        msg = f"caddy not installed; run: {CADDY.install_hint()}"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    return local_runtime


# -- driver facts ------------------------------------------------------------------------------


def test_driver_environment_points_go_at_the_lab_bundle_only() -> None:
    env = CADDY.environment("/lab/run", "/lab/pki")
    assert env["SSL_CERT_FILE"] == "/lab/pki/system-bundle.pem"
    assert env["SSL_CERT_DIR"].startswith("/lab/run/")  # a directory that does not exist
    assert env["XDG_DATA_HOME"] == env["XDG_CONFIG_HOME"] == "/lab/run"
    assert "/etc/ssl" not in json.dumps(env)


def test_command_runs_the_given_binary_and_says_why_on_refusal() -> None:
    from harness.proxies.base import Installation

    inst = Installation(CADDY.kind, "", "/usr/local/bin/caddy", "image")
    argv = CADDY.command("/lab/run/Caddyfile", "/lab/run", inst)
    assert argv[0] == "/bin/sh" and argv[-2:] == ["/usr/local/bin/caddy", "/lab/run/Caddyfile"]
    assert '"$0" run --config "$1" --adapter caddyfile' in argv[2] and '"$0" validate' in argv[2]
    assert "--adapter" not in CADDY.command("/lab/run/caddy.json", "/lab/run", inst)[2]


def test_startup_message_is_caddys_own_line() -> None:
    out = (
        '{"level":"info","msg":"using config from file"}\n'
        '{"level":"error","ts":1.0,"msg":"adapting config using caddyfile: unrecognized subdirective tls_x, '
        'at /r/Caddyfile:5"}\n'
    )
    assert (
        CADDY.startup_message(out)
        == "adapting config using caddyfile: unrecognized subdirective tls_x, at /r/Caddyfile:5"
    )
    assert CADDY.startup_message("Error: adapting config using caddyfile: bad\n").startswith("Error: adapting")


@pytest.mark.parametrize(
    "line",
    [
        '{"level":"error","logger":"http.log.error","msg":"tls: failed to verify certificate: x509: certificate '
        'signed by unknown authority","status":502}',
        '{"level":"error","logger":"http.log.error","msg":"x509: certificate is valid for a, not b","status":502}',
    ],
)
def test_block_reason_is_gos_verification_error(line: str) -> None:
    reason = CADDY.block_reason(line)
    assert reason is not None and "x509: certificate" in reason and '"' not in reason


def test_no_block_reason_without_a_verification_error() -> None:
    assert CADDY.block_reason('{"level":"error","msg":"dial tcp 10.0.0.1:8443: connect: connection refused"}') is None


# -- the Caddyfile lexer and parser --------------------------------------------------------------


def test_lexer_quotes_backticks_heredocs_comments_continuations(tmp_path: Path) -> None:
    text = (
        'a "two words" `raw {x}` # a comment\n'
        "b one \\\n  two\n"
        "respond <<HTML\n  <p>hi</p>\n  HTML 200\n"
        "c {http.request.host}\n"
    )
    lines = cf.tokenize(text, "f")
    assert [t.text for t in lines[0]] == ["a", "two words", "raw {x}"]
    assert [t.text for t in lines[1]] == ["b", "one", "two"]
    assert lines[2][0].text == "respond" and "<p>hi</p>" in lines[2][1].text and lines[2][2].text == "200"
    assert [t.text for t in lines[3]] == ["c", "{http.request.host}"] and lines[3][0].line == 7


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("example.com {\n\treverse_proxy https://x {\n", "line 2: '{' is never closed"),
        ("example.com {\n}\n}\n", "line 3: '}' closes nothing"),
        ('example.com {\n\trespond "open\n}\n', "line 2: unterminated quoted string"),
        ("user www-data;\nhttp {\n}\n", "outside a site block"),
    ],
)
def test_bad_caddyfiles_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        cf.load(path)
    assert needle in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_model_of_a_cluttered_caddyfile() -> None:
    cfg = cf.load(CONFIGS / "Caddyfile.homelab")
    assert cfg.format == "caddyfile" and set(cfg.snippets) == {"secure_headers"}
    by_site = {rp.site[0]: rp for rp in cfg.proxies}
    assert set(by_site) == {"unifi.home.example.org", "pve.home.example.org", "cloud.home.example.org"}
    unifi, pve, cloud = (
        by_site["unifi.home.example.org"],
        by_site["pve.home.example.org"],
        by_site["cloud.home.example.org"],
    )
    assert unifi.setting("tls_insecure_skip_verify").line == 19  # type: ignore[union-attr]
    # `tls` and no scheme: TLS to the port as written; the literal server name is the checked name.
    assert pve.tls and [(t.host, t.port) for t in pve.tls_targets()] == [("192.168.1.30", 8006)]
    assert pve.setting("tls_server_name").args == ["pve.home.example.org"]  # type: ignore[union-attr]
    assert cloud.tls and not cloud.settings  # https:// and no CA: the system store
    assert [u.name for u in cf.upstreams_of(cfg, {})] == [
        "backend-api.internal",
        "pve.home.example.org",
        "nextcloud.lan",
    ]


def test_json_and_caddyfile_give_one_model() -> None:
    """The same proxy written both ways reads the same to audit and check."""
    js, cfile = cf.load(CONFIGS / "caddy.json"), cf.load(CONFIGS / "Caddyfile.good")
    (a,), (b,) = js.proxies, cfile.proxies
    assert a.tls and b.tls
    assert [(t.host, t.port, t.scheme) for t in a.tls_targets()] == [("backend-api.internal", 8443, "https")]
    assert [(t.host, t.port, t.scheme) for t in b.tls_targets()] == [("backend-api.internal", 8443, "https")]
    assert a.setting("tls_trust_pool").args == b.setting("tls_trust_pool").args  # type: ignore[union-attr]
    assert a.site == ["api.example.com:443"] and b.site == ["api.example.com"]


# -- audit ---------------------------------------------------------------------------------------

AUDITS = [
    (
        "Caddyfile.homelab",
        {("caddy-skip-verify", 19), ("caddy-trusted-ca-certs-deprecated", 29), ("caddy-system-store", 39)},
    ),
    ("Caddyfile.host-sni", {("caddy-client-controlled-name", 8)}),
    ("Caddyfile.good", set()),
    ("caddy.json", set()),
    ("Caddyfile.lb", {("caddy-system-bundle", 11)}),
]


@pytest.mark.parametrize(("name", "want"), AUDITS, ids=[a[0] for a in AUDITS])
def test_audit_findings_and_lines(name: str, want: set[tuple[str, int]]) -> None:
    report = audit(CONFIGS / name)
    assert report.proxy == "caddy"
    assert {(f.rule, f.line) for f in report.findings} == want
    for f in report.findings:
        assert f.scenario in scenarios.builtin(), f.scenario
        assert f.help.startswith("https://caddyserver.com/docs/") and f.fix and f.severity in SEVERITIES


def test_audit_of_json_flags_skip_verify(tmp_path: Path) -> None:
    data = json.loads((CONFIGS / "caddy.json").read_text())
    handler = data["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]["routes"][0]["handle"][0]
    handler["transport"]["tls"] = {"insecure_skip_verify": True}
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(data, indent=2))
    assert [f.rule for f in audit(path).findings] == ["caddy-skip-verify"]
    assert main(["audit", str(path)]) == 1


def test_the_guess_tells_a_caddyfile_from_an_nginx_config() -> None:
    from harness.audit import guess_proxy

    for name in ("Caddyfile.homelab", "Caddyfile.good", "Caddyfile.host-sni", "caddy.json"):
        assert guess_proxy((CONFIGS / name).read_text()).value == "caddy", name
    nginx = (CONFIGS.parent / "nginx-upstream-good.conf").read_text()
    assert guess_proxy(nginx).value == "nginx"


# -- real Caddy: scenarios --------------------------------------------------------------------------


@pytest.mark.integration
def test_every_caddy_scenario_as_the_real_server_does_it(caddy_runtime: str) -> None:
    chosen = scenarios.select(proxies=["caddy"])
    assert len(chosen) >= 13 and sum(s.id.startswith("reported/caddy-") for s in chosen) >= 3
    results = runner.run(chosen, runtime=caddy_runtime)
    differ = [c for c in results.cells if c.differs]
    assert not differ, [(c.scenario, c.identity, c.outcome.value, c.reason) for c in differ]
    blocked = [c for c in results.cells if c.outcome is Outcome.BLOCKED]
    assert blocked and all("x509: " in c.reason for c in blocked)
    good = {c.identity: c.outcome for c in results.cells if c.scenario == "caddy/good"}
    assert good["legit"] is Outcome.SERVED and good["public-ca"] is Outcome.BLOCKED
    # No CA configured: Go's system store, which in the lab is the lab's bundle, not the host's.
    store = {c.identity: c.outcome for c in results.cells if c.scenario == "caddy/system-store"}
    assert store["legit"] is Outcome.SERVED and store["public-ca"] is Outcome.SPOOFED


# -- real Caddy: check -------------------------------------------------------------------------------

CHECKS = [
    ("Caddyfile.good", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("caddy.json", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("Caddyfile.host-sni", {"*": "blocked"}),
]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "want"), CHECKS, ids=[c[0] for c in CHECKS])
def test_check_real_verdicts(caddy_runtime: str, name: str, want: dict[str, str]) -> None:
    result = check("caddy", CONFIGS / name)
    assert result.rejected is None, result.rejected
    got = {c.identity: c.outcome.value for c in result.cells}
    assert got == {i: want.get(i, want["*"]) for i in IDENTITY_IDS}, result.summary()
    assert any("stands for the lab's internal root" in n for n in result.adaptations)


@pytest.mark.integration
def test_check_several_upstreams_of_a_homelab(caddy_runtime: str) -> None:
    result = check("caddy", CONFIGS / "Caddyfile.homelab")
    assert len(result.upstreams) == 3 and not result.ok
    unifi, pve, cloud = result.upstreams
    assert "192.168.1.20:8443" in unifi and "192.168.1.30:8006" in pve and "nextcloud.lan" in cloud
    assert result.outcome("rogue-ca", "192.168.1.20") is Outcome.SPOOFED  # tls_insecure_skip_verify
    assert result.outcome("legit", "192.168.1.30") is Outcome.SERVED  # tls_server_name fixes the IP target
    assert result.outcome("wrong-name", "192.168.1.30") is Outcome.BLOCKED
    assert result.outcome("public-ca", "nextcloud.lan") is Outcome.SPOOFED  # the system store
    assert result.outcome("public-ca", "192.168.1.30") is Outcome.BLOCKED
    notes = "\n".join(result.adaptations)
    assert "global options (email, acme_ca) replaced by the lab's" in notes
    assert "/etc/caddy/pve-root-ca.pem stands for the lab's internal root" in notes


@pytest.mark.integration
def test_check_probes_each_upstream_of_a_pool_behind_a_named_matcher(caddy_runtime: str) -> None:
    result = check("caddy", CONFIGS / "Caddyfile.lb")
    assert [u.split()[0] for u in result.upstreams] == ["https://api-1.internal:8443", "https://api-2.internal:8443"]
    for up in ("api-1", "api-2"):
        assert result.outcome("legit", up) is Outcome.SERVED  # the request reached @api's /api/ path
        assert result.outcome("public-ca", up) is Outcome.SPOOFED  # the OS bundle as trust pool
        assert result.outcome("rogue-ca", up) is Outcome.BLOCKED
    notes = "\n".join(result.adaptations)
    assert "only upstream api-1.internal:8443 of this reverse_proxy is probed" in notes
    assert "fail_duration 30s dropped" in notes


@pytest.mark.integration
def test_check_exit_codes(caddy_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert main(["check", "caddy", str(CONFIGS / "Caddyfile.homelab"), "--runtime", "local", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["proxy"] == "caddy"
    assert main(["check", "caddy", str(CONFIGS / "Caddyfile.good"), "--runtime", "local", "--accept", "wildcard"]) == 0
    assert main(["check", "caddy", str(CONFIGS / "caddy.json"), "--runtime", "local", "--accept", "wildcard"]) == 0


@pytest.mark.integration
def test_a_config_caddy_refuses_is_exit_2_with_caddys_words(
    caddy_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "Caddyfile"
    cfg.write_text(
        "api.example.com {\n\treverse_proxy https://api.internal {\n\t\ttransport http {\n"
        "\t\t\ttls_trust_me\n\t\t}\n\t}\n}\n"
    )
    assert main(["check", "caddy", str(cfg), "--runtime", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unrecognized subdirective tls_trust_me" in err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("example.com {\n\treverse_proxy localhost:8080\n}\n", "no HTTPS upstream found"),
        ('{"apps": {"http": \n', "invalid JSON"),
        ("example.com {\n\treverse_proxy https://x {\n", "is never closed"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    caddy_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    cfg = tmp_path / "Caddyfile"
    cfg.write_text(text)
    assert main(["check", "caddy", str(cfg), "--runtime", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


@pytest.mark.integration
def test_check_sends_what_request_matchers_ask_for(caddy_runtime: str) -> None:
    """Header, method and query matchers get a request that matches them (issue 24: every cell of
    such a route was `error`); a matcher the lab cannot build for (remote_ip) says so."""
    from harness.configs import caddy as cf

    result = check("caddy", CONFIGS / "Caddyfile.matchers")
    assert result.rejected is None, result.rejected
    by_line: dict[int, dict[str, str]] = {}
    for c in result.cells:
        line = int(c.upstream.rsplit("(line ", 1)[1].rstrip(")"))
        by_line.setdefault(line, {})[c.identity] = c.outcome.value
    assert (by_line[10]["legit"], by_line[10]["rogue-ca"]) == ("served", "blocked")  # @websockets: verified
    assert (by_line[21]["legit"], by_line[21]["rogue-ca"]) == ("served", "spoofed")  # @debug: skip verify
    assert set(by_line[28].values()) == {"error"}
    assert any("remote_ip" in (c.reason or "") for c in result.cells)
    ws, debug = cf.load(CONFIGS / "Caddyfile.matchers").proxies[:2]
    assert (ws.method, dict(ws.headers)) == ("GET", {"Connection": "Upgrade", "Upgrade": "websocket"})
    assert (debug.method, debug.path) == ("POST", "/admin/?debug=1")
