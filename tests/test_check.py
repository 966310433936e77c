"""trustlab check and audit on realistic, cluttered configs: real verdicts, line numbers, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from harness.audit import audit
from harness.check import check
from harness.cli import main
from harness.vocab import IDENTITY_IDS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "configs"
IMPOSTORS = [i for i in IDENTITY_IDS if i not in ("legit", "legit-no-chain")]

# (proxy, file, outcome per identity as the real servers give it; "*" = every other impostor)
CASES = [
    ("nginx", "nginx-upstream-good.conf", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    # proxy_ssl_name with a port: nginx strips it (nginx-tests proxy_ssl_name.t; issue 24).
    ("nginx", "nginx-ssl-name-with-port.conf", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("nginx", "nginx-ip-host-sni.conf", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
    ("nginx", "nginx-var-ca-without-verify.conf", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
    ("apache", "apache-vhost-good.conf", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    # A client certificate directory (hashed, like CAPath): adapted like the File form (issue 24).
    ("apache", "apache-machine-cert-path.conf", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    ("apache", "apache-seed-recipe.conf", {"legit": "blocked", "*": "blocked"}),
    ("apache", "apache-everything-off.conf", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
    ("haproxy", "haproxy-good.cfg", {"legit": "served", "wildcard": "spoofed", "*": "blocked"}),
    (
        "haproxy",
        "haproxy-ca-only.cfg",
        {"legit": "served", "wrong-name": "spoofed", "ip-san": "spoofed", "wildcard": "spoofed", "*": "blocked"},
    ),
    ("haproxy", "haproxy-verify-none.cfg", {"legit": "served", "legit-no-chain": "served", "*": "spoofed"}),
]


@pytest.mark.integration
@pytest.mark.parametrize(("proxy", "name", "want"), CASES, ids=[c[1] for c in CASES])
def test_check_real_verdicts(local_runtime: str, proxy: str, name: str, want: dict[str, str]) -> None:
    result = check(proxy, CONFIGS / name)
    assert result.rejected is None, result.rejected
    got = {c.identity: c.outcome.value for c in result.cells}
    expected = {i: want.get(i, want["*"] if i != "legit-no-chain" else "blocked") for i in IDENTITY_IDS}
    assert got == expected, result.summary()
    good = expected["legit"] == "served" and all(expected[i] == "blocked" for i in IMPOSTORS if i != "wildcard")
    assert result.ok is False  # strict by default: wildcard counts
    assert check(proxy, CONFIGS / name, accept=("wildcard",)).ok is good


@pytest.mark.integration
def test_check_several_upstreams_each_probed(local_runtime: str) -> None:
    """A pool of two (each probed with the other marked down), an exact IP location, a regex location."""
    result = check("nginx", CONFIGS / "nginx-multi-upstream.conf")
    ups = result.upstreams
    assert len(ups) == 4, ups
    by = {(u, c.identity): c for u in ups for c in result.cells if c.upstream == u}
    pool_a, pool_b, exact, regex = ups
    for up in (pool_a, pool_b):
        assert by[(up, "legit")].outcome.value == "served"
        assert by[(up, "rogue-ca")].outcome.value == "blocked"
        assert by[(up, "legit")].sni == "a.svc.internal"  # proxy_ssl_name
    assert by[(exact, "rogue-ca")].outcome.value == "spoofed"  # no proxy_ssl_verify
    assert by[(regex, "legit")].outcome.value == "served"  # reached through /v0/api/...
    assert by[(regex, "public-ca")].outcome.value == "spoofed"  # system bundle
    assert by[(regex, "rogue-ca")].outcome.value == "blocked"
    assert any("max_fails=0 on the probed server" in n for n in result.adaptations)


@pytest.mark.integration
def test_check_haproxy_routes_and_pools(local_runtime: str) -> None:
    result = check("haproxy", CONFIGS / "haproxy-multi-backend.cfg")
    ups = result.upstreams
    assert [u.split(" (")[0] for u in ups] == [
        "backend be_api server api1 api-1.svc.internal:8443",
        "backend be_api server api2 api-2.svc.internal:8443",
        "backend be_admin server adm 10.9.9.9:9000",
    ]  # be_web's server is no-ssl: not an HTTPS upstream
    for up in ups[:2]:
        cells = {c.identity: c for c in result.cells if c.upstream == up}
        assert cells["legit"].outcome.value == "served" and cells["legit"].sni == "api.svc.internal"
        assert cells["wrong-name"].outcome.value == "blocked"  # verifyhost
    admin = {c.identity: c.outcome.value for c in result.cells if c.upstream == ups[2]}
    assert admin["rogue-ca"] == "spoofed"  # verify none, reached through hdr(host) admin.example.com


@pytest.mark.integration
def test_check_apache_balancer_and_capath(local_runtime: str) -> None:
    result = check("apache", CONFIGS / "apache-balancer.conf")
    ups = result.upstreams
    assert len(ups) == 3
    for up in ups[:2]:
        cells = {c.identity: c.outcome.value for c in result.cells if c.upstream == up}
        assert cells["legit"] == "served" and cells["rogue-ca"] == "blocked"
        assert cells["public-ca"] == "spoofed"  # SSLProxyCACertificatePath /etc/ssl/certs: the OS store
    ip = {c.identity: c.outcome.value for c in result.cells if c.upstream == ups[2]}
    assert ip["legit"] == "blocked" and ip["ip-san"] == "blocked"  # Apache 2.4 refuses IP-SAN for an IP


@pytest.mark.integration
def test_check_adaptations_said(local_runtime: str) -> None:
    result = check("nginx", CONFIGS / "nginx-upstream-good.conf")
    notes = "\n".join(result.adaptations)
    assert "/etc/nginx/tls/internal-pki.pem stands for the lab's internal root" in notes
    assert "listen 443 ssl http2 -> listen 127.0.0.1:" in notes
    bundle = check("nginx", CONFIGS / "nginx-ip-host-sni.conf")
    assert any("ca-certificates.crt stands for the lab's system bundle" in n for n in bundle.adaptations)
    # The gist's proxy_ssl_name $host: the client's Host became the SNI.
    assert {c.sni for c in bundle.cells} == {"app.example.com"}


@pytest.mark.integration
def test_check_json_shape_and_exit_codes(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert main(["check", "haproxy", str(CONFIGS / "haproxy-verify-none.cfg"), "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert {"proxy", "config", "adaptations", "cells"} <= set(data)
    assert data["proxy"] == "haproxy" and isinstance(data["adaptations"], list)
    assert {tuple(sorted(c)) for c in data["cells"]} == {
        ("identity", "line", "outcome", "reason", "sni", "status", "upstream")
    }
    assert len(data["cells"]) == len(IDENTITY_IDS)
    assert main(["check", "haproxy", str(CONFIGS / "haproxy-good.cfg"), "--accept", "wildcard"]) == 0


@pytest.mark.integration
def test_config_rejected_by_the_proxy_is_exit_2_verbatim(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "nginx.conf"
    cfg.write_text(
        "server {\n listen 80;\n location / {\n  proxy_pass https://api.internal;\n  proxy_ssl_verify on;\n }\n}\n"
    )
    assert main(["check", "nginx", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nginx: [emerg] no proxy_ssl_trusted_certificate for proxy_ssl_verify" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "nginx", "/nonexistent/nginx.conf"],
        ["check", "squid", str(CONFIGS / "haproxy-good.cfg")],
        ["check", "nginx", str(CONFIGS)],
        ["audit", "/nonexistent.conf"],
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("trustlab: error:") and "Traceback" not in err


def test_nginx_syntax_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "broken.conf"
    cfg.write_text("server {\n  location / {\n    proxy_pass https://x\n  }\n")
    assert main(["check", "nginx", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:" in err and "nginx syntax" in err


def test_no_https_upstream_is_bad_input(local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "plain.conf"
    cfg.write_text("server { listen 80; location / { proxy_pass http://app:8080; } }\n")
    assert main(["check", "nginx", str(cfg)]) == 2
    assert "no HTTPS upstream" in capsys.readouterr().err


# -- audit ----------------------------------------------------------------------------------
AUDITS = [
    (
        "nginx-ip-host-sni.conf",
        {("nginx-ca-without-verify", 13), ("nginx-client-controlled-name", 15), ("nginx-system-bundle", 12)},
    ),
    ("nginx-var-ca-without-verify.conf", {("nginx-ca-without-verify", 13)}),
    ("nginx-upstream-good.conf", set()),
    ("apache-seed-recipe.conf", {("apache-verify-depth", 29), ("apache-preserve-host", 28)}),
    (
        "apache-everything-off.conf",
        {("apache-verify-none", 9), ("apache-name-check-off", 10), ("apache-expire-check-off", 12)},
    ),
    ("apache-vhost-good.conf", set()),
    ("haproxy-ca-only.cfg", {("haproxy-no-name-check", 24)}),
    ("haproxy-verify-none.cfg", {("haproxy-verify-none", 13)}),
    ("haproxy-good.cfg", set()),
    ("haproxy-multi-backend.cfg", {("haproxy-verify-none", 18)}),
    ("apache-balancer.conf", {("apache-system-bundle", 10), ("apache-ip-target", 17)}),
    (
        "nginx-multi-upstream.conf",
        {
            ("nginx-verify-off", 18),
            ("nginx-ip-target-no-name", 18),
            ("nginx-system-bundle", 23),
            ("nginx-verify-depth", 11),
            ("nginx-verify-depth", 21),
            ("nginx-no-sni", 21),
        },
    ),
]


@pytest.mark.parametrize(("name", "want"), AUDITS, ids=[a[0] for a in AUDITS])
def test_audit_findings_with_lines(name: str, want: set[tuple[str, int]]) -> None:
    report = audit(CONFIGS / name)
    assert {(f.rule, f.line) for f in report.findings} == want
    from harness.scenarios import builtin

    for f in report.findings:
        assert f.scenario in builtin(), f"{f.rule} links to unknown scenario {f.scenario}"
        assert f.fix and f.severity in ("high", "medium", "low")


def test_audit_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(CONFIGS / "haproxy-verify-none.cfg")]) == 1
    out = capsys.readouterr().out
    assert f"{CONFIGS / 'haproxy-verify-none.cfg'}:13: HIGH haproxy-verify-none" in out
    assert "trustlab run haproxy/verify-none" in out
    assert main(["audit", str(CONFIGS / "apache-vhost-good.conf")]) == 0
    # medium only (depth, preserve host): exit 0
    assert main(["audit", str(CONFIGS / "apache-seed-recipe.conf"), "--proxy", "apache"]) == 0


@pytest.mark.integration
def test_audit_prove(local_runtime: str) -> None:
    report = audit(CONFIGS / "haproxy-ca-only.cfg", prove=True)
    assert report.proof is not None and not report.proof.ok
    assert report.proof.outcome("wrong-name").value == "spoofed"


# -- the pytest plugin, through its example -------------------------------------------------
@pytest.mark.integration
def test_plugin_example_runs(each_runtime: str) -> None:
    """The example project passes on each runtime (chosen with TRUSTLAB_RUNTIME)."""
    registered = any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = [] if registered else ["-p", "harness.pytest_plugin"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TRUSTLAB_RUNTIME": each_runtime,
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *plugin,
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "examples" / "guard-your-config"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT / "examples" / "guard-your-config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_plugin_on_the_remote_runtime_skips_with_one_reason() -> None:
    """TRUSTLAB_RUNTIME=remote (a classroom server): the lab service runs no config file, so each
    check is skipped with the reason, and fails with it under TRUSTLAB_REQUIRE=1; nothing runs."""
    registered = any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = [] if registered else ["-p", "harness.pytest_plugin"]
    for require, want in (("", "2 skipped"), ("1", "2 failed")):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "TRUSTLAB_RUNTIME": "remote",
            "TRUSTLAB_REQUIRE": require,
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                *plugin,
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                str(ROOT / "examples" / "guard-your-config"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT / "examples" / "guard-your-config",
        )
        assert want in proc.stdout, proc.stdout + proc.stderr
        assert "which the remote runtime (a classroom server's lab service) does not run" in proc.stdout


def test_ssl_name_host_strips_a_port_as_nginx_does() -> None:
    from harness.configs.nginx import ssl_name_host

    assert ssl_name_host("backend:123") == "backend"
    assert ssl_name_host("backend-api.internal") == "backend-api.internal"
    assert ssl_name_host("[2001:db8::1]:8443") == "[2001:db8::1]"
    assert ssl_name_host("[2001:db8::1]") == "[2001:db8::1]"


def test_check_identity_options_refuse_what_check_cannot_run() -> None:
    from harness.cli import check_identities
    from harness.errors import LabError

    assert check_identities([]) == tuple(IDENTITY_IDS)
    assert check_identities(["cn-only"])[-1] == "cn-only"
    assert check_identities(["cn-only"], every=True)[len(IDENTITY_IDS) :] == (
        "legit-deep",
        "cn-only",
        "san-other-cn-backend",
    )
    for bad in ("rogue-ca", "revoked", "client-ca-signed", "rouge-ca"):
        with pytest.raises(LabError, match="--identity"):
            check_identities([bad])


@pytest.mark.integration
def test_check_runs_optional_identities(local_runtime: str, tmp_path: Path) -> None:
    """nginx's name check reads the CN when there is no DNS SAN: --identity cn-only shows it (issue 24)."""
    out = tmp_path / "check.json"
    code = main(
        [
            "check",
            "nginx",
            str(CONFIGS / "nginx-upstream-good.conf"),
            "--runtime",
            local_runtime,
            "--identity",
            "cn-only",
            "--identity",
            "san-other-cn-backend",
            "--accept",
            "wildcard",
            "--json",
            str(out),
        ]
    )
    cells = {c["identity"]: c["outcome"] for c in json.loads(out.read_text())["cells"]}
    assert code == 1
    assert (cells["cn-only"], cells["san-other-cn-backend"]) == ("spoofed", "blocked")


# -- revocation (issue 24): a config's CRL is kept, pointed at the lab's CRLs, and `revoked` runs ----------

ONE_CRL = "-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n"


def _with_crl(tmp_path: Path, name: str, old: str, new: str, *, beside: str | None = None) -> Path:
    text = (CONFIGS / name).read_text()
    assert old in text
    out = tmp_path / name
    out.write_text(text.replace(old, new, 1))
    if beside:
        (tmp_path / beside).write_text(ONE_CRL)  # one CRL: the config's own file holds the intermediate's only
    return out


CRL_CASES = [
    # (proxy, config, the line that gets a CRL, ..., a one-CRL file beside it?, legit, revoked)
    (
        "nginx",
        "nginx-upstream-good.conf",
        "proxy_ssl_verify on;",
        "proxy_ssl_verify on;\n            proxy_ssl_crl /etc/nginx/crl/all.pem;",
        None,
        "served",
        "blocked",
    ),
    # nginx checks a CRL for every certificate of the chain: the root's is missing, legit is refused too.
    (
        "nginx",
        "nginx-upstream-good.conf",
        "proxy_ssl_verify on;",
        "proxy_ssl_verify on;\n            proxy_ssl_crl /etc/nginx/crl/inter.pem;",
        "inter.pem",
        "blocked",
        "blocked",
    ),
    ("haproxy", "haproxy-good.cfg", "ca-file", "crl-file /etc/haproxy/crl.pem ca-file", None, "served", "blocked"),
    (
        "apache",
        "apache-vhost-good.conf",
        "SSLProxyCheckPeerExpire on",
        "SSLProxyCheckPeerExpire on\n    SSLProxyCARevocationFile /etc/apache2/crl.pem\n"
        "    SSLProxyCARevocationCheck chain",
        None,
        "served",
        "blocked",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("proxy", "name", "old", "new", "beside", "legit", "revoked"),
    CRL_CASES,
    ids=["nginx-chain", "nginx-intermediate-only", "haproxy-chain", "apache-chain"],
)
def test_check_keeps_the_crl_and_runs_revoked(
    local_runtime: str,
    tmp_path: Path,
    proxy: str,
    name: str,
    old: str,
    new: str,
    beside: str | None,
    legit: str,
    revoked: str,
) -> None:
    result = check(proxy, _with_crl(tmp_path, name, old, new, beside=beside), runtime=local_runtime)
    got = {c.identity: c.outcome.value for c in result.cells}
    assert (got["legit"], got.get("revoked")) == (legit, revoked), result.summary()
    assert any("revoked is run" in n for n in result.adaptations), result.adaptations


@pytest.mark.integration
def test_without_a_crl_revoked_is_not_run(local_runtime: str) -> None:
    result = check("nginx", CONFIGS / "nginx-upstream-good.conf", runtime=local_runtime)
    assert "revoked" not in {c.identity for c in result.cells}
