"""A user's config is someone else's (a pull request checked in CI, a challenge attempt): the
adapters read no host file on its say-so, and their parsers stay bounded (issue 26, items 3-4).

No proxy runs here except in the last test (``check`` refuses before any lab starts).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.configs import base
from harness.configs import caddy as cconf
from harness.configs import envoy as econf
from harness.configs import traefik as tconf
from harness.errors import ConfigError

STATIC = "entryPoints:\n  web:\n    address: ':80'\nproviders:\n  file:\n    {key}: {value}\n"
SERVICE = (
    "http:\n  routers:\n    r:\n      rule: PathPrefix(`/`)\n      service: s\n  services:\n    s:\n"
    "      loadBalancer:\n        servers:\n          - url: https://backend.internal:8443\n"
)


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, str]:
    """A root-only directory outside the config's, holding a dynamic file with a secret in it."""
    token = f"Bearer trustlab-{secrets.token_hex(8)}"
    d = tmp_path / "outside"
    d.mkdir(mode=0o700)
    secret = d / "secret.yml"
    secret.write_text(
        SERVICE + f"  middlewares:\n    m:\n      headers:\n        customRequestHeaders:\n"
        f"          Authorization: '{token}'\n"
    )
    secret.chmod(0o600)
    return d, token


def _conf(tmp_path: Path, key: str, value: str) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    path = conf / "traefik.yml"
    path.write_text(STATIC.format(key=key, value=value))
    return path


def _refused(path: Path, token: str, *says: str) -> str:
    with pytest.raises(ConfigError) as info:
        tconf.parse(path)
    msg = str(info.value)
    assert token not in msg and "Bearer" not in msg  # named, never shown
    assert len(msg.splitlines()) == 1
    for s in says:
        assert s in msg, msg
    return msg


def test_traefik_reads_no_absolute_path(tmp_path: Path, outside: tuple[Path, str]) -> None:
    d, token = outside
    path = _conf(tmp_path, "filename", str(d / "secret.yml"))
    _refused(path, token, "providers.file.filename", "not found beside the config")
    path = _conf(tmp_path, "directory", str(d))
    _refused(path, token, "providers.file.directory", "not found beside the config")


def test_traefik_reads_nothing_above_its_directory(tmp_path: Path, outside: tuple[Path, str]) -> None:
    _, token = outside
    _refused(_conf(tmp_path, "filename", "../outside/secret.yml"), token, "leaves the config's directory")
    _refused(_conf(tmp_path, "directory", "../outside"), token, "leaves the config's directory")
    _refused(_conf(tmp_path, "filename", "./a/../../outside/secret.yml"), token, "leaves the config's directory")


def test_traefik_follows_no_link_out(tmp_path: Path, outside: tuple[Path, str]) -> None:
    d, token = outside
    path = _conf(tmp_path, "filename", "dynamic.yml")
    (path.parent / "dynamic.yml").symlink_to(d / "secret.yml")
    _refused(path, token, "dynamic.yml is a symbolic link")
    path = _conf(tmp_path, "filename", "sub/secret.yml")
    (path.parent / "sub").symlink_to(d)
    _refused(path, token, "symbolic link")
    path = _conf(tmp_path, "directory", "linked.d")
    (path.parent / "linked.d").symlink_to(d)
    _refused(path, token, "symbolic link")
    path = _conf(tmp_path, "directory", "conf.d")
    (path.parent / "conf.d").mkdir()
    (path.parent / "conf.d" / "10-secret.yml").symlink_to(d / "secret.yml")
    _refused(path, token, "10-secret.yml is a symbolic link")


def test_traefik_still_reads_its_own_files(tmp_path: Path) -> None:
    """The controls: a file beside the static one (named relatively, or by the deployment path
    it was written for), and a directory beside it."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "dynamic.yml").write_text(SERVICE)
    for value in ("dynamic.yml", "./dynamic.yml", "/etc/traefik/dynamic.yml"):
        path = _conf(tmp_path, "filename", value)
        assert [s for s, _, _, _ in tconf.parse(path).https_servers()] == ["s"], value
    (conf / "conf.d").mkdir()
    (conf / "conf.d" / "a.yml").write_text(SERVICE)
    assert [s for s, *_ in tconf.parse(_conf(tmp_path, "directory", "conf.d")).https_servers()] == ["s"]


def test_traefik_reads_the_usual_layout(tmp_path: Path, outside: tuple[Path, str]) -> None:
    """/etc/traefik/traefik.yml naming /etc/traefik/dynamic/api.yml, shipped as traefik.yml +
    dynamic/api.yml: the path's tail beside the static file (issue 24); a directory the same way.
    Links and ``..`` stay refused."""
    conf = tmp_path / "conf"
    (conf / "dynamic").mkdir(parents=True)
    (conf / "dynamic" / "api.yml").write_text(SERVICE)
    for key, value in (
        ("filename", "/etc/traefik/dynamic/api.yml"),
        ("filename", "dynamic/api.yml"),
        ("directory", "/etc/traefik/dynamic"),
        ("directory", "/etc/traefik/dynamic/"),
    ):
        path = _conf(tmp_path, key, value)
        assert [s for s, *_ in tconf.parse(path).https_servers()] == ["s"], value
        assert base.named_file(path, value, key).parts[0] == "dynamic"
    d, token = outside
    (conf / "linked").symlink_to(d)
    _refused(_conf(tmp_path, "directory", "/etc/traefik/linked"), token, "symbolic link")
    _refused(_conf(tmp_path, "filename", "/etc/traefik/dynamic/../../outside/secret.yml"), token, "(..)")


def test_yaml_errors_quote_no_content(tmp_path: Path) -> None:
    """PyYAML's message carries a snippet of the file around the error: it is not shown."""
    token = f"trustlab-{secrets.token_hex(8)}"
    path = tmp_path / "dynamic.yml"
    path.write_text(f"http:\n  services: {{\n    a: '{token}'\n  b: [{token}\n")
    with pytest.raises(ConfigError) as info:
        tconf.parse(path)
    msg = str(info.value)
    assert token not in msg and "invalid YAML at line" in msg, msg


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["envoy", "traefik"])
def test_yaml_alias_bombs_are_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bomb.yaml"
    top = "static_resources:\n  clusters: []\n" if kind == "envoy" else "http:\n  services: {}\n"
    path.write_text(top + _alias_bomb())
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases .* expand it to more than"):
        (econf.parse if kind == "envoy" else tconf.parse)(path)
    assert time.perf_counter() - t0 < 2


def test_yaml_aliases_within_bounds_still_read(tmp_path: Path) -> None:
    path = tmp_path / "reuse.yml"
    path.write_text(SERVICE.replace("    s:\n", "    s: &svc\n") + "    t: *svc\n")
    assert sorted(s for s, *_ in tconf.parse(path).https_servers()) == ["s", "t"]


MAX_DEPTH = getattr(base, "MAX_DEPTH", 100)  # getattr: the test also runs against a tree without it
DEEP = MAX_DEPTH * 20


@pytest.mark.parametrize(
    ("name", "text", "load"),
    [
        ("deep.yml", "http: " + "[" * DEEP + "]" * DEEP + "\n", tconf.parse),
        ("deep.toml", "[http]\nx = " + "[" * DEEP + "]" * DEEP + "\n", tconf.parse),
        ("deep-inline.toml", "[http]\nx = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n", tconf.parse),
        ("deep.yaml", "static_resources: " + "[" * DEEP + "]" * DEEP + "\n", econf.parse),
        ("deep.json", '{"apps": ' + "[" * DEEP + "]" * DEEP + "}\n", cconf.load),
        ("shallow-but-past.json", '{"apps": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}\n", cconf.load),
    ],
)
def test_deep_nesting_is_one_line(tmp_path: Path, name: str, text: str, load: object) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested more than") as info:
        load(path)  # type: ignore[operator]
    assert len(str(info.value).splitlines()) == 1


def test_caddy_snippet_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["(s0) {", "\theader X y", "}"]
    for i in range(1, 10):
        lines += [f"(s{i}) {{", *[f"\timport s{i - 1}"] * 10, "}"]
    lines += ["example.com {", "\timport s9", "\treverse_proxy https://backend.internal:8443", "}"]
    path = tmp_path / "Caddyfile"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="snippet imports expand"):
        cconf.load(path)
    assert time.perf_counter() - t0 < 2


@pytest.mark.bad_input
def test_bounds_are_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("http:\n  services: {}\n" + _alias_bomb())
    deep = tmp_path / "deep.json"
    deep.write_text('{"apps": ' + "[" * DEEP + "]" * DEEP + "}\n")
    for proxy, cfg, says in (("traefik", bomb, "aliases"), ("caddy", deep, "nested more than")):
        assert main(["audit", "--proxy", proxy, str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err


@pytest.mark.integration
@pytest.mark.bad_input
def test_too_many_upstreams_is_one_line(local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """230 upstream names from a small file used to crash the lab (``ip addr add 10.203.0.256``)."""
    locs = "".join(
        f"        location /u{i} {{ proxy_pass https://up{i}.internal:8443; proxy_ssl_verify on; }}\n"
        for i in range(230)
    )
    cfg = tmp_path / "many.conf"
    cfg.write_text(f"http {{\n    server {{\n        listen 80;\n{locs}    }}\n}}\n")
    assert main(["check", "--runtime", "local", "nginx", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "230 upstreams" in err and "at most 200" in err, err


# -- Envoy: extensions by allow-list (issue 26, item 2) -----------------------------------------
T = "type.googleapis.com/"
LUA_TYPE = "envoy.extensions.filters.http.lua.v3.Lua"
LUA_CODE = {"inline_string": "function envoy_on_request(h) h:logInfo('LUA-RAN') end"}
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": T + "envoy.extensions.filters.http.router.v3.Router"},
}
CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {"@type": T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
}


def _lua() -> dict:
    return {"name": "envoy.filters.http.lua", "typed_config": {"@type": T + LUA_TYPE, "default_source_code": LUA_CODE}}


def _wrapped(wrapper: str, type_url: str, value: dict) -> dict:
    return {"@type": T + wrapper, "type_url": T + type_url, "value": value}


def _envoy(case: str) -> dict:
    """A working Envoy bootstrap (one listener, one TLS cluster) with Lua put where *case* says."""
    route: dict = {"match": {"prefix": "/"}, "route": {"cluster": "api"}}
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": T + "envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm: dict = {
        "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "in",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
        "http_filters": [router],
    }
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "backend.internal",
            "common_tls_context": {"validation_context": {"trusted_ca": {"filename": "/etc/ssl/ca.pem"}}},
        },
    }
    cluster: dict = {
        "name": "api",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "transport_socket": tls,
        "load_assignment": {
            "cluster_name": "api",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "backend.internal", "port_value": 8443}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    listener_filter: dict = {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
    if case == "typed-struct-xds":
        hcm["http_filters"].insert(
            0,
            {
                "name": "x",
                "typed_config": _wrapped("xds.type.v3.TypedStruct", LUA_TYPE, {"default_source_code": LUA_CODE}),
            },
        )
    elif case == "typed-struct-udpa":
        hcm["http_filters"].insert(
            0,
            {
                "name": "x",
                "typed_config": _wrapped("udpa.type.v1.TypedStruct", LUA_TYPE, {"default_source_code": LUA_CODE}),
            },
        )
    elif case == "router-upstream-filters":
        router["typed_config"]["upstream_http_filters"] = [_lua(), CODEC]
    elif case == "cluster-upstream-filters":
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [_lua(), CODEC],
            }
        }
    elif case == "hcm-in-typed-struct":
        hcm["http_filters"].insert(0, _lua())
        inner = {k: v for k, v in hcm.items() if k != "@type"}
        listener_filter["typed_config"] = _wrapped("xds.type.v3.TypedStruct", hcm["@type"][len(T) :], inner)
    elif case == "upgrade-configs":
        hcm["upgrade_configs"] = [{"upgrade_type": "websocket", "filters": [_lua(), ROUTER]}]
    elif case == "per-route":
        route["typed_per_filter_config"] = {
            "envoy.filters.http.lua": {
                "@type": T + "envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                "source_code": LUA_CODE,
            }
        }
    elif case == "composite":
        action = {
            "name": "run",
            "typed_config": {
                "@type": T + "envoy.extensions.filters.http.composite.v3.ExecuteFilterAction",
                "typed_config": {
                    "name": "lua",
                    "typed_config": {"@type": T + LUA_TYPE, "default_source_code": LUA_CODE},
                },
            },
        }
        hcm["http_filters"].insert(
            0,
            {
                "name": "composite",
                "typed_config": {
                    "@type": T + "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
                    "extension_config": {
                        "name": "composite",
                        "typed_config": {"@type": T + "envoy.extensions.filters.http.composite.v3.Composite"},
                    },
                    "xds_matcher": {
                        "matcher_tree": {
                            "input": {
                                "name": "h",
                                "typed_config": {
                                    "@type": T + "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                                    "header_name": "x",
                                },
                            },
                            "exact_match_map": {"map": {"y": {"action": action}}},
                        }
                    },
                },
            },
        )
    elif case == "plain":
        hcm["http_filters"].insert(0, _lua())
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
                    "filter_chains": [{"filters": [listener_filter]}],
                }
            ],
            "clusters": [cluster],
        }
    }


ENVOY_BYPASSES = [
    "plain",
    "typed-struct-xds",
    "typed-struct-udpa",
    "router-upstream-filters",
    "cluster-upstream-filters",
    "hcm-in-typed-struct",
    "upgrade-configs",
    "per-route",
    "composite",
]


@pytest.mark.parametrize("case", ENVOY_BYPASSES)
def test_envoy_adapter_keeps_no_lua_anywhere(tmp_path: Path, case: str) -> None:
    import json

    from harness.check import _lab_paths
    from harness.configs.base import Ports

    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(_envoy(case)))
    adapted = econf.adapt(path, _lab_paths(tmp_path, tmp_path / "run"), ports=Ports())
    assert "LUA-RAN" not in adapted.text and "lua.v3" not in adapted.text.lower(), adapted.text
    assert any("dropped" in n and "allow-list" in n for n in adapted.adaptations), adapted.adaptations
    out = json.loads(adapted.text.split("\n", 1)[1])
    hcm = out["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    # What carries the request stays: the HCM (unwrapped), its router, its routes, the TLS cluster.
    assert hcm["@type"].endswith("HttpConnectionManager") and hcm["http_filters"][-1]["name"].endswith("router")
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"] == {"cluster": "api"}
    assert [u.host for u in adapted.upstreams] == ["backend.internal"]


# -- Traefik: middlewares by allow-list ----------------------------------------------------------
def test_traefik_keeps_only_rewriting_middlewares(tmp_path: Path) -> None:
    import json

    from harness.check import _lab_paths
    from harness.configs.base import Ports

    path = tmp_path / "dynamic.yml"
    path.write_text(
        SERVICE.replace(
            "      service: s\n",
            "      service: s\n      middlewares: [retry, auth, plug, breaker, basic, hdr, strip, both]\n",
        )
        + """  middlewares:
    retry:
      retry: {attempts: 50, initialInterval: 10s}
    auth:
      forwardAuth: {address: "http://127.0.0.1:9/"}
    plug:
      plugin: {evil: {}}
    breaker:
      circuitBreaker: {expression: "NetworkErrorRatio() > 0.1"}
    basic:
      basicAuth: {users: ["a:b"]}
    hdr:
      headers: {customRequestHeaders: {X-A: b}}
    strip:
      stripPrefix: {prefixes: [/api]}
    both:
      chain: {middlewares: [hdr, retry]}
"""
    )
    adapted = tconf.adapt(path, _lab_paths(tmp_path, tmp_path / "run"), ports=Ports())
    http = json.loads(adapted.text)["http"]
    assert http["routers"]["r"]["middlewares"] == ["hdr", "strip", "both"]
    assert sorted(http["middlewares"]) == ["both", "hdr", "strip"]
    assert http["middlewares"]["both"]["chain"]["middlewares"] == ["hdr"]
    notes = "\n".join(adapted.adaptations)
    for name in ("retry", "auth", "plug", "breaker", "basic"):
        assert f"middleware {name} (" in notes, notes


# -- Caddy: directives and handlers by allow-list ------------------------------------------------
CADDY_HOSTILE = """(common) {
\tforward_auth 127.0.0.1:9 {
\t\turi /auth
\t}
\theader X-Kept yes
}
example.com {
\timport common
\tbasic_auth {
\t\talice JDJhJDE0JGZha2U
\t}
\ttemplates
\tphp_fastcgi 127.0.0.1:9000
\t@api path /api/*
\thandle @api {
\t\ttracing
\t\treverse_proxy https://backend.internal:8443 {
\t\t\theader_up Host backend.internal
\t\t}
\t}
\troute {
\t\tinvoke other
\t\trespond "ok"
\t}
}
"""


def test_caddy_keeps_only_routing_directives(tmp_path: Path) -> None:
    from harness.check import _lab_paths
    from harness.configs.base import Ports

    path = tmp_path / "Caddyfile"
    path.write_text(CADDY_HOSTILE)
    adapted = cconf.adapt(path, _lab_paths(tmp_path, tmp_path / "run"), ports=Ports())
    for gone in ("forward_auth", "basic_auth", "templates", "php_fastcgi", "tracing", "invoke"):
        assert gone not in adapted.text, gone
        assert any(n.split(": ", 1)[-1].startswith(f"{gone} dropped") for n in adapted.adaptations), gone
    for kept in (
        "header X-Kept yes",
        "@api path /api/*",
        "handle @api",
        "header_up Host backend.internal",
        'respond "ok"',
        "import common",
    ):
        assert kept in adapted.text, kept
    assert [u.host for u in adapted.upstreams] == ["backend.internal"]


def test_caddy_json_keeps_only_routing_handlers(tmp_path: Path) -> None:
    import json

    from harness.check import _lab_paths
    from harness.configs.base import Ports

    rp = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": "backend.internal:8443"}],
        "transport": {"protocol": "http", "tls": {}},
    }
    routes = [
        {
            "handle": [
                {"handler": "authentication", "providers": {}},
                {"handler": "subroute", "routes": [{"handle": [{"handler": "tracing"}, rp]}]},
            ]
        }
    ]
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps({"apps": {"http": {"servers": {"s": {"listen": [":80"], "routes": routes}}}}}))
    adapted = cconf.adapt(path, _lab_paths(tmp_path, tmp_path / "run"), ports=Ports())
    server = json.loads(adapted.text)["apps"]["http"]["servers"]["s"]
    (sub,) = server["routes"][0]["handle"]
    assert sub["handler"] == "subroute" and [h["handler"] for h in sub["routes"][0]["handle"]] == ["reverse_proxy"]
    notes = "\n".join(adapted.adaptations)
    assert "handler 'authentication' dropped" in notes and "handler 'tracing' dropped" in notes


def test_envoy_fault_filter_is_dropped(tmp_path: Path) -> None:
    """Fault injection only slows the lab (a delay on every cell): it is not on the allow-list."""
    import json

    from harness.check import _lab_paths
    from harness.configs.base import Ports

    config = _envoy("none")
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": T + "envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"fixed_delay": "10s", "percentage": {"numerator": 100}},
            },
        },
    )
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    adapted = econf.adapt(path, _lab_paths(tmp_path, tmp_path / "run"), ports=Ports())
    assert "HTTPFault" not in adapted.text and "fixed_delay" not in adapted.text
    assert any("envoy.filters.http.fault dropped" in n for n in adapted.adaptations)


# -- the trusted side's reader (harness.runtimes.sandbox.read_planted), without a proxy --------------------
def test_read_planted_refuses_what_a_proxy_can_plant(tmp_path: Path) -> None:
    from harness.runtimes.sandbox import TAIL, read_planted, size_planted

    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("root-only\n")
    (run / "link.log").symlink_to(secret)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "error.log").write_text("root-only\n")
    (run / "linked").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(run / "fifo.log")
    (run / "zero.log").symlink_to("/dev/zero")
    (run / "big.log").write_bytes(b"x" * (3 * TAIL) + b"\nlast line\n")
    (run / "logs" / "ok.log").write_text("fine\n")
    t0 = time.perf_counter()
    for name, why in (
        ("link.log", "symbolic link"),
        ("linked/error.log", "symbolic link"),
        ("fifo.log", "not a regular file"),
        ("zero.log", "symbolic link"),
    ):
        data, refused = read_planted(run / name, run)
        assert data == b"" and refused and why in refused, (name, refused)
    assert time.perf_counter() - t0 < 1  # the FIFO did not block
    data, refused = read_planted(run / "big.log", run)
    assert refused is None and len(data) == TAIL and data.endswith(b"last line\n")
    assert read_planted(run / "logs" / "ok.log", run) == (b"fine\n", None)
    assert read_planted(run / "logs" / "ok.log", run, since=2) == (b"ne\n", None)
    assert read_planted(run / "gone.log", run) == (b"", None)  # deleted: empty, not an error
    assert read_planted(run / "logs" / "ok.log", run, owners=(os.getuid() + 1,))[1] is not None
    assert size_planted(run / "link.log", run) == 0 and size_planted(run / "logs" / "ok.log", run) == 5


# -- a deadline per lab worker (issue 26, item 4) ------------------------------------------------
TARPIT = """defaults
    mode http
    timeout connect 3s
    timeout client 20s
    timeout server 20s
    timeout tarpit 2s
frontend fe
    bind :80
    http-request tarpit
    default_backend be
backend be
    server s backend.internal:8443 ssl verify required ca-file /etc/ssl/ca.pem
"""


@pytest.mark.integration
@pytest.mark.serial  # timed: stops at its deadline, < 12 s
@pytest.mark.parametrize("where", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_config_that_slows_every_request_stops_at_the_deadline(
    where: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HAProxy holds every request 2 s (tarpit): 10 cells would take 30 s; past the lab's
    deadline the remaining cells are reported as ``error`` (deadline) instead of run."""
    from harness.check import check
    from harness.runtimes import local

    # docker: the runtime sets the deadline too (issue 26 item 4)
    runtime = request.getfixturevalue("local_runtime" if where == "local" else "docker_ready")
    monkeypatch.setattr(local, "LAB_DEADLINE_S", 4.0)
    monkeypatch.setattr(local, "CELL_DEADLINE_S", 0.0)
    cfg = tmp_path / "slow.cfg"
    cfg.write_text(TARPIT)
    t0 = time.perf_counter()
    result = check("haproxy", cfg, runtime=runtime)
    took = time.perf_counter() - t0
    outcomes = [c.outcome.value for c in result.cells]
    assert len(outcomes) == 10 and set(outcomes) == {"error"}, result.cells
    late = [c for c in result.cells if c.reason.startswith("deadline:")]
    assert 5 <= len(late) < 10, result.cells
    assert took < 12, took


@pytest.mark.integration
def test_a_matrix_past_its_deadline_reports_each_cell_once(local_runtime: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import runner, scenarios
    from harness.runtimes import local

    monkeypatch.setattr(local, "LAB_DEADLINE_S", 0.001)
    monkeypatch.setattr(local, "CELL_DEADLINE_S", 0.0)
    scs = [s for s in scenarios.select() if s.id in ("nginx/good", "haproxy/good", "apache/good")]
    results = runner.run(scs, runtime="local", shards=1)
    keys = [(c.scenario, c.identity) for c in results.cells]
    assert len(keys) == len(set(keys)) == 3 * len({c.identity for c in results.cells})
    assert {c.outcome.value for c in results.cells} == {"error"}
    assert all(c.reason.startswith("deadline:") for c in results.cells), results.cells
