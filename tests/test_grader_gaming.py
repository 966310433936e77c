"""The grader refuses the wrong fixes: every challenge's reference solution, mutated into the attempts
a workshop attendee makes to get SOLVED without the lesson, is NOT YET with a reason.

The attempts are generated per proxy kind from the solution and the challenge's pinned backend
(``[backend]`` and ``[request]``), so a new challenge gets them without writing any; a kind
without its mutation table, or a solution a mutation does not apply to, fails the suite.
Several of these (a typo'd or sibling name, another host, the graded request answered
elsewhere) were SOLVED before the grader pinned the backend (issue 20).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.check import Backend
from harness.course import challenges as C

#: The wrong fixes every challenge must refuse (issue 20's list, plus every response relabelled
#: as the legitimate backend's, and the graded request answered by the proxy while the
#: verified upstream sits on another path).
CASES = (
    "typo-name",
    "sibling-name",
    "other-host",
    "other-ip",
    "ip-without-name",
    "second-route-verify-off",
    "refuse-everything",
    "static-200",
    "forge-marker",
    "graded-elsewhere",
    "typo-ca-path",
)
#: Made from the broken start, not the solution: relabelling every response as legit's on a
#: config that verifies changes nothing (impostors never answer), on one that does not it hides them.
FROM_START = ("forge-marker",)
ATTACKER = "attacker-box.example:8443"
OTHER_IP = "192.0.2.55:443"
SIBLING = "other-svc.internal"
FORGED = "X-Trustlab-Identity legit"

Mutation = Callable[[str, Backend], str]


def typo(name: str) -> str:
    """``backend-api.internal`` -> ``backend-api.internl`` (a letter dropped from the last label)."""
    head, _, last = name.rpartition(".")
    return f"{head}.{last[:-2]}{last[-1]}"


def _targets(text: str, b: Backend, new: str) -> str:
    """Every ``name:port`` or ``address:port`` of the pinned backend replaced by *new*."""
    out = text.replace(f"{b.name}:{b.port}", new).replace(f"{b.address}:{b.port}", new)
    return out


def _after(text: str, pattern: str, insert: str, *, deeper: str = "    ") -> str:
    """*insert* after the first line matching *pattern*, indented like it plus *deeper*."""
    m = re.search(rf"^([ \t]*){pattern}.*$", text, re.M)
    assert m, f"no line matches {pattern!r}"
    return text[: m.end()] + f"\n{m.group(1)}{deeper}{insert}" + text[m.end() :]


def _before(text: str, pattern: str, insert: str) -> str:
    m = re.search(rf"^( *){pattern}", text, re.M)
    assert m, f"no line matches {pattern!r}"
    return text[: m.start()] + "\n".join(f"{m.group(1)}{ln}" for ln in insert.splitlines()) + "\n" + text[m.start() :]


# -- nginx ------------------------------------------------------------------------------------
def _nginx_name(text: str, name: str) -> str:
    if "proxy_ssl_name " in text:
        return re.sub(r"proxy_ssl_name [^;]+;", f"proxy_ssl_name {name};", text)
    return _after(text, r"proxy_pass https://", f"proxy_ssl_name {name};", deeper="")


NGINX: dict[str, Mutation] = {
    "typo-name": lambda t, b: _nginx_name(t, typo(b.name)),
    "sibling-name": lambda t, b: _nginx_name(t, SIBLING),
    "other-host": lambda t, b: _targets(t, b, ATTACKER),
    "other-ip": lambda t, b: _targets(t, b, OTHER_IP),
    "ip-without-name": lambda t, b: re.sub(r"\n *proxy_ssl_name [^;]+;", "", _targets(t, b, f"{b.address}:{b.port}")),
    "second-route-verify-off": lambda t, b: _before(
        t,
        r"location / \{",
        f"location /v2/ {{\n    proxy_pass https://{b.name}:{b.port};\n    proxy_ssl_verify off;\n}}",
    ),
    "refuse-everything": lambda t, b: _after(t, r"location / \{", "deny all;"),
    "static-200": lambda t, b: _after(t, r"location / \{", f'add_header {FORGED} always; return 200 "legit\\n";'),
    "forge-marker": lambda t, b: _after(
        t, r"location / \{", "proxy_hide_header X-Trustlab-Identity; add_header X-Trustlab-Identity legit always;"
    ),
    "graded-elsewhere": lambda t, b: _before(
        t.replace("location / {", "location /elsewhere/ {"),
        r"location /elsewhere/ \{",
        f'location / {{\n    add_header {FORGED} always;\n    return 200 "legit\\n";\n}}',
    ),
}


# -- apache -----------------------------------------------------------------------------------
_APACHE_OFF = """<VirtualHost *:80>
    ServerName legacy.example.com
    SSLProxyEngine on
    SSLProxyVerify none
    SSLProxyCheckPeerName off
    SSLProxyCheckPeerExpire off
    ProxyPass / https://{target}/
</VirtualHost>
"""

APACHE: dict[str, Mutation] = {
    "typo-name": lambda t, b: _targets(t, b, f"{typo(b.name)}:{b.port}"),
    "sibling-name": lambda t, b: _targets(t, b, f"{SIBLING}:{b.port}"),
    "other-host": lambda t, b: _targets(t, b, ATTACKER),
    "other-ip": lambda t, b: _targets(t, b, OTHER_IP),
    "ip-without-name": lambda t, b: _targets(t, b, f"{b.address}:{b.port}"),
    "second-route-verify-off": lambda t, b: t + _APACHE_OFF.format(target=f"{b.name}:{b.port}"),
    "refuse-everything": lambda t, b: _before(
        t, r"</VirtualHost>", "    <Location />\n        Require all denied\n    </Location>"
    ),
    "static-200": lambda t, b: _before(
        t,
        r"</VirtualHost>",
        f"    <Location />\n        SetHandler server-status\n        Header always set {FORGED}\n    </Location>",
    ),
    "forge-marker": lambda t, b: _before(t, r"</VirtualHost>", f"    Header set {FORGED}"),
    "graded-elsewhere": lambda t, b: re.sub(r"(ProxyPass(?:Reverse)?\s+)/ ", r"\1/elsewhere/ ", t),
}


# -- haproxy ----------------------------------------------------------------------------------
def _haproxy_name(text: str, b: Backend, name: str) -> str:
    return text.replace(f"verifyhost {b.name}", f"verifyhost {name}").replace(f"sni str({b.name})", f"sni str({name})")


def _haproxy_backend(text: str) -> str:
    m = re.search(r"^\s*default_backend (\S+)", text, re.M)
    assert m, "no default_backend"
    return m.group(1)


HAPROXY: dict[str, Mutation] = {
    "typo-name": lambda t, b: _haproxy_name(t, b, typo(b.name)),
    "sibling-name": lambda t, b: _haproxy_name(t, b, SIBLING),
    "other-host": lambda t, b: _targets(t, b, ATTACKER),
    # issue 20's own: `192.0.2.55:443 verifyhost evil.example`
    "other-ip": lambda t, b: _haproxy_name(_targets(t, b, OTHER_IP), b, "evil.example"),
    "ip-without-name": lambda t, b: re.sub(
        rf" (verifyhost {re.escape(b.name)}|sni str\({re.escape(b.name)}\))",
        "",
        _targets(t, b, f"{b.address}:{b.port}"),
    ),
    "second-route-verify-off": lambda t, b: (
        _before(t, r"default_backend", "use_backend legacy if { path_beg /v2/ }")
        + f"\nbackend legacy\n    server legacy {b.name}:{b.port} ssl verify none\n"
    ),
    "refuse-everything": lambda t, b: _before(t, r"default_backend", "http-request deny"),
    "static-200": lambda t, b: _before(
        t, r"default_backend", f"http-request return status 200 content-type text/plain string legit hdr {FORGED}"
    ),
    "forge-marker": lambda t, b: _before(t, r"default_backend", f"http-response set-header {FORGED}"),
    "graded-elsewhere": lambda t, b: _before(
        t,
        r"default_backend",
        f"use_backend {_haproxy_backend(t)} if {{ path_beg /elsewhere/ }}\n"
        f"http-request return status 200 content-type text/plain string legit hdr {FORGED} "
        "if !{ path_beg /elsewhere/ }",
    ),
}


# -- caddy (a Caddyfile) ------------------------------------------------------------------------
def _caddy_name(text: str, name: str) -> str:
    if "tls_server_name " in text:
        return re.sub(r"tls_server_name \S+", f"tls_server_name {name}", text)
    return _after(text, r"tls_trust_pool ", f"tls_server_name {name}", deeper="")


def _caddy_site(text: str) -> str:
    m = re.search(r"^(http://\S+) \{", text, re.M)
    assert m, "no http:// site block"
    return m.group(1)


_CADDY_OFF = """
http://legacy.example.com {{
\treverse_proxy https://{target} {{
\t\ttransport http {{
\t\t\ttls_insecure_skip_verify
\t\t}}
\t}}
}}
"""
_CADDY_FORGED = "\theader {\n\t\tX-Trustlab-Identity legit\n\t\tdefer\n\t}"
_CADDY_STATIC = '\theader X-Trustlab-Identity legit\n\trespond "legit" 200'

CADDY: dict[str, Mutation] = {
    "typo-name": lambda t, b: _caddy_name(t, typo(b.name)),
    "sibling-name": lambda t, b: _caddy_name(t, SIBLING),
    "other-host": lambda t, b: _targets(t, b, ATTACKER),
    "other-ip": lambda t, b: _targets(t, b, OTHER_IP),
    "ip-without-name": lambda t, b: re.sub(r"\n\s*tls_server_name \S+", "", _targets(t, b, f"{b.address}:{b.port}")),
    "second-route-verify-off": lambda t, b: t + _CADDY_OFF.format(target=f"{b.name}:{b.port}"),
    "refuse-everything": lambda t, b: t.replace(_caddy_site(t) + " {", _caddy_site(t) + ' {\n\trespond "no" 403', 1),
    "static-200": lambda t, b: t.replace(_caddy_site(t) + " {", _caddy_site(t) + " {\n" + _CADDY_STATIC, 1),
    "forge-marker": lambda t, b: t.replace(_caddy_site(t) + " {", _caddy_site(t) + " {\n" + _CADDY_FORGED, 1),
    # the verified upstream answers another site; the graded Host gets a made-up answer
    "graded-elsewhere": lambda t, b: (
        t.replace(_caddy_site(t), "http://api-internal.example.com", 1)
        + f"\n{_caddy_site(t)} {{\n{_CADDY_STATIC}\n}}\n"
    ),
}


# -- traefik (its dynamic configuration, YAML) ----------------------------------------------------
def _under(text: str, key: str, block: str) -> str:
    """*block* (YAML lines) as the first entry of the mapping *key*, indented one level below it."""
    m = re.search(rf"^( *){key}:[ \t]*$", text, re.M)
    assert m, f"no {key}: mapping"
    indent = m.group(1) + "  "
    return text[: m.end()] + "".join(f"\n{indent}{ln}" for ln in block.splitlines()) + text[m.end() :]


def _traefik_name(text: str, name: str) -> str:
    if "serverName:" in text:
        return re.sub(r"serverName: \S+", f"serverName: {name}", text)
    return _before(text, r"rootCAs:", f"serverName: {name}")


def _traefik_middleware(text: str, name: str, block: str) -> str:
    """A middleware *name* (its YAML *block*) on the portal router."""
    text = _before(text, r"service: ", f"middlewares: [{name}]")
    if re.search(r"^  middlewares:", text, re.M):
        return _under(text, "middlewares", f"{name}:\n" + "\n".join(f"  {ln}" for ln in block.splitlines()))
    return _under(text, "http", "middlewares:\n" + f"  {name}:\n" + "\n".join(f"    {ln}" for ln in block.splitlines()))


TRAEFIK: dict[str, Mutation] = {
    "typo-name": lambda t, b: _traefik_name(t, typo(b.name)),
    "sibling-name": lambda t, b: _traefik_name(t, SIBLING),
    "other-host": lambda t, b: _targets(t, b, ATTACKER),
    "other-ip": lambda t, b: _targets(t, b, OTHER_IP),
    "ip-without-name": lambda t, b: re.sub(r"\n *serverName: \S+", "", _targets(t, b, f"{b.address}:{b.port}")),
    "second-route-verify-off": lambda t, b: _under(
        _under(
            _under(t, "routers", 'legacy:\n  rule: "Host(`legacy.example.com`)"\n  service: legacy'),
            "services",
            f'legacy:\n  loadBalancer:\n    servers:\n      - url: "https://{b.name}:{b.port}/"\n'
            "    serversTransport: skip",
        ),
        "serversTransports",
        "skip:\n  insecureSkipVerify: true",
    ),
    "refuse-everything": lambda t, b: _traefik_middleware(t, "deny", "ipAllowList:\n  sourceRange: [192.0.2.1/32]"),
    "forge-marker": lambda t, b: _traefik_middleware(
        t, "forge", "headers:\n  customResponseHeaders:\n    X-Trustlab-Identity: legit"
    ),
    # the verified router answers another Host; the graded one reaches nothing
    "graded-elsewhere": lambda t, b: t.replace("Host(`portal.example.com`)", "Host(`api-internal.example.com`)"),
}


# -- envoy (a static bootstrap, YAML) ---------------------------------------------------------------
def _envoy_name(text: str, b: Backend, name: str) -> str:
    return text.replace(f"exact: {b.name}", f"exact: {name}").replace(f"sni: {b.name}", f"sni: {name}")


def _envoy_target(text: str, b: Backend, host: str, port: int) -> str:
    out = re.sub(
        rf"address: (?:{re.escape(b.name)}|{re.escape(b.address)}), port_value: {b.port} ",
        f"address: {host}, port_value: {port} ",
        text,
    )
    return out


def _envoy_route(text: str, lines: str) -> str:
    """The first ``route: { cluster: ... }`` replaced by *lines* (indented like it)."""
    m = re.search(r"^( *)route: \{ cluster: \S+ \}$", text, re.M)
    assert m, "no route: { cluster: ... } line"
    return text[: m.start()] + "\n".join(m.group(1) + ln for ln in lines.splitlines()) + text[m.end() :]


_ENVOY_FORGED = "response_headers_to_add:\n- header: { key: X-Trustlab-Identity, value: legit }"
_ENVOY_STATIC = 'direct_response: { status: 200, body: { inline_string: "legit" } }\n' + _ENVOY_FORGED


def _envoy_elsewhere(text: str) -> str:
    m = re.search(r'^( *)- match: \{ prefix: "/" \}\n( *)route: \{ cluster: (\S+) \}$', text, re.M)
    assert m, "no route for /"
    i, j, cluster = m.groups()
    static = "\n".join(j + ln for ln in _ENVOY_STATIC.splitlines())
    routes = (
        f'{i}- match: {{ prefix: "/elsewhere/" }}\n{j}route: {{ cluster: {cluster} }}\n'
        f'{i}- match: {{ prefix: "/" }}\n{static}'
    )
    return text[: m.start()] + routes + text[m.end() :]


_ENVOY_OFF = """  - name: legacy
    connect_timeout: 2s
    type: STRICT_DNS
    load_assignment:
      cluster_name: legacy
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {host}, port_value: {port} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
"""

ENVOY: dict[str, Mutation] = {
    "typo-name": lambda t, b: _envoy_name(t, b, typo(b.name)),
    "sibling-name": lambda t, b: _envoy_name(t, b, SIBLING),
    "other-host": lambda t, b: _envoy_target(t, b, "attacker-box.example", 8443),
    "other-ip": lambda t, b: _envoy_target(t, b, "192.0.2.55", 443),
    "ip-without-name": lambda t, b: re.sub(
        r"\n *sni: \S+|\n *match_typed_subject_alt_names:\n *- san_type: DNS\n *matcher:\n *exact: \S+",
        "",
        _envoy_target(t, b, b.address, b.port),
    ),
    "second-route-verify-off": lambda t, b: (
        _before(t, r'- match: \{ prefix: "/" \}', '- match: { prefix: "/v2/" }\n  route: { cluster: legacy }')
        + _ENVOY_OFF.format(host=b.name, port=b.port)
    ),
    "refuse-everything": lambda t, b: _envoy_route(t, "direct_response: { status: 403 }"),
    "static-200": lambda t, b: _envoy_route(t, _ENVOY_STATIC),
    "forge-marker": lambda t, b: _envoy_route(
        t, "route: { cluster: api }\n" + _ENVOY_FORGED + "\n  append_action: OVERWRITE_IF_EXISTS_OR_ADD"
    ),
    # the verified route answers another path; the graded request gets a made-up answer
    "graded-elsewhere": lambda t, b: _envoy_elsewhere(t),
}


# -- squid (squid.conf: an accelerator with one cache_peer) ---------------------------------------
def _squid_name(text: str, name: str) -> str:
    """The peer line's ``tls-domain=`` (the name Squid checks), set to *name*."""
    if "tls-domain=" in text:
        return re.sub(r"tls-domain=\S+", f"tls-domain={name}", text)
    return re.sub(r"^(cache_peer .*)$", rf"\1 tls-domain={name}", text, count=1, flags=re.M)


def _squid_target(text: str, b: Backend, host: str, port: int) -> str:
    """The peer's host and http-port (``cache_peer HOST parent PORT``) replaced."""
    old = rf"^cache_peer (?:{re.escape(b.name)}|{re.escape(b.address)}) parent {b.port} "
    return re.sub(old, f"cache_peer {host} parent {port} ", text, flags=re.M)


def _squid_peer(text: str) -> str:
    m = re.search(r"^cache_peer .* name=(\S+)", text, re.M)
    assert m, "no cache_peer ... name="
    return m.group(1)


SQUID: dict[str, Mutation] = {
    "typo-name": lambda t, b: _squid_name(t, typo(b.name)),
    "sibling-name": lambda t, b: _squid_name(t, SIBLING),
    "other-host": lambda t, b: _squid_target(t, b, "attacker-box.example", 8443),
    "other-ip": lambda t, b: _squid_name(_squid_target(t, b, "192.0.2.55", 443), "evil.example"),
    "ip-without-name": lambda t, b: re.sub(r" tls-domain=\S+", "", _squid_target(t, b, b.address, b.port)),
    # a second peer to the same backend, verification off, for /v2/ (and the first peer denied it)
    "second-route-verify-off": lambda t, b: _before(
        t,
        rf"cache_peer_access {_squid_peer(t)} allow",
        f"cache_peer {b.name} parent {b.port} 0 no-query originserver name=legacy tls tls-flags=DONT_VERIFY_PEER\n"
        "acl v2 urlpath_regex ^/v2/\n"
        "cache_peer_access legacy allow v2\n"
        "cache_peer_access legacy deny all\n"
        f"cache_peer_access {_squid_peer(t)} deny v2",
    ),
    "refuse-everything": lambda t, b: _before(t, r"http_access allow", "http_access deny all"),
    "forge-marker": lambda t, b: t + f"reply_header_access X-Trustlab-Identity deny all\nreply_header_add {FORGED}\n",
    # the graded request is refused; only /elsewhere/ reaches the verified peer
    "graded-elsewhere": lambda t, b: _before(
        t, r"http_access allow", "acl elsewhere urlpath_regex ^/elsewhere/\nhttp_access deny !elsewhere"
    ),
}

# -- trafficserver (records.config, and the remap.config beside it: several files) --------------
Files = dict[str, str]
FileMutation = Callable[[Files, Backend], Files]


def _remap(edit: Callable[[str], str]) -> FileMutation:
    """A mutation of remap.config alone."""
    return lambda f, b: {**f, "remap.config": edit(f["remap.config"])}


def _ts_graded_map(text: str, b: Backend) -> str:
    """The map rule of the graded request (``map http://HOST/ https://...``)."""
    m = re.search(rf"^map http://{re.escape(b.host)}/ .*$", text, re.M)
    assert m, f"no map rule for http://{b.host}/"
    return m.group(0)


TRAFFICSERVER: dict[str, FileMutation] = {
    "typo-name": lambda f, b: _remap(lambda t: _targets(t, b, f"{typo(b.name)}:{b.port}"))(f, b),
    "sibling-name": lambda f, b: _remap(lambda t: _targets(t, b, f"{SIBLING}:{b.port}"))(f, b),
    "other-host": lambda f, b: _remap(lambda t: _targets(t, b, ATTACKER))(f, b),
    "other-ip": lambda f, b: _remap(lambda t: _targets(t, b, OTHER_IP))(f, b),
    "ip-without-name": lambda f, b: _remap(lambda t: _targets(t, b, f"{b.address}:{b.port}"))(f, b),
    # a second route to the same backend, verification off for it alone (conf_remap)
    "second-route-verify-off": lambda f, b: _remap(
        lambda t: (
            f"map http://{b.host}/v2/ https://{b.name}:{b.port}/v2/ @plugin=conf_remap.so "
            "@pparam=proxy.config.ssl.client.verify.server.policy=DISABLED\n" + t
        )
    )(f, b),
    # only a documentation address may use the portal: every client of the lab is refused
    "refuse-everything": lambda f, b: _remap(
        lambda t: t.replace(_ts_graded_map(t, b), _ts_graded_map(t, b) + " @action=allow @src_ip=192.0.2.1")
    )(f, b),
    # relabelling needs a plugin (header_rewrite), which the adapter drops: the start still grades
    "forge-marker": lambda f, b: _remap(
        lambda t: t.replace(_ts_graded_map(t, b), _ts_graded_map(t, b) + " @plugin=header_rewrite.so @pparam=x.conf")
    )(f, b),
    # the verified route answers another Host; the graded one is mapped nowhere
    "graded-elsewhere": lambda f, b: _remap(
        lambda t: t.replace(f"map http://{b.host}/", "map http://api-internal.example.com/")
    )(f, b),
}
#: Wrong fixes written the same way for every kind, on every file of the attempt.
GENERIC: dict[str, FileMutation] = {
    # The CA file named with a typo: on the real host that file does not exist. Before the grader
    # knew the challenge's CA file (``[backend] ca_file``) any trusted-CA path stood for the lab's
    # root, and this was SOLVED.
    "typo-ca-path": lambda f, b: {n: t.replace(b.ca_file, typo(b.ca_file)) for n, t in f.items()}
}

#: Kinds whose challenges are several files (the config and its ``files``): their mutations take
#: and return every file.
MULTI_FILE: dict[str, dict[str, FileMutation]] = {"trafficserver": TRAFFICSERVER}

#: One mutation table per proxy kind that has challenges; a kind without one fails the suite.
MUTATIONS: dict[str, dict[str, Mutation]] = {
    "nginx": NGINX,
    "apache": APACHE,
    "haproxy": HAPROXY,
    "caddy": CADDY,
    "traefik": TRAEFIK,
    "envoy": ENVOY,
    "squid": SQUID,
    "trafficserver": {},  # several files: MULTI_FILE
}
#: Wrong fixes a kind cannot express, and why (never a way to leave one out).
NOT_EXPRESSIBLE: dict[str, dict[str, str]] = {
    "traefik": {"static-200": "Traefik has no handler that answers by itself (no respond/return): it only proxies"},
    "squid": {"static-200": "Squid answers by itself only with error pages and 3xx redirects (deny_info), never a 200"},
    "trafficserver": {
        "static-200": "Traffic Server answers by itself only through plugins (generator, statichit), which the adapter "
        "drops"
    },
}


def attempts(ch: C.Challenge) -> dict[str, Files]:
    """The wrong fixes of *ch*, generated from its reference solution (or its start: :data:`FROM_START`):
    each one the files to grade (the config, and the ``files`` it reads beside it)."""
    kind = ch.proxy.value
    multi = MULTI_FILE.get(kind)
    table: dict[str, Any] | None = multi or MUTATIONS.get(kind)
    if table is None:
        raise AssertionError(
            f"{ch.id}: no gaming mutations for {kind} challenges; add a table to MUTATIONS in {__file__}"
        )
    cases = [c for c in CASES if c not in NOT_EXPRESSIBLE.get(kind, {})]
    assert set(table) | set(GENERIC) == set(cases), f"{kind}: mutations {sorted(set(cases) - set(table))} missing"
    out = {}
    for case in cases:
        where = ch.path if case in FROM_START else ch.path / "solution"
        base = {name: (where / name).read_text() for name in (ch.config, *ch.files)}
        if case in GENERIC:
            files = GENERIC[case](dict(base), ch.backend)
        elif multi is not None:
            files = multi[case](dict(base), ch.backend)
        else:
            files = {**base, ch.config: table[case](base[ch.config], ch.backend)}
        assert files != base, f"{ch.id}: {case} does not apply to its config; adapt the mutation"
        out[case] = files
    return out


ALL = C.load_all()
PAIRS = [(ch.id, case) for ch in ALL for case in CASES if case not in NOT_EXPRESSIBLE.get(ch.proxy.value, {})]


def _one_worker(pairs: list[tuple[str, str]], runtime: str) -> list[Any]:
    """*pairs* as parameters, a challenge's cases in one xdist group: :func:`graded` grades all of
    them at once on first use, so cases spread over 4 workers graded each challenge up to 4 times
    (132 lab runs for 38 challenges; Traffic Server's 21-cell grade took 23 s each time)."""
    return [pytest.param(c, k, id=f"{c}:{k}", marks=pytest.mark.xdist_group(f"grade-{runtime}-{c}")) for c, k in pairs]


def test_every_challenge_has_every_gaming_case() -> None:
    """A new challenge (or kind) without its wrong fixes fails here, before any proxy runs."""
    for ch in ALL:
        skipped = NOT_EXPRESSIBLE.get(ch.proxy.value, {})
        assert set(attempts(ch)) | set(skipped) == set(CASES) and all(skipped.values())


def test_typo() -> None:
    assert typo("backend-api.internal") == "backend-api.internl"
    assert typo("api.svc.internal") == "api.svc.internl"


_GRADED: dict[tuple[str, str], dict[str, C.Grade]] = {}


def graded(cid: str, case: str, runtime: str, tmp: pytest.TempPathFactory) -> C.Grade:
    """*cid*'s grade of *case*: every wrong fix of a challenge is graded in one go (side by side
    in one lab, :func:`harness.course.challenges.grade_many`), on first use."""
    if (cid, runtime) not in _GRADED:
        ch = C.get(cid)
        paths = []
        for name, files in attempts(ch).items():
            where = tmp.mktemp(f"{cid}-{name}")
            for file, text in files.items():
                (where / file).write_text(text)
            paths.append(where / ch.config)
        _GRADED[cid, runtime] = dict(zip(attempts(ch), C.grade_many(ch, paths, runtime=runtime), strict=True))
    return _GRADED[cid, runtime][case]


@pytest.mark.integration
@pytest.mark.parametrize(("cid", "case"), _one_worker(PAIRS, "local"))
def test_a_wrong_fix_is_not_yet_with_a_reason(
    local_runtime: str, tmp_path_factory: pytest.TempPathFactory, cid: str, case: str
) -> None:
    ch = C.get(cid)
    g = graded(cid, case, local_runtime, tmp_path_factory)
    assert not g.solved, f"{cid}: the wrong fix {case!r} was SOLVED"
    assert g.failures or g.rejected
    for f in g.failures:
        assert f["reason"] and f["upstream"], f
    text = C.render_grade(g, hints_left=False)
    assert f"NOT YET {cid}" in text
    if case in ("other-host", "other-ip"):
        host = (ATTACKER if case == "other-host" else OTHER_IP).split(":")[0]
        assert any(f["identity"] is None and host in f["reason"] for f in g.failures), g.failures
    if case in ("typo-name", "sibling-name"):  # the feedback names the wrong name (the grader's or the proxy's words)
        wrong = typo(ch.backend.name) if case == "typo-name" else SIBLING
        assert any(wrong in f["reason"] for f in g.failures), g.failures
    if case == "typo-ca-path":  # the feedback names the path that does not exist
        wrong = typo(ch.backend.ca_file)
        assert any(f"{wrong} does not exist" in f["reason"] for f in g.failures), g.failures
    if case in ("static-200", "graded-elsewhere"):
        assert any("graded request" in f["upstream"] or "backend" in f["reason"] for f in g.failures), g.failures


@pytest.mark.integration
def test_graded_side_by_side_or_alone_the_verdict_is_the_same(local_runtime: str, tmp_path: Path) -> None:
    """One lab for several attempts changes nothing: each proxy is its own process and port."""
    ch = C.get("haproxy-default-server")
    texts = {**{k: v[ch.config] for k, v in attempts(ch).items()}, "solution": ch.solution_file.read_text()}
    paths = []
    for name in ("solution", "second-route-verify-off", "typo-name", "static-200"):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / ch.config)
        paths[-1].write_text(texts[name])
    together = C.grade_many(ch, paths)
    alone = [C.grade(ch, p) for p in paths]
    for a, b in zip(together, alone, strict=True):
        assert a.solved == b.solved
        assert [(c.upstream, c.identity, c.outcome) for c in a.cells] == [
            (c.upstream, c.identity, c.outcome) for c in b.cells
        ]
    assert [g.solved for g in together] == [True, False, False, False]


@pytest.mark.integration
def test_check_on_your_own_config_still_trusts_the_name_it_names(local_runtime: str, tmp_path: Path) -> None:
    """`trustlab check` keeps today's behaviour: the config names its backend. Only the grade pins it."""
    from harness.check import check

    ch = C.get("nginx-ca-without-verify")
    path = tmp_path / ch.config
    path.write_text(attempts(ch)["typo-name"][ch.config])
    assert check("nginx", path).ok  # a verifying config for backend-api.internl, as written
    pinned = check("nginx", path, pinned=ch.backend)
    assert not pinned.ok and any("expects" in p.text for p in pinned.problems)
    assert pinned.outcome("legit").value == "blocked"  # the real backend's certificate names backend-api.internal


#: One challenge per kind on the docker runtime, every wrong fix (the local runtime runs them all).
DOCKER_ONE_PER_KIND = (
    "nginx-ca-without-verify",
    "apache-verify-none",
    "haproxy-default-server",
    "caddy-ip-target",
    "traefik-ip-target",
    "envoy-ca-without-san",
    "squid-default-ca",
    "trafficserver-signature",
)
DOCKER_PAIRS = [(cid, case) for cid, case in PAIRS if cid in DOCKER_ONE_PER_KIND]


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.parametrize(("cid", "case"), _one_worker(DOCKER_PAIRS, "docker"))
def test_the_docker_grader_refuses_them_too(
    docker_ready: str, tmp_path_factory: pytest.TempPathFactory, cid: str, case: str
) -> None:
    g = graded(cid, case, docker_ready, tmp_path_factory)
    assert not g.solved and g.failures, f"{cid}: {case} SOLVED on docker"


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.parametrize("cid", DOCKER_ONE_PER_KIND)
def test_the_docker_grader_solves_the_reference(docker_ready: str, cid: str) -> None:
    ch = C.get(cid)
    g = C.grade(ch, ch.solution_file, runtime=docker_ready)
    assert g.solved, g.failures or g.rejected
