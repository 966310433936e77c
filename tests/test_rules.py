"""The audit rule registry, and the one parse ``check`` and ``audit`` share (HAProxy's
``default-server`` merge, Apache's scopes), checked against what the real servers do."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import rules
from harness.audit import audit
from harness.configs import adapter
from harness.configs.base import LabPaths, Ports
from harness.proxies import driver, kinds
from harness.scenarios import builtin


def _registered() -> list[rules.Rule]:
    with_module = [k for k in kinds() if driver(k).config_module]
    return [r for k in with_module for r in rules.rules(k)]


def test_every_rule_declares_what_it_is() -> None:
    found = _registered()
    assert {r.proxy.value for r in found} >= {"nginx", "apache", "haproxy"}
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
