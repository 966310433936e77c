"""Request matchers (issue 24 item 4): for every route kind a config can declare, ``check`` sends a
request that matches it, says which (the upstream block's ``request``), and only what truly cannot
be matched is ``error`` with the reason. Each config below has, per HTTPS upstream, one route that
needs one matcher kind, and a catch-all that leads nowhere: a legitimate ``served`` proves the
request matched on the real proxy, an impostor judged (``blocked``) proves the upstream was
exercised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REQUIRE_PROXIES

from harness.check import check
from harness.configs.haproxy import _acl_route
from harness.configs.matchers import Request, Term, matches, regex_example, request_for
from harness.configs.traefik import rule_request
from harness.proxies import driver

CONFIGS = Path(__file__).parent / "configs" / "matchers"
IDS = ("legit", "rogue-ca")


def _need(kind: str) -> None:
    if not driver(kind).find_binary():
        msg = f"{kind} is not installed"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)


def _by_upstream(proxy: str, name: str, key: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Per upstream (by the word *key* picks from its label): outcome per identity, and its info."""
    result = check(proxy, CONFIGS / name, identities=IDS)
    assert result.rejected is None, result.rejected
    pick = re.compile(key)

    def word(label: str) -> str:
        m = pick.search(label)
        assert m, label
        return m.group(1)

    cells: dict[str, dict[str, str]] = {}
    for c in result.cells:
        cells.setdefault(word(c.upstream), {})[c.identity] = f"{c.outcome.value}: {c.reason}"
    info = {word(u["label"]): u for u in result.upstream_info}
    return cells, info


def _exercised(cells: dict[str, dict[str, str]], info: dict[str, dict[str, str]], name: str, request: str) -> None:
    got = cells[name]
    assert got["legit"].startswith("served:"), (name, got)
    assert got["rogue-ca"].startswith("blocked:"), (name, got)
    assert info[name]["request"] == request, info[name]


def _unmatched(cells: dict[str, dict[str, str]], info: dict[str, dict[str, str]], name: str, why: str) -> None:
    assert {v.split(":")[0] for v in cells[name].values()} == {"error"}, cells[name]
    assert all(why in v for v in cells[name].values()), cells[name]
    assert info[name]["request"] is None and why in (info[name]["unroutable"] or ""), info[name]


# -- the request builder --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "start", "want"),
    [
        (r"^/api/v[0-9]+/users", "/", "/api/v0/users"),
        (r"\.php$", "/", "/.php"),
        (r"^/(images|img)/.*\.(png|jpg)$", "/", "/images/.png"),
        (r"^/x/(\d{3})/\1$", "/", "/x/000/000"),
        (r"^tenant-[0-9]+\.example\.com$", "", "tenant-0.example.com"),
        (r"[^/]+\.internal", "/", "/a.internal"),
    ],
)
def test_regex_example_matches_its_pattern(pattern: str, start: str, want: str) -> None:
    got = regex_example(pattern, start=start)
    assert got == want and re.search(pattern, got)


@pytest.mark.parametrize("pattern", [r"^api\.example\.com$", r"a^b", r"^$", r"(", r"x{99}"])
def test_regex_example_refuses_what_no_path_matches(pattern: str) -> None:
    assert regex_example(pattern, start="/") is None


def test_negated_and_conflicting_terms_are_reasons_not_requests() -> None:
    prefix = Term("path", "beg", "/admin", text="PathPrefix(/admin)")
    assert (
        request_for(
            [[prefix, Term("path", "beg", "/admin", negated=True, text="!PathPrefix(/admin)")]], default_host="h"
        )
        == "!PathPrefix(/admin): is matched by the request the other matchers need"
    )
    both = request_for(
        [[Term("method", "eq", "PUT", text="m1"), Term("method", "eq", "POST", text="m2")]], default_host="h"
    )
    assert isinstance(both, str) and "'PUT' and 'POST'" in both
    # The first satisfiable alternative wins; the one before it is skipped.
    ok = request_for([[Term("client", "eq", "10.0.0.0/8", text="src")], [prefix]], default_host="h")
    assert not isinstance(ok, str) and ok.path == "/admin/"
    # The checker refuses a request that does not match.
    assert not matches(Term("header", "eq", "yes", "X-Canary"), Request(headers={"X-Canary": "no"}))
    assert not matches(Term("path", "reg", r"^/v2/\d+$"), Request(path="/v2/x"))
    assert matches(Term("host", "eq", "*.example.com"), Request(host="a.example.com"))
    assert not matches(Term("host", "eq", "*.example.com"), Request(host="a.b.example.com"))


def test_traefik_rules_parse_as_traefik_reads_them() -> None:
    r = rule_request("Host(`a.b`) && (Header(`X-Env`, `canary`) || Method(`POST`))")
    assert not isinstance(r, str) and (r.host, r.headers, r.method) == ("a.b", (("X-Env", "canary"),), "GET")
    r = rule_request('Headers("X-A", "b") && Query(`k=v`)')  # v2 spellings
    assert not isinstance(r, str) and (r.path, r.headers) == ("/?k=v", (("X-A", "b"),))
    assert rule_request("Host(`a`) && ") == "cannot parse the rule (it ends early)"
    assert rule_request("Foo(`x`)") == "Foo('x'): a matcher the lab cannot build a request for"
    assert "too complex" in str(rule_request("!(Path(`/a`) && Method(`PUT`))"))


def test_haproxy_conditions_parse_as_haproxy_reads_them() -> None:
    acls = {
        "api": [["path_beg", "/api"]],
        "post": [["method", "POST"]],
        "img": [["path_end", ".png"], ["path_end", ".jpg"]],
    }
    r = _acl_route(["if", "api", "post"], acls)
    assert not isinstance(r, str) and (r.path, r.method) == ("/api/", "POST")
    r = _acl_route(["if", "!api", "img"], acls)
    assert not isinstance(r, str) and r.path == "/.png"
    both = _acl_route(["if", "api", "!api"], acls)
    assert both == "!api (path_beg /api): is matched by the request the other matchers need"
    assert _acl_route(["if", "nope"], acls) == "acl nope is not defined in this frontend"
    assert "a fetch the lab cannot" in str(_acl_route(["if", "{", "path_len", "3", "}"], acls))


# -- on the real proxies --------------------------------------------------------------------


@pytest.mark.integration
def test_haproxy_every_matcher_kind(local_runtime: str) -> None:
    _need("haproxy")
    cells, info = _by_upstream("haproxy", "haproxy-matchers.cfg", r"^backend be_(\w+)")
    _exercised(cells, info, "exact", "GET /status/exact (Host www.trustlab.test)")
    _exercised(cells, info, "api", "GET /api/ (Host www.trustlab.test)")
    _exercised(cells, info, "img", "GET /.png (Host www.trustlab.test)")
    _exercised(cells, info, "shop", "GET / (Host shop.example.com)")
    _exercised(cells, info, "canary", "GET / (Host www.trustlab.test, X-Canary: yes)")
    _exercised(cells, info, "put", "PUT / (Host www.trustlab.test)")
    _exercised(cells, info, "debug", "GET /?debug=on (Host www.trustlab.test)")
    _exercised(cells, info, "v2", "GET /v2/a/0 (Host www.trustlab.test)")
    _unmatched(cells, info, "office", "the lab's client is 127.0.0.1, outside it")
    # An earlier use_backend takes every request the rule needs: the reason names it ...
    _unmatched(cells, info, "v1", "(GET /api/v1/) is taken first by use_backend be_api if is_api")
    # ... and an alternative no earlier rule takes is used instead.
    _exercised(cells, info, "either", "GET / (Host www.trustlab.test, X-Either: 1)")


@pytest.mark.integration
def test_traefik_every_matcher_kind(local_runtime: str) -> None:
    _need("traefik")
    cells, info = _by_upstream("traefik", "traefik-matchers.yml", r"^service (\w+)")
    _exercised(cells, info, "host", "GET / (Host shop.example.com)")
    _exercised(cells, info, "hostregexp", "GET / (Host tenant-0.example.com)")
    _exercised(cells, info, "path", "GET /status/exact (Host www.trustlab.test)")
    _exercised(cells, info, "prefix", "PUT /api/ (Host www.trustlab.test)")  # PathPrefix && Method
    _exercised(cells, info, "pathregexp", "GET /v2/a/0 (Host www.trustlab.test)")
    _exercised(cells, info, "header", "GET / (Host www.trustlab.test, X-Canary: yes)")  # && !PathPrefix
    _exercised(cells, info, "query", "GET /?debug=on (Host www.trustlab.test)")  # || ClientIP
    _unmatched(cells, info, "office", "ClientIP('10.20.0.0/16'): the lab's client is 127.0.0.1, outside it")
    # A router Traefik tries first (a longer rule) takes every request the rule needs ...
    _unmatched(cells, info, "shadowed", "(GET /shop/) is taken first by router greedy")
    # ... and an alternative no earlier router takes is used instead (priority 5 < 37).
    _exercised(cells, info, "sidestep", "DELETE / (Host www.trustlab.test)")


@pytest.mark.integration
def test_envoy_every_matcher_kind(local_runtime: str) -> None:
    _need("envoy")
    cells, info = _by_upstream("envoy", "envoy-matchers.yaml", r"^cluster (\w+)")
    _exercised(cells, info, "domain", "GET / (Host shop.example.com)")
    _exercised(cells, info, "prefix", "GET /api/ (Host www.trustlab.test)")
    _exercised(cells, info, "exact", "GET /status/exact (Host www.trustlab.test)")
    _exercised(cells, info, "regex", "GET /v2/a/0?trustlab-probe (Host www.trustlab.test)")
    _exercised(cells, info, "header", "GET / (Host www.trustlab.test, x-canary: yes)")
    _exercised(cells, info, "method", "PUT / (Host www.trustlab.test)")
    _exercised(cells, info, "query", "GET /?debug=on (Host www.trustlab.test)")
    _unmatched(cells, info, "scheme", "header matcher :scheme: a pseudo-header the lab cannot set")


@pytest.mark.integration
def test_nginx_every_matcher_kind(local_runtime: str) -> None:
    _need("nginx")
    cells, info = _by_upstream("nginx", "nginx-matchers.conf", r"^https://(\w+)\.svc")
    _exercised(cells, info, "prefix", "GET /api/ (Host www.trustlab.test)")
    _exercised(cells, info, "exact", "GET /status/exact (Host www.trustlab.test)")
    _exercised(cells, info, "regex", "GET /v2/a/0?trustlab-probe (Host www.trustlab.test)")
    _exercised(cells, info, "iregex", "GET /.PNG?trustlab-probe (Host www.trustlab.test)")
    _exercised(cells, info, "backref", "GET /a/a?trustlab-probe (Host www.trustlab.test)")  # (?!..), \1
    _exercised(cells, info, "exactname", "GET / (Host shop.example.com)")
    _exercised(cells, info, "wildcard", "GET / (Host probe.tenants.example.com)")
    _exercised(cells, info, "regexname", "GET / (Host app-0.example.org)")
    _unmatched(cells, info, "named", "named location @fallback: only an internal redirect")


# -- traefik --dynamic (issue 24 item 5) ----------------------------------------------------

_STATIC = """# /etc/traefik/traefik.yml; started as: traefik --providers.file.filename=/srv/traefik/api.yml
entryPoints:
  web:
    address: ":80"
serversTransport:
  insecureSkipVerify: true
"""
_DYNAMIC = """http:
  routers:
    api:
      rule: "Host(`api.example.com`) && Header(`X-Tenant`, `blue`)"
      service: api
  services:
    api:
      loadBalancer:
        servers:
          - url: "https://api.svc.internal:8443/"
"""


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "etc").mkdir()
    (tmp_path / "srv").mkdir()
    static, dynamic = tmp_path / "etc" / "traefik.yml", tmp_path / "srv" / "api.yml"
    static.write_text(_STATIC)
    dynamic.write_text(_DYNAMIC)
    return static, dynamic


@pytest.mark.integration
def test_traefik_dynamic_named_on_the_command_line(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The static file's serversTransport applies to the dynamic file's service: without
    ``--dynamic`` there is nothing to check; with it the impostor is spoofed (skip verify)."""
    from harness.cli import main

    _need("traefik")
    static, dynamic = _layout(tmp_path)
    assert main(["check", "traefik", str(static), "--runtime", "local"]) == 2
    assert "no HTTPS upstream found" in capsys.readouterr().err
    result = check("traefik", static, identities=IDS, dynamic=(dynamic,))
    assert result.rejected is None, result.rejected
    got = {c.identity: c.outcome.value for c in result.cells}
    assert got == {"legit": "served", "rogue-ca": "spoofed"}, result.summary()
    assert result.upstream_info[0]["request"] == "GET / (Host api.example.com, X-Tenant: blue)"
    assert any("read as a dynamic file (--dynamic)" in n for n in result.adaptations)
    code = main(
        ["check", "traefik", str(static), "--dynamic", str(dynamic), "--dynamic", str(dynamic), "--runtime", "local"]
    )
    assert code == 1  # rogue-ca and the others spoofed: FAIL, not bad input
    assert "X-Tenant: blue" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d.parent / "missing.yml", "no such file"),
        (lambda d: d.with_suffix(".txt"), "not a .yml, .yaml or .toml file"),
        (lambda d: d.parent, "not a .yml"),
        ("link", "is a symbolic link"),
    ],
)
def test_traefik_dynamic_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, needle: str
) -> None:
    from harness.cli import main

    static, dynamic = _layout(tmp_path)
    if make == "link":
        target = tmp_path / "etc" / "link.yml"
        target.symlink_to(dynamic)
    else:
        target = make(dynamic)  # type: ignore[operator]
        if target.suffix == ".txt":
            target.write_text(_DYNAMIC)
    assert main(["check", "traefik", str(static), "--dynamic", str(target), "--runtime", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_dynamic_is_refused_for_other_proxies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    _, dynamic = _layout(tmp_path)
    cfg = CONFIGS / "haproxy-matchers.cfg"
    assert main(["check", "haproxy", str(cfg), "--dynamic", str(dynamic), "--runtime", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "only Traefik has dynamic files" in err, err


@pytest.mark.integration
def test_apache_every_matcher_kind(local_runtime: str) -> None:
    _need("apache")
    cells, info = _by_upstream("apache", "apache-matchers.conf", r"https://(\w+)\.svc")
    _exercised(cells, info, "prefix", "GET /api/ (Host default.example.com)")
    _exercised(cells, info, "match", "GET /v2/a/0?trustlab-probe (Host default.example.com)")
    _exercised(cells, info, "location", "GET /billing/ (Host default.example.com)")
    _exercised(cells, info, "locmatch", "GET /reports/0000/ (Host default.example.com)")
    _exercised(cells, info, "vhost", "GET / (Host shop.example.com)")
    _exercised(cells, info, "alias", "GET / (Host tenants.example.com)")
    _unmatched(cells, info, "never", "no client request path matches '^health$'")
