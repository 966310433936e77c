"""The audit rule registry, and the one parse ``check`` and ``audit`` share (HAProxy's
``default-server`` merge, Apache's scopes), checked against what the real servers do."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.audit import audit
from harness.configs import adapter, rules
from harness.configs.base import LabPaths, Ports
from harness.proxies import driver, kinds
from harness.scenarios import builtin
from tests.audit_corpus import CONFIGS, render_scenario


def _registered() -> list[rules.Rule]:
    with_module = [k for k in kinds() if driver(k).config_module]
    return [r for k in with_module for r in rules.rules(k)]


# -- every rule, one test: it fires on the config of the scenario that proves it, and stays silent
# on its kind's good and on its false-positive fixture (tests/configs/fp/<rule id>.<ext>, or a
# directory holding the kind's config file: a config that looks like what the rule flags, and is
# safe). A new rule without either fails here.
RULES = _registered()
FP = CONFIGS / "fp"
#: As a user writes it: the OS bundle by its Debian path (the lab's bundle path looks like none).
DEBIAN_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: The rules that fire on their kind's good scenario, each a hole of that good shown live there.
ON_GOOD = {
    "nginx-verify-depth": "nginx/good's legit-deep cell is blocked (proxy_ssl_verify_depth unset: 1)",
    "envoy-exact-matches-wildcard": "envoy/good's wildcard cell is spoofed (it is the rule's proving scenario)",
    "squid-wildcard-one-label": "squid/good's wildcard cell is spoofed (it is the rule's proving scenario)",
}


def _fired(scenario_id: str, run_dir: Path) -> list[str]:
    sc = builtin()[scenario_id]
    run_dir.mkdir()
    return audit(render_scenario(sc, run_dir, bundle=DEBIAN_BUNDLE), proxy=sc.proxy.value).rules()


def _fp_fixture(r: rules.Rule) -> tuple[Path, str]:
    """The rule's false-positive fixture (the file audit reads) and its whole text."""
    folder = FP / r.id
    if folder.is_dir():
        path = folder / driver(r.proxy).config_name
        return path, "".join(p.read_text() for p in sorted(folder.iterdir()))
    [path] = FP.glob(f"{r.id}.*") or [FP / f"{r.id}.<ext>"]
    assert path.is_file(), f"{r.id}: no false-positive fixture ({path.relative_to(CONFIGS.parent.parent)})"
    return path, path.read_text()


@pytest.mark.parametrize("r", RULES, ids=[r.id for r in RULES])
def test_rule_fires_on_its_proof_and_not_on_good_or_its_false_positive(r: rules.Rule, tmp_path: Path) -> None:
    assert r.scenario in builtin() and builtin()[r.scenario].proxy is r.proxy, f"{r.id}: proving scenario {r.scenario}"
    assert r.id in _fired(r.scenario, tmp_path / "proof"), f"{r.id} does not fire on {r.scenario}"
    on_good = r.id in _fired(f"{r.proxy.value}/good", tmp_path / "good")
    assert on_good == (r.id in ON_GOOD), f"{r.id} on {r.proxy.value}/good: fires {on_good}, ON_GOOD says otherwise"
    path, text = _fp_fixture(r)
    assert r.id not in audit(path, proxy=r.proxy.value).rules(), f"{r.id} fires on its false positive {path.name}"
    # It looks like what the rule flags: it writes one of the directives the rule reads.
    assert any(d.rsplit(".", 1)[-1].lower() in text.lower() for d in r.directives), (r.id, r.directives)


def test_every_false_positive_fixture_belongs_to_a_rule() -> None:
    ids = {r.id for r in RULES}
    stray = [p.name for p in FP.iterdir() if p.name.split(".", 1)[0] not in ids]
    assert not stray and len(list(FP.iterdir())) == len(ids), stray


def test_every_rule_declares_what_it_is() -> None:
    found = _registered()
    assert {r.proxy for r in found} == {k for k in kinds() if driver(k).config_module}
    ids = [r.id for r in found]
    assert len(ids) == len(set(ids)), "a rule id is registered for two kinds"
    for r in found:
        assert r.id.startswith(f"{r.proxy.value}-"), r.id
        assert r.severity in rules.SEVERITIES, r.id
        assert r.scenario in builtin(), f"{r.id}: its proving scenario {r.scenario} does not exist"
        assert r.help.startswith("https://") and r.fix and r.directives, r.id


def test_a_rule_id_cannot_be_registered_twice() -> None:
    def one(scope: rules.Scope) -> None:
        return None

    def other(scope: rules.Scope) -> None:
        return None

    def declare(rule_id: str, severity: str = "low") -> Callable[[rules.Check], rules.Check]:
        return rules.rule(
            rule_id,
            proxy="nginx",
            severity=severity,
            scenario="nginx/good",
            directives=("x",),
            help="https://example.invalid",
            fix="-",
        )

    declare("nginx-test-twice")(one)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            declare("nginx-test-twice")(other)
        with pytest.raises(ValueError, match="severity"):
            declare("nginx-test-bad", severity="critical")
    finally:
        rules._RULES[rules.ProxyKind.NGINX].pop("nginx-test-twice")


# -- HAProxy: a default-server line applies to the servers after it, in its section or the last
# defaults section only. Both are what HAProxy 2.6 does (`haproxy -c` below); check and audit
# read it from the same merge.
_LATE_DEFAULT = """\
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
backend be
    server s1 api.example.internal:443 ssl
    default-server verify none verifyhost other.example.internal
"""
_RESET_DEFAULTS = """\
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
    default-server verify none
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
backend be
    server s1 api.example.internal:443 ssl
"""


@pytest.mark.parametrize("text", [_LATE_DEFAULT, _RESET_DEFAULTS], ids=["below-the-server", "earlier-defaults"])
def test_a_default_server_line_that_does_not_apply(text: str, tmp_path: Path, local_runtime: str) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    binary = driver("haproxy").find_binary()
    assert binary
    real = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert real.returncode != 0 and "no CA file specified" in real.stderr + real.stdout  # still verifying
    assert audit(cfg).rules() == ["haproxy-no-ca-file", "haproxy-no-name-check"]
    lab = LabPaths(**{name: str(tmp_path / name) for name in LabPaths.__dataclass_fields__})
    [up] = adapter("haproxy")(cfg, lab, ports=Ports(avoid=set())).upstreams
    assert up.name == "api.example.internal"  # not the verifyhost of a default-server below it


def test_an_apache_virtual_host_inherits_the_main_servers_trust(tmp_path: Path) -> None:
    cfg = tmp_path / "site.conf"
    cfg.write_text(
        "SSLProxyEngine on\nSSLProxyVerify none\n<VirtualHost *:80>\n  ProxyPass / https://api.example.internal/\n"
        "</VirtualHost>\n<VirtualHost *:81>\n  SSLProxyVerify require\n  SSLProxyVerifyDepth 2\n"
        "  SSLProxyCACertificateFile /etc/pki/internal.pem\n  ProxyPass / https://api.example.internal/\n"
        "</VirtualHost>\n"
    )
    assert [(f.rule, f.line) for f in audit(cfg).findings] == [("apache-verify-none", 2)]
    scopes = rules.config_module("apache").scopes(cfg, cfg.read_text())
    assert [s.line for s in scopes] == [4, 10]
    assert scopes[1].get("sslproxyverify") == rules.Directive("sslproxyverify", ("require",), 7)
