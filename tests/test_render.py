"""Rendered configs: self-contained, and each variant differs from its control by exactly
the directive delta DESIGN.md gives it."""

from __future__ import annotations

import re

import pytest

from harness import scenarios
from harness.proxies import RenderContext, driver

CTX = RenderContext(
    run_dir="/run/lab", listen="127.0.0.1:20000", ca="/pki/ca.pem", bundle="/pki/bundle.pem", backend_ip="10.203.0.10"
)
BUILTIN = scenarios.builtin()


def render(sid: str) -> str:
    sc = BUILTIN[sid]
    return driver(sc.proxy).render(sc, CTX)


def trust_lines(sid: str) -> set[str]:
    """The lines of the rendered config that a scenario controls (directives + target)."""
    sc = BUILTIN[sid]
    text = render(sid)
    if sc.proxy.value == "haproxy":
        server = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("server be "))
        return set(server.split()[3:]) | {server.split()[2]}
    keys = {k for k, _ in sc.directives} | {"proxy_pass", "ProxyPass", "ProxyPassReverse", "reverse_proxy"}
    keys |= set(scenarios.directives_for(sc.proxy))
    return {ln.strip() for ln in text.splitlines() if ln.strip().split(" ")[0] in keys}


@pytest.mark.parametrize("sid", sorted(BUILTIN))
def test_config_is_self_contained(sid: str) -> None:
    text = render(sid)
    assert not re.search(r"^\s*include\b", text, re.M | re.I)
    assert "{{" not in text and "{ca}" not in text and "{bundle}" not in text
    assert "/etc/nginx" not in text and "/etc/apache2" not in text and "/etc/haproxy" not in text
    # Caddy binds its site (http://:20000) with `bind 127.0.0.1`: an address in the site name
    # would become a Host matcher. Envoy spells a listener address as {address, port_value}.
    assert (
        "127.0.0.1:20000" in text
        or ("\tbind 127.0.0.1\n" in text and "http://:20000 {" in text)
        or re.search(r"address: 127\.0\.0\.1, port_value: 20000\b", text)
    )


def test_apache_loads_its_modules_explicitly() -> None:
    text = render("apache/good")
    for mod in ("mod_ssl.so", "mod_proxy.so", "mod_proxy_http.so"):
        assert re.search(rf"^LoadModule \w+ \S+/{mod}$", text, re.M)


NGINX_GOOD = {
    "proxy_pass https://backend-api.internal:8443;",
    "proxy_ssl_verify on;",
    "proxy_ssl_trusted_certificate /pki/ca.pem;",
    "proxy_ssl_server_name on;",
}
APACHE_GOOD = {
    "SSLProxyEngine on",
    "SSLProxyVerify require",
    "SSLProxyVerifyDepth 2",
    "SSLProxyCheckPeerName on",
    "SSLProxyCheckPeerExpire on",
    "SSLProxyCACertificateFile /pki/ca.pem",
    "ProxyPass / https://backend-api.internal:8443/",
    "ProxyPassReverse / https://backend-api.internal:8443/",
}
IP_PASS = "proxy_pass https://10.203.0.10:8443;"
AP_IP = {"ProxyPass / https://10.203.0.10:8443/", "ProxyPassReverse / https://10.203.0.10:8443/"}
AP_NAME = {"ProxyPass / https://backend-api.internal:8443/", "ProxyPassReverse / https://backend-api.internal:8443/"}
CADDY_GOOD = {"reverse_proxy https://backend-api.internal:8443 {", "tls_trust_pool file /pki/ca.pem"}
CADDY_NAME = "reverse_proxy https://backend-api.internal:8443 {"
CADDY_IP = "reverse_proxy https://10.203.0.10:8443 {"

# (removed, added) relative to the proxy's good config: DESIGN.md's variant tables.
DELTAS = {
    "nginx/verify-off": (NGINX_GOOD - {"proxy_pass https://backend-api.internal:8443;"}, set()),
    "nginx/ca-without-verify": ({"proxy_ssl_verify on;"}, set()),
    "nginx/no-sni": ({"proxy_ssl_server_name on;"}, set()),
    "nginx/no-sni-routed": ({"proxy_ssl_server_name on;"}, set()),
    "nginx/ip-target": ({"proxy_pass https://backend-api.internal:8443;"}, {IP_PASS}),
    "nginx/ip-target-with-name": (
        {"proxy_pass https://backend-api.internal:8443;"},
        {IP_PASS, "proxy_ssl_name backend-api.internal;"},
    ),
    "nginx/system-bundle": (
        {"proxy_ssl_trusted_certificate /pki/ca.pem;"},
        {"proxy_ssl_trusted_certificate /pki/bundle.pem;"},
    ),
    "nginx/verify-no-ca": ({"proxy_ssl_trusted_certificate /pki/ca.pem;"}, set()),
    "apache/seed-recipe": ({"SSLProxyVerifyDepth 2"}, {"ProxyPreserveHost On"}),
    "apache/defaults": (APACHE_GOOD - {"SSLProxyEngine on"} - AP_NAME, set()),
    "apache/verify-none": (
        {"SSLProxyVerify require", "SSLProxyCACertificateFile /pki/ca.pem"},
        {"SSLProxyVerify none"},
    ),
    "apache/name-check-off": ({"SSLProxyCheckPeerName on"}, {"SSLProxyCheckPeerName off"}),
    "apache/cn-check-off": ({"SSLProxyCheckPeerName on"}, {"SSLProxyCheckPeerCN off"}),
    "apache/expire-check-off": ({"SSLProxyCheckPeerExpire on"}, {"SSLProxyCheckPeerExpire off"}),
    "apache/everything-off": (
        APACHE_GOOD - {"SSLProxyEngine on"} - AP_NAME,
        {"SSLProxyVerify none", "SSLProxyCheckPeerName off", "SSLProxyCheckPeerCN off", "SSLProxyCheckPeerExpire off"},
    ),
    "apache/ip-target": (AP_NAME, AP_IP),
    "apache/system-bundle": ({"SSLProxyCACertificateFile /pki/ca.pem"}, {"SSLProxyCACertificateFile /pki/bundle.pem"}),
    "apache/preserve-host": (set(), {"ProxyPreserveHost On"}),
    "haproxy/verify-none": (
        {
            "required",
            "ca-file",
            "/pki/ca.pem",
            "sni",
            "str(backend-api.internal)",
            "verifyhost",
            "backend-api.internal",
        },
        {"none"},
    ),
    "haproxy/defaults": (
        {
            "verify",
            "required",
            "ca-file",
            "/pki/ca.pem",
            "sni",
            "str(backend-api.internal)",
            "verifyhost",
            "backend-api.internal",
        },
        set(),
    ),
    "haproxy/ca-only": ({"sni", "str(backend-api.internal)", "verifyhost", "backend-api.internal"}, set()),
    "haproxy/ca-sni": ({"verifyhost", "backend-api.internal"}, set()),
    "caddy/verify-off": ({"tls_trust_pool file /pki/ca.pem"}, {"tls_insecure_skip_verify"}),
    "caddy/trusted-ca-certs": ({"tls_trust_pool file /pki/ca.pem"}, {"tls_trusted_ca_certs /pki/ca.pem"}),
    "caddy/system-store": ({"tls_trust_pool file /pki/ca.pem"}, set()),
    "caddy/system-bundle": ({"tls_trust_pool file /pki/ca.pem"}, {"tls_trust_pool file /pki/bundle.pem"}),
    "caddy/server-name-from-host": (set(), {"tls_server_name {http.request.host}"}),
    "caddy/ip-target": ({CADDY_NAME}, {CADDY_IP}),
    "caddy/ip-target-with-name": ({CADDY_NAME}, {CADDY_IP, "tls_server_name backend-api.internal"}),
}


def test_good_configs_hold_the_prescribed_lines() -> None:
    assert trust_lines("nginx/good") == NGINX_GOOD
    assert trust_lines("apache/good") == APACHE_GOOD
    assert (
        render("haproxy/good").count(
            "server be backend-api.internal:8443 ssl verify required ca-file /pki/ca.pem "
            "sni str(backend-api.internal) verifyhost backend-api.internal"
        )
        == 1
    )
    assert trust_lines("caddy/good") == CADDY_GOOD


@pytest.mark.parametrize("sid", sorted(DELTAS))
def test_variant_is_exactly_its_delta(sid: str) -> None:
    good = f"{BUILTIN[sid].proxy.value}/good"
    removed, added = DELTAS[sid]
    before, after = trust_lines(good), trust_lines(sid)
    if BUILTIN[sid].proxy.value == "haproxy":
        # server-line words: compare as multisets of keywords/values
        assert before - after == removed
        assert after - before == added
        return
    assert before - after == removed, "removed lines"
    assert after - before == added, "added lines"


def test_every_design_variant_has_a_scenario() -> None:
    design = {
        "nginx": [
            "good",
            "verify-off",
            "ca-without-verify",
            "no-sni",
            "ip-target",
            "ip-target-with-name",
            "system-bundle",
            "verify-no-ca",
        ],
        "apache": [
            "good",
            "seed-recipe",
            "defaults",
            "verify-none",
            "name-check-off",
            "cn-check-off",
            "expire-check-off",
            "everything-off",
            "ip-target",
            "system-bundle",
            "preserve-host",
        ],
        "haproxy": ["good", "verify-none", "defaults", "ca-only", "ca-sni"],
    }
    ids = {f"{p}/{v}" for p, vs in design.items() for v in vs}
    assert len(ids) == 24
    assert ids <= set(BUILTIN)
    assert all(BUILTIN[i].control == f"{i.split('/')[0]}/good" for i in ids if not i.endswith("/good"))
