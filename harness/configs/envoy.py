"""A user's Envoy static config (YAML or JSON bootstrap), parsed once, adapted to run in the lab and
audited from the same tree.

:func:`parse` reads the file into one tree (plain dicts and lists whose keys remember their line,
:class:`Map`); :func:`adapt` (``trustlab check``) and :func:`audit` (``trustlab audit``) both read
that tree, so both see the same clusters, the same TLS contexts and the same routes.

Kept exactly: every field of each cluster's ``UpstreamTlsContext`` that decides trust (``sni``,
``auto_host_sni``, ``auto_sni_san_validation``, the whole ``validation_context``:
``match_typed_subject_alt_names``, ``match_subject_alt_names``, ``trust_chain_verification``,
``allow_expired_certificate``, ``verify_certificate_spki``/``_hash``, TLS versions), the cluster's
``auto_sni``/``auto_san_validation``, its type and endpoints, and every listener's routes with
their host rewrites. Changed, each said in one line: ``trusted_ca`` (a file, an inline PEM or an
environment variable) stands for the lab's internal root or system bundle; client certificates
and downstream (listener) certificates are lab-minted; listeners move to ``127.0.0.1:<lab port>``;
access logs are the lab's (``%UPSTREAM_TRANSPORT_FAILURE_REASON%`` is the evidence of a block);
DNS goes through ``getaddrinfo`` (the lab's names are in its hosts file), and a cluster that is not
an HTTPS upstream does not hold the listeners for its DNS (``wait_for_warm_on_init: false``). Dropped: the admin
interface, ``dynamic_resources`` (xDS cannot reach the lab), health checks and outlier detection
(they would reach the seat between cells and eject hosts depending on the previous identity), CRLs
(the lab has none), stats sinks, tracing, bootstrap extensions, and, by allow-list
(:data:`ALLOWED_TYPES`), every extension anywhere in the tree that neither decides backend trust
nor carries the request (Lua, Wasm, ext_authz, composite and matcher-wrapped filters, upstream
filters, per-route configs, fault injection ...): they decide who may ask, never whom Envoy
trusts, and every proxy runs in :mod:`harness.runtimes.sandbox` anyway. A TypedStruct (xds or udpa) is
read as the typed config it wraps.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from harness.configs import rules
from harness.configs.base import (
    MAX_DEPTH,
    Adapted,
    LabPaths,
    Note,
    Ports,
    Route,
    Upstream,
    check_depth,
    check_yaml,
    is_ip,
    is_system_bundle,
    ordered,
    probe_path,
    read_config,
    trust_file,
)
from harness.configs.matchers import Built, Request, Term, matches, request_for
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_GETADDRINFO = {
    "name": "envoy.network.dns_resolver.getaddrinfo",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"
    },
}
_LOG_FORMAT = (
    'trustlab req="%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" status=%RESPONSE_CODE% '
    "flags=%RESPONSE_FLAGS% upstream=%UPSTREAM_HOST% "
    'upstream_transport_failure_reason="%UPSTREAM_TRANSPORT_FAILURE_REASON%"\n'
)
#: The only extension types (``@type``, after unwrapping a TypedStruct) an adapted config keeps,
#: anywhere they appear: what decides backend trust or carries a request through. Everything
#: else (Lua, Wasm, composite and matcher-wrapped filters, upstream filters, fault injection,
#: retry plugins, custom cluster types ...) is dropped with a note naming it (issue 26: a
#: deny-list let Lua through eight ways).
ALLOWED_TYPES = frozenset(
    {
        HCM,
        UPSTREAM_TLS,
        DOWNSTREAM_TLS,
        HTTP_OPTIONS,
        "envoy.extensions.filters.http.router.v3.Router",
        "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
        "envoy.extensions.filters.http.cors.v3.Cors",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions",
        "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig",
        "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
        "envoy.extensions.path.rewrite.uri_template.v3.UriTemplateRewriteConfig",
    }
)
#: Allowed by prefix: the TLS contexts and certificate validators (they decide trust: a SPIFFE
#: validator dropped would leave a cluster verifying less than the user's), load-balancing
#: policies (they pick among the cluster's own endpoints), a listener's filter-chain matcher
#: inputs and the chain names its actions carry.
_ALLOWED_PREFIXES = (
    "envoy.extensions.transport_sockets.tls.v3.",
    "envoy.extensions.load_balancing_policies.",
    "envoy.extensions.matching.common_inputs.network.",
    "google.protobuf.StringValue",
)
#: Extensions written by name alone (no typed_config) that are kept.
_ALLOWED_NAMES = frozenset(
    {
        "envoy.filters.network.http_connection_manager",
        "envoy.filters.http.router",
        "envoy.filters.http.upstream_codec",
        "envoy.filters.http.cors",
        "envoy.filters.network.tcp_proxy",
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
        "envoy.transport_sockets.tls",
        "envoy.transport_sockets.raw_buffer",
    }
)
_TYPED_STRUCTS = ("xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct")
#: Keys whose list entries are extensions even when written by name alone.
_EXTENSION_LISTS = (
    "http_filters",
    "filters",
    "listener_filters",
    "upstream_http_filters",
    "access_log",
    "upstream_log",
)
#: Bootstrap keys dropped: process settings and connections out of the lab.
_DROP_TOP = (
    "admin",
    "dynamic_resources",
    "stats_sinks",
    "stats_config",
    "tracing",
    "bootstrap_extensions",
    "hds_config",
    "flags_path",
    "watchdog",
    "watchdogs",
    "overload_manager",
    "fatal_actions",
    "layered_runtime",
    "default_regex_engine",
    "typed_dns_resolver_config",
    "dns_resolution_config",
)


# -- the tree ---------------------------------------------------------------------------------
class Map(dict[str, Any]):
    """A mapping of the config that remembers its own line and each key's (1-based)."""

    line: int = 0
    lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


class Seq(list[Any]):
    line: int = 0


@dataclass
class Tree:
    """One parsed Envoy config: the bootstrap mapping, where it came from, what it holds."""

    path: Path
    root: Map
    clusters: list[Map] = field(default_factory=list)
    listeners: list[Map] = field(default_factory=list)

    @property
    def static(self) -> Map:
        return self.root.get("static_resources") or Map()


def parse(path: Path, text: str | None = None) -> Tree:
    """The config at *path* as one :class:`Tree`, or a one-line :class:`ConfigError`."""
    text = read_config(path) if text is None else text
    root = _load(path, text)
    if not isinstance(root, dict):
        raise ConfigError(f"{path}: not an Envoy bootstrap (a YAML/JSON mapping with static_resources)")
    static = root.get("static_resources")
    if not isinstance(static, dict):
        what = "dynamic_resources only (xDS)" if "dynamic_resources" in root else "no static_resources"
        raise ConfigError(
            f"{path}: {what}: trustlab reads Envoy's static bootstrap (static_resources with listeners "
            "and clusters); an xDS-fed config cannot run in the lab"
        )
    _unwrap_typed_structs(root)
    clusters = [c for c in _list(static.get("clusters")) if isinstance(c, dict)]
    listeners = [x for x in _list(static.get("listeners")) if isinstance(x, dict)]
    return Tree(path, root, clusters, listeners)  # type: ignore[arg-type]


def _unwrap_typed_structs(root: Any) -> None:
    """Replace every TypedStruct (xds or udpa: ``type_url`` + ``value``) by the typed config it
    stands for, as Envoy reads it, so the adapter and the audit see the real type (an HCM or a
    Lua filter inside one is an HCM or a Lua filter). Iterative: depth is bounded at parse."""
    todo = [root]
    while todo:
        node = todo.pop()
        items: list[tuple[Any, Any]] = []
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        for key, value in items:
            while isinstance(value, dict) and _type(value) in _TYPED_STRUCTS and isinstance(value.get("type_url"), str):
                # value.value is the config itself; type_url names its type
                inner = value.get("value")
                plain = Map(inner) if isinstance(inner, dict) else Map()
                plain.line = getattr(value, "line", 0)
                plain.lines = dict(getattr(inner, "lines", {}) or {})
                plain["@type"] = "type.googleapis.com/" + value["type_url"].rsplit("/", 1)[-1]
                node[key] = value = plain
            todo.append(value)


def _load(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{path}: invalid JSON: {exc}") from None
            except RecursionError:
                raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
            check_depth(data, str(path))
            return _plain(data)
        raise ConfigError(
            f"{path}: reading Envoy YAML needs PyYAML; run: pip install 'trustlab[proxies]' (or pyyaml)"
        ) from None
    try:
        # Depth and alias expansion bounded before anything is built: _build below expands every
        # alias, so a few lines of nested aliases would otherwise take all memory.
        check_yaml(text, str(path), yaml)
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be an Envoy config") from None
    nodes = [n for n in nodes if n is not None]
    if len(nodes) != 1:
        raise ConfigError(f"{path}: {len(nodes)} YAML documents; an Envoy bootstrap is one")
    constructor = yaml.SafeLoader("")
    try:
        return _build(nodes[0], constructor, yaml)
    except (yaml.YAMLError, RecursionError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read this YAML: {str(exc).splitlines()[0]}") from None


def _build(node: Any, constructor: Any, yaml: Any) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = Map()
        out.line, out.lines = node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = str(constructor.construct_object(key_node, deep=True))
            out[key] = _build(value_node, constructor, yaml)
            out.lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = Seq(_build(v, constructor, yaml) for v in node.value)
        seq.line = node.start_mark.line + 1
        return seq
    return constructor.construct_object(node, deep=True)


def _plain(value: Any) -> Any:
    """JSON without PyYAML: the same tree shape, with no line numbers."""
    if isinstance(value, dict):
        out = Map((k, _plain(v)) for k, v in value.items())
        out.lines = {}
        return out
    if isinstance(value, list):
        return Seq(_plain(v) for v in value)
    return value


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _type(typed: Any) -> str:
    """``envoy.extensions...UpstreamTlsContext`` from a typed_config's ``@type`` (or ``""``)."""
    if not isinstance(typed, dict):
        return ""
    return str(typed.get("@type", "")).rsplit("/", 1)[-1]


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


# -- clusters, endpoints, TLS -----------------------------------------------------------------
@dataclass
class ClusterTLS:
    """One cluster whose transport socket is TLS, with the parts that decide trust."""

    cluster: Map
    name: str
    tls: Map
    validation: Map | None
    #: ``(host, port, line, endpoint hostname)`` per endpoint of the cluster's static assignment.
    endpoints: list[tuple[str, int, int, str]]
    protocol: dict[str, Any]

    @property
    def line(self) -> int:
        return self.cluster.line

    @property
    def sni(self) -> str:
        return str(self.tls.get("sni") or "")

    @property
    def san_matchers(self) -> list[tuple[str, str, str]]:
        """``(san_type, matcher kind, value)`` of the typed and the deprecated SAN matchers."""
        out: list[tuple[str, str, str]] = []
        v: dict[str, Any] = self.validation or {}
        for m in _list(v.get("match_typed_subject_alt_names")):
            if isinstance(m, dict):
                out += [(str(m.get("san_type", "")), *_matcher(m.get("matcher")))]
        for m in _list(v.get("match_subject_alt_names")):
            out.append(("ANY", *_matcher(m)))
        return out

    @property
    def name_checked(self) -> bool:
        """Whether anything checks the certificate's name."""
        return bool(
            self.san_matchers
            or self.tls.get("auto_sni_san_validation") is True
            or self.protocol.get("auto_san_validation")
        )


def _matcher(m: Any) -> tuple[str, str]:
    if not isinstance(m, dict):
        return ("", "")
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in m:
            return (kind, str(m[kind]))
    if "safe_regex" in m:
        return ("safe_regex", str(_get(m, "safe_regex", "regex") or ""))
    return ("", "")


def _tls_context(sock: Any) -> Map | None:
    """The UpstreamTlsContext of a transport_socket, or ``None`` when it is not TLS."""
    if not isinstance(sock, dict):
        return None
    typed = sock.get("typed_config")
    if sock.get("name") == TLS_SOCKET or _type(typed) == UPSTREAM_TLS:
        if isinstance(typed, dict):
            return typed  # type: ignore[return-value]
        empty = Map()
        empty.line, empty.lines = getattr(sock, "line", 0), {}
        return empty
    return None


def _sockets(cluster: dict[str, Any]) -> list[Any]:
    """A cluster's transport sockets: its own and those of its transport_socket_matches."""
    matches = _list(cluster.get("transport_socket_matches"))
    return [cluster.get("transport_socket"), *(_get(m, "transport_socket") for m in matches)]


def _validation(tls: Map) -> Map | None:
    common = tls.get("common_tls_context")
    if not isinstance(common, dict):
        return None
    v = common.get("validation_context")
    if isinstance(v, dict):
        return v  # type: ignore[return-value]
    combined = common.get("combined_validation_context")
    if isinstance(combined, dict) and isinstance(combined.get("default_validation_context"), dict):
        return combined["default_validation_context"]  # type: ignore[no-any-return]
    return None


def tls_clusters(tree: Tree) -> list[ClusterTLS]:
    """Every cluster of *tree* that talks TLS to its endpoints (the HTTPS upstreams)."""
    out = []
    for c in tree.clusters:
        socks = [c.get("transport_socket")] + [
            _get(m, "transport_socket") for m in _list(c.get("transport_socket_matches"))
        ]
        tls = next((t for t in map(_tls_context, socks) if t is not None), None)
        if tls is None:
            continue
        options = _get(c, "typed_extension_protocol_options", HTTP_OPTIONS) or {}
        protocol = _get(options, "upstream_http_protocol_options") or {}
        endpoints = []
        for group in _list(_get(c, "load_assignment", "endpoints")):
            for lb in _list(_get(group, "lb_endpoints")):
                ep = _get(lb, "endpoint") or {}
                sa = _get(ep, "address", "socket_address")
                if isinstance(sa, dict) and sa.get("address") is not None:
                    port = sa.get("port_value", 443)
                    endpoints.append(
                        (
                            str(sa["address"]),
                            int(port) if str(port).isdigit() else 443,
                            getattr(sa, "line", c.line),
                            str(ep.get("hostname") or ""),
                        )
                    )
        out.append(ClusterTLS(c, str(c.get("name", "")), tls, _validation(tls), endpoints, dict(protocol)))
    return out


# -- routes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteTo:
    """A way a request reaches a cluster: listener port, TLS, a Host, a path, the route's rewrite."""

    listener: str
    tls: bool
    host: str
    path: str
    rewrites_host: bool
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()


def _hcms(listener: Map) -> list[tuple[Map, Map, bool]]:
    """``(filter chain, HCM config, tls)`` of a listener."""
    out = []
    for chain in _list(listener.get("filter_chains")) + [listener.get("default_filter_chain")]:
        if not isinstance(chain, dict):
            continue
        tls = isinstance(chain.get("transport_socket"), dict)
        for f in _list(chain.get("filters")):
            typed = _get(f, "typed_config")
            named = isinstance(f, dict) and str(f.get("name", "")).endswith("http_connection_manager")
            if (_type(typed) == HCM or named) and isinstance(typed, dict):
                out.append((chain, typed, tls))
    return out  # type: ignore[return-value]


def _listener_port(listener: dict[str, Any]) -> str:
    port = _get(listener, "address", "socket_address", "port_value")
    return str(port) if port is not None else "80"


def _host_for(domains: list[Any]) -> str | None:
    for d in domains:
        d = str(d)
        if d == "*":
            return PUBLIC_HOST
        if d.startswith("*"):
            return "www" + d[1:].lstrip("*") if d[1:].startswith(".") else "www." + d[1:].lstrip("-.")
        if d.endswith("*"):
            return d[:-1].rstrip(".-") + ".test"
        return d.split(":")[0]
    return None


def _extra_terms(match: Any) -> list[Term] | str:
    """The route's ``headers`` and ``query_parameters`` matchers as terms (``:method`` a method,
    ``:authority``/``host`` the Host), or why one cannot be built for."""
    terms: list[Term] = []
    for kind, items in (("header", _list(_get(match, "headers"))), ("query", _list(_get(match, "query_parameters")))):
        for h in items:
            if not isinstance(h, dict) or not h.get("name"):
                return f"{kind} matcher {json.dumps(h)[:60]}: no name"
            name = str(h["name"])
            k, key = kind, name
            if kind == "header" and name.lower() == ":method":
                k, key = "method", ""
            elif kind == "header" and name.lower() in (":authority", "host"):
                k, key = "host", ""
            elif kind == "header" and name.startswith(":"):
                return f"header matcher {name}: a pseudo-header the lab cannot set"
            raw = h.get("string_match")
            sm: dict[str, Any] = (
                raw
                if isinstance(raw, dict)
                else {
                    x.removesuffix("_match"): h[x]
                    for x in ("exact_match", "prefix_match", "suffix_match", "contains_match", "safe_regex_match")
                    if x in h
                }
            )
            negated = bool(h.get("invert_match"))
            icase = bool(sm.get("ignore_case"))
            text = f"{kind} matcher {json.dumps(h)[:80]}"
            if h.get("present_match") is not None or not sm:  # no match given: present (Envoy's rule)
                present = h.get("present_match", True) is not False
                terms.append(Term(k, "found", "", key, negated=negated != (not present), text=text))
                continue
            ops = {"exact": "eq", "prefix": "beg", "suffix": "end", "contains": "sub", "safe_regex": "reg"}
            op = next((o for o in ops if o in sm), None)
            if op is None:
                return f"{text}: a match the lab cannot build a request for"
            value = str(_get(sm, "safe_regex", "regex")) if op == "safe_regex" else str(sm[op])
            if op == "safe_regex":
                value = "^(?:" + value + ")$"  # RE2 full match, as Envoy applies it
            terms.append(Term(k, ops[op], value, key, icase, negated, text))
    return terms


def _route_matches(match: Any, path: str, req: Built | None = None) -> bool:
    if not isinstance(match, dict):
        return False
    extra = _extra_terms(match)
    if isinstance(extra, str):
        return False
    if extra:
        got = req or Built(None, path, "GET", ())
        r = Request(
            got.host or PUBLIC_HOST,
            got.path.split("?")[0],
            got.method,
            dict(got.headers),
            dict(parse_qsl(urlsplit(got.path).query)),
        )
        if any(matches(t, r) == t.negated for t in extra):
            return False
    if "prefix" in match:
        return path.startswith(str(match["prefix"]))
    if "path" in match:
        return path.split("?")[0] == str(match["path"])
    if "path_separated_prefix" in match:
        p = str(match["path_separated_prefix"])
        return path == p or path.startswith(p + "/")
    if "safe_regex" in match:
        try:
            return re.fullmatch(str(_get(match, "safe_regex", "regex")), path.split("?")[0]) is not None
        except re.error:
            return False
    return False


def _route_probe(match: Any) -> str | None:
    """The request path that a route's ``match`` takes (None: none the lab can build)."""
    if not isinstance(match, dict):
        return None
    if "prefix" in match:
        return probe_path(str(match["prefix"]) or "/")
    if "path_separated_prefix" in match:
        return probe_path(str(match["path_separated_prefix"]).rstrip("/") + "/")
    if "path" in match:
        return str(match["path"])
    if "safe_regex" in match:
        # RE2 against the whole path (Envoy's safe_regex is a full match, never a search).
        return probe_path("^(?:" + str(_get(match, "safe_regex", "regex") or "") + ")$", "regex")
    return None


def _clusters_of(action: Any) -> list[str]:
    if not isinstance(action, dict):
        return []
    if action.get("cluster"):
        return [str(action["cluster"])]
    return [str(w.get("name")) for w in _list(_get(action, "weighted_clusters", "clusters")) if isinstance(w, dict)]


def routes(tree: Tree) -> tuple[dict[str, RouteTo], dict[str, str]]:
    """Per cluster name, the first way a request reaches it; and why others cannot be probed."""
    found: dict[str, RouteTo] = {}
    why: dict[str, str] = {}
    for lst in tree.listeners:
        port = _listener_port(lst)
        for _chain, hcm, tls in _hcms(lst):
            rc = hcm.get("route_config")
            if not isinstance(rc, dict):
                if "rds" in hcm:
                    for c in tree.clusters:
                        why.setdefault(str(c.get("name")), "routes come from RDS, which cannot reach the lab")
                continue
            for vh in _list(rc.get("virtual_hosts")):
                host = _host_for(_list(_get(vh, "domains")))
                rts = [r for r in _list(_get(vh, "routes")) if isinstance(r, dict)]
                for r in rts:
                    targets = _clusters_of(r.get("route"))
                    if not targets or host is None:
                        continue
                    path = _route_probe(r.get("match"))
                    if path is None:
                        for t in targets:
                            why.setdefault(t, f"route {json.dumps(r.get('match'))[:80]}: match too complex to probe")
                        continue
                    extra = _extra_terms(r.get("match"))
                    built = request_for([extra], default_host=host) if not isinstance(extra, str) else extra
                    if isinstance(built, str):
                        for t in targets:
                            why.setdefault(t, f"route {json.dumps(r.get('match'))[:80]}: {built}")
                        continue
                    if "?" in built.path:  # the query its query_parameters ask for, after the path's own
                        path += ("&" if "?" in path else "?") + built.path.split("?", 1)[1]
                    sample = path + ("trustlab-probe" if path.endswith("/") else "")
                    probe = Built(built.host, sample, built.method, built.headers)
                    first = next((x for x in rts if _route_matches(x.get("match"), sample, probe)), None)
                    if first is not r:
                        for t in targets:
                            why.setdefault(t, f"route to {t} is shadowed by an earlier route for {path}")
                        continue
                    action = r.get("route") or {}
                    rewrites = bool(
                        action.get("host_rewrite_literal")
                        or action.get("auto_host_rewrite")
                        or action.get("host_rewrite_header")
                        or action.get("host_rewrite_path_regex")
                    )
                    for t in targets:
                        found.setdefault(
                            t, RouteTo(port, tls, built.host or host, path, rewrites, built.method, built.headers)
                        )
    return found, why


def route_rewrites(tree: Tree) -> dict[str, list[bool]]:
    """Per cluster name, whether each route to it rewrites the Host (auto_san_validation reads it)."""
    out: dict[str, list[bool]] = {}
    for lst in tree.listeners:
        for _chain, hcm, _tls in _hcms(lst):
            for vh in _list(_get(hcm, "route_config", "virtual_hosts")):
                for r in _list(_get(vh, "routes")):
                    action = _get(r, "route")
                    if not isinstance(action, dict):
                        continue
                    rewrites = bool(action.get("host_rewrite_literal") or action.get("auto_host_rewrite"))
                    for t in _clusters_of(action):
                        out.setdefault(t, []).append(rewrites)
    return out


# -- adapt ------------------------------------------------------------------------------------
def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The config at *path* made runnable in the lab (see the module docstring)."""
    tree = parse(path)
    notes: list[Note] = []
    root = copy.deepcopy(tree.root)
    for key in _DROP_TOP:
        if key in root:
            notes.append(Note("", tree.root.line_of(key), f"{key} dropped (the lab runs Envoy without it)"))
            del root[key]
    static = root["static_resources"]
    for key in ("secrets",):
        if key in static:
            notes.append(Note("", tree.static.line_of(key), "static secrets dropped (lab certificates are used)"))
            del static[key]
    listeners: dict[str, int] = {}
    for lst in _list(static.get("listeners")):
        _adapt_listener(lst, lab, ports, listeners, notes)
    upstreams: list[Upstream] = []
    reach, why = routes(tree)
    by_name = {c.name: c for c in tls_clusters(tree)}
    for cluster in _list(static.get("clusters")):
        if not isinstance(cluster, dict):
            continue
        name = str(cluster.get("name", ""))
        info = by_name.get(name)
        _adapt_cluster(cluster, info, lab, notes)
        if info is None:
            continue
        if not info.endpoints:
            notes.append(
                Note(
                    "", info.line, f"cluster {name} has no static endpoints ({cluster.get('type', 'EDS')}); not probed"
                )
            )
            continue
        upstreams += _endpoints(info, reach.get(name), why.get(name, f"no route sends requests to cluster {name}"))
        if focus and focus.split("|", 1)[0] == name and len(info.endpoints) > 1:
            _keep_one_endpoint(cluster, int(focus.split("|", 1)[1]))
            notes.append(Note("", info.line, f"cluster {name}: one endpoint at a time is probed (the others removed)"))
    _allow_only(root, lab, notes)
    notes.append(
        Note.whole("access logs are the lab's: %UPSTREAM_TRANSPORT_FAILURE_REASON% is the evidence of a block")
    )
    text = _dump(root)
    return Adapted(
        text=f"# trustlab check: adapted from {path}\n{text}",
        notes=ordered(notes, unnumbered_last=True),
        upstreams=upstreams,
        listeners=listeners,
    )


def _endpoints(info: ClusterTLS, reach: RouteTo | None, why: str) -> list[Upstream]:
    """A TLS cluster's endpoints, each reached by the route to the cluster (*reach*), or not (*why*)."""
    out = []
    for i, (host, port, line, hostname) in enumerate(info.endpoints):
        up = Upstream(
            label=f"cluster {info.name} endpoint {host}:{port} (line {line})",
            host=host,
            port=port,
            line=line,
            name=_expected_name(info, host, hostname),
            pool=f"{info.name}|{i}",
        )
        if reach is not None:
            up.route = Route(reach.listener, reach.tls, reach.host, reach.path, reach.method, reach.headers)
        else:
            up.why_unroutable = why
        out.append(up)
    return out


#: Cluster types whose endpoints' addresses are host names Envoy resolves (auto_host_sni takes them).
_DNS_TYPES = ("STRICT_DNS", "LOGICAL_DNS")


def sni_sent(info: ClusterTLS, host: str, hostname: str) -> str:
    """The SNI Envoy sends to this endpoint: with ``auto_host_sni`` the upstream host's name when it
    is known (the endpoint's ``hostname``, or the address of a DNS cluster), which replaces ``sni``;
    else ``sni`` ("" for none). UpstreamTlsContext.auto_host_sni; a header-derived ``auto_sni`` is
    decided per request and handled by its own rule."""
    if info.tls.get("auto_host_sni") is True:
        if hostname:
            return hostname
        if str(info.cluster.get("type", "STATIC")).upper() in _DNS_TYPES and not is_ip(host):
            return host
    return info.sni


def _expected_name(info: ClusterTLS, host: str, hostname: str) -> str:
    """The name the legitimate backend's certificate carries for this endpoint: the name Envoy
    checks. ``auto_sni_san_validation`` replaces the SAN matchers with the SNI sent; else an exact
    DNS matcher names it; else the SNI sent, the endpoint's hostname, its address."""
    sent = sni_sent(info, host, hostname)
    if info.tls.get("auto_sni_san_validation") is True and sent and not is_ip(sent):
        return sent
    exact = next((v for t, k, v in info.san_matchers if k == "exact" and t in ("DNS", "ANY") and not is_ip(v)), None)
    if exact:
        return exact
    if sent and not is_ip(sent):
        return sent
    if hostname and not is_ip(hostname):
        return hostname
    return host if not is_ip(host) else BACKEND_NAME


def _lab_listener_tls(sock: Any, lab: LabPaths, notes: list[Note]) -> None:
    """A listener's TLS (when it has one) serves the lab-minted certificate and asks for no client's."""
    if isinstance(sock, dict) and isinstance(sock.get("typed_config"), dict):
        common = sock["typed_config"].setdefault("common_tls_context", {})
        common.pop("tls_certificate_sds_secret_configs", None)
        common.pop("validation_context", None)
        common.pop("validation_context_sds_secret_config", None)
        sock["typed_config"].pop("require_client_certificate", None)
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": str(lab.cert)}, "private_key": {"filename": str(lab.key)}}
        ]
        notes.append(Note("", getattr(sock, "line", 0), "listener TLS certificate replaced by a lab-minted one"))


def _adapt_listener(lst: Any, lab: LabPaths, ports: Ports, listeners: dict[str, int], notes: list[Note]) -> None:
    if not isinstance(lst, dict):
        return
    port = _listener_port(lst)
    lab_port = ports(port)
    listeners.setdefault(port, lab_port)
    line = lst.line_of("address") if isinstance(lst, Map) else 0
    lst["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": lab_port}}
    notes.append(Note("", line, f"listener {lst.get('name', port)} on port {port} -> 127.0.0.1:{lab_port}"))
    for key in ("additional_addresses", "socket_options", "transparent", "freebind", "bind_to_port"):
        if key in lst:
            notes.append(Note("", lst.line_of(key) if isinstance(lst, Map) else 0, f"listener {key} dropped"))
            del lst[key]
    for chain in _list(lst.get("filter_chains")) + [lst.get("default_filter_chain")]:
        if not isinstance(chain, dict):
            continue
        _lab_listener_tls(chain.get("transport_socket"), lab, notes)
        for f in _list(chain.get("filters")):
            typed = _get(f, "typed_config")
            if isinstance(typed, dict) and _type(typed) == HCM:
                _adapt_hcm(typed, lab, notes)


def _adapt_hcm(hcm: dict[str, Any], lab: LabPaths, notes: list[Note]) -> None:
    if "access_log" in hcm:
        notes.append(
            Note("", hcm.line_of("access_log") if isinstance(hcm, Map) else 0, "access_log replaced by the lab's")
        )
    hcm["access_log"] = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(lab.run_dir / "access.log"),
                "log_format": {"text_format_source": {"inline_string": _LOG_FORMAT}},
            },
        }
    ]
    for key in ("tracing", "generate_request_id"):
        hcm.pop(key, None)
    # Its HTTP filters are judged with every other extension, by allow-list (_allow_only).


def _adapt_cluster(cluster: dict[str, Any], info: ClusterTLS | None, lab: LabPaths, notes: list[Note]) -> None:
    line = getattr(cluster, "line", 0)
    name = cluster.get("name", "")
    for key, why in (
        ("health_checks", "health checks would reach the seat between cells"),
        ("outlier_detection", "it would eject the endpoint after an impostor's cell"),
    ):
        if key in cluster:
            notes.append(
                Note(
                    "",
                    cluster.line_of(key) if isinstance(cluster, Map) else line,
                    f"cluster {name}: {key} dropped ({why})",
                )
            )
            del cluster[key]
    if str(cluster.get("type", "")).upper() in ("STRICT_DNS", "LOGICAL_DNS") or "dns_resolvers" in cluster:
        for key in ("dns_resolvers", "dns_resolution_config", "use_tcp_for_dns_lookups"):
            cluster.pop(key, None)
        cluster["typed_dns_resolver_config"] = copy.deepcopy(_GETADDRINFO)
        notes.append(Note("", line, f"cluster {name}: DNS through getaddrinfo (the lab's names are in its hosts file)"))
    if info is None:
        if str(cluster.get("type", "")).upper() in ("STRICT_DNS", "LOGICAL_DNS"):
            # Not probed, and its name is not in the lab: Envoy would hold its listeners until the
            # first DNS answer (a resolver timeout where the lab has no DNS at all: docker's).
            cluster["wait_for_warm_on_init"] = False
            notes.append(Note("", line, f"cluster {name}: not an HTTPS upstream; Envoy does not wait for its DNS"))
        return
    for sock in _sockets(cluster):
        tls = _tls_context(sock)
        if tls is None or not isinstance(sock, dict):
            continue
        if not isinstance(sock.get("typed_config"), dict):
            continue  # the name alone: Envoy 1.40 refuses it, and check shows its message
        _adapt_upstream_tls(sock["typed_config"], str(name), lab, notes)


def _allowed(typed: dict[str, Any], lab: LabPaths) -> bool:
    kind = _type(typed)
    if kind == "envoy.extensions.access_loggers.file.v3.FileAccessLog":
        return str(typed.get("path")) == str(lab.run_dir / "access.log")  # the lab's own log only
    return kind in ALLOWED_TYPES or kind.startswith(_ALLOWED_PREFIXES)


def _allowed_items(node: list[Any], parent_key: str, lab: LabPaths, notes: list[Note], todo: list[Any]) -> None:
    """Remove the refused entries of a list (each named in a note); queue the others to be read."""
    kept = []
    for item in node:
        why = _refused(item, parent_key, lab)
        if why:
            notes.append(Note("", getattr(item, "line", 0), f"{why}"))
            continue
        kept.append(item)
        todo.append((item, parent_key))
    node[:] = kept


def _allowed_keys(node: dict[str, Any], lab: LabPaths, notes: list[Note], todo: list[Any]) -> None:
    """Remove the keys of a mapping whose value is refused (each named in a note); queue the others."""
    for key in list(node):
        value = node[key]
        why = _refused(value, key, lab) if isinstance(value, dict) else None
        if why:
            line = node.line_of(key) if isinstance(node, Map) else getattr(value, "line", 0)
            notes.append(Note("", line, f"{key}: {why}"))
            del node[key]
            continue
        if isinstance(value, (dict, list)):
            todo.append((value, key))


def _allow_only(root: Any, lab: LabPaths, notes: list[Note]) -> None:
    """Keep only allowed extensions anywhere in the adapted tree (:data:`ALLOWED_TYPES`).

    An extension is judged by its ``typed_config``'s type (a TypedStruct was unwrapped at parse),
    or by its name in the filter and log lists when it has no typed_config; a bare typed
    config (``typed_per_filter_config``, ``typed_extension_protocol_options`` values) by its own
    type. A refused one is removed where it stands (its list entry, or its key) and named in a
    note; nothing below it is read."""
    todo: list[tuple[Any, str]] = [(root, "")]
    while todo:
        node, parent_key = todo.pop()
        if isinstance(node, list):
            _allowed_items(node, parent_key, lab, notes, todo)
        elif isinstance(node, dict):
            _allowed_keys(node, lab, notes, todo)


_NOT_KEPT = "not on the lab's allow-list: only what decides backend trust or carries the request is kept"


def _refused(item: Any, parent_key: str, lab: LabPaths) -> str | None:
    """The note for *item* when it is an extension the lab does not keep; else ``None``."""
    if not isinstance(item, dict):
        return None
    typed = item.get("typed_config")
    name = str(item.get("name", ""))
    if isinstance(typed, dict):
        if "@type" not in typed:
            return None if name in _ALLOWED_NAMES else f"extension {name or '?'} dropped ({_NOT_KEPT})"
        if _allowed(typed, lab):
            return None
        return f"extension {name or _type(typed)} dropped ({_type(typed)}; {_NOT_KEPT})"
    if "@type" in item and parent_key != "typed_config":
        return None if _allowed(item, lab) else f"typed config {_type(item)} dropped ({_NOT_KEPT})"
    if parent_key in _EXTENSION_LISTS and name and "typed_config" not in item:
        return None if name in _ALLOWED_NAMES else f"extension {name} dropped ({_NOT_KEPT})"
    return None


def _adapt_upstream_tls(tls: dict[str, Any], name: str, lab: LabPaths, notes: list[Note]) -> None:
    common = tls.get("common_tls_context")
    if not isinstance(common, dict):
        return
    line, where = getattr(common, "line", 0), f"cluster {name}"
    if common.get("tls_certificates") or common.get("tls_certificate_sds_secret_configs"):
        common.pop("tls_certificate_sds_secret_configs", None)
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": str(lab.cert)}, "private_key": {"filename": str(lab.key)}}
        ]
        notes.append(Note("", line, f"{where}: client certificate replaced by a lab-minted one"))
    contexts = [
        common.get("validation_context"),
        _get(common, "combined_validation_context", "default_validation_context"),
    ]
    for v in contexts:
        if isinstance(v, dict):
            _adapt_validation(v, line, where, lab, notes)
    sds = common.pop("validation_context_sds_secret_config", None)
    combined = common.get("combined_validation_context")
    if isinstance(combined, dict) and combined.pop("validation_context_sds_secret_config", None) is not None:
        default = combined.setdefault("default_validation_context", {})
        if "trusted_ca" not in default:
            default["trusted_ca"] = {"filename": str(lab.ca)}
        notes.append(Note("", line, f"{where}: the SDS validation context stands for the lab's internal root"))
    elif sds is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(lab.ca)}}
        notes.append(Note("", line, f"{where}: the SDS validation context stands for the lab's internal root"))


def _adapt_validation(v: dict[str, Any], line: int, where: str, lab: LabPaths, notes: list[Note]) -> None:
    ca = v.get("trusted_ca")
    if isinstance(ca, dict):
        if "filename" in ca:
            new = trust_file(str(ca["filename"]), lab, notes)
            notes[-1] = Note("", line, f"{where}: trusted_ca {notes[-1].text}")
        elif "inline_string" in ca or "inline_bytes" in ca:
            new = str(lab.ca)
            notes.append(Note("", line, f"{where}: the inline trusted_ca stands for the lab's internal root"))
        elif "environment_variable" in ca:
            new = str(lab.ca)
            notes.append(
                Note(
                    "",
                    line,
                    f"{where}: trusted_ca from ${ca['environment_variable']} stands for the lab's internal root",
                )
            )
        else:
            new = str(lab.ca)
        v["trusted_ca"] = {"filename": new}
    for key in ("crl", "watched_directory"):
        if key in v:
            why = " (the lab has no CRL)" if key == "crl" else ""
            notes.append(Note("", line, f"{where}: {key} dropped{why}"))
            del v[key]


def _keep_one_endpoint(cluster: dict[str, Any], index: int) -> None:
    i = 0
    for group in _list(_get(cluster, "load_assignment", "endpoints")):
        kept = []
        for lb in _list(_get(group, "lb_endpoints")):
            if _get(lb, "endpoint", "address", "socket_address", "address") is not None:
                if i == index:
                    kept.append(lb)
                i += 1
        group["lb_endpoints"] = kept
    endpoints = _get(cluster, "load_assignment", "endpoints")
    if isinstance(endpoints, list):
        cluster["load_assignment"]["endpoints"] = [g for g in endpoints if _list(_get(g, "lb_endpoints"))]


def _dump(root: Any) -> str:
    """The adapted tree as Envoy reads it (JSON is YAML; no PyYAML needed to write it)."""
    return json.dumps(_unwrap(root), indent=2) + "\n"


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


# -- audit ------------------------------------------------------------------------------------
DOCS = "https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/transport_sockets/tls/v3/"
CVC_DOC = DOCS + "common.proto#extensions-transport-sockets-tls-v3-certificatevalidationcontext"
UTC_DOC = DOCS + "tls.proto#extensions-transport-sockets-tls-v3-upstreamtlscontext"
HPO_DOC = "https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/protocol.proto#config-core-v3-upstreamhttpprotocoloptions"


def scopes(path: Path, text: str) -> list[rules.Scope]:
    """One scope per cluster whose transport socket is TLS (the tree ``check`` adapts)."""
    tree = parse(path, text)
    rewrites = route_rewrites(tree)
    out = []
    for c in tls_clusters(tree):
        v = c.validation or Map()
        out.append(
            rules.Scope(
                ProxyKind.ENVOY,
                str(path),
                c.line,
                tuple(rules.Upstream(f"{h}:{p}", h, line) for h, p, line, _ in c.endpoints),
                facts={
                    "cluster": c,
                    "validation": v,
                    "where": f"cluster {c.name}",
                    "has_ca": isinstance(v.get("trusted_ca"), dict) or _has_sds(c.tls),
                    # Every route to the cluster rewrites Host (auto_sni / auto_san_validation read it).
                    "host_rewritten": all(rewrites.get(c.name, [False])),
                },
            )
        )
    return out


def _validated(scope: rules.Scope) -> tuple[ClusterTLS, Map, str] | None:
    """The cluster, its validation context and its name, when it has a trusted CA (else only
    ``envoy-no-trusted-ca`` applies)."""
    f = scope.facts
    return (f["cluster"], f["validation"], f["where"]) if f["has_ca"] else None


@rules.rule(
    "envoy-no-trusted-ca",
    proxy="envoy",
    severity="high",
    scenario="envoy/no-validation",
    directives=("validation_context.trusted_ca",),
    help=CVC_DOC,
    fix="add validation_context.trusted_ca {filename: <internal root>} and a SAN matcher",
)
def _no_trusted_ca(scope: rules.Scope) -> rules.Hit | None:
    if scope.facts["has_ca"]:
        return None
    c = scope.facts["cluster"]
    return rules.Hit(
        c.tls.line or c.line,
        f"{scope.facts['where']}: no trusted_ca: Envoy does not verify the backend's certificate at all",
    )


@rules.rule(
    "envoy-accept-untrusted",
    proxy="envoy",
    severity="high",
    scenario="envoy/accept-untrusted",
    directives=("validation_context.trust_chain_verification",),
    help=CVC_DOC,
    fix="remove trust_chain_verification: ACCEPT_UNTRUSTED",
)
def _accept_untrusted(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)) or found[1].get("trust_chain_verification") != "ACCEPT_UNTRUSTED":
        return None
    _, v, where = found
    return rules.Hit(
        v.line_of("trust_chain_verification"),
        f"{where}: trust_chain_verification ACCEPT_UNTRUSTED: any certificate is accepted, and the SAN "
        "matchers are skipped too",
    )


@rules.rule(
    "envoy-allow-expired",
    proxy="envoy",
    severity="high",
    scenario="envoy/allow-expired",
    directives=("validation_context.allow_expired_certificate",),
    help=CVC_DOC,
    fix="remove allow_expired_certificate",
)
def _allow_expired(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)) or found[1].get("allow_expired_certificate") is not True:
        return None
    _, v, where = found
    return rules.Hit(
        v.line_of("allow_expired_certificate"),
        f"{where}: allow_expired_certificate: expired and not-yet-valid certificates are accepted",
    )


@rules.rule(
    "envoy-system-bundle",
    proxy="envoy",
    severity="medium",
    scenario="envoy/system-bundle",
    directives=("validation_context.trusted_ca",),
    help=CVC_DOC,
    fix="trust the internal root only",
)
def _system_bundle(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)):
        return None
    _, v, where = found
    ca_file = _get(v, "trusted_ca", "filename")
    if not (isinstance(ca_file, str) and is_system_bundle(ca_file)):
        return None
    return rules.Hit(
        v.line_of("trusted_ca"),
        f"{where}: trusted_ca {ca_file} is a system bundle: any public CA can issue a certificate for the backend",
    )


@rules.rule(
    "envoy-no-name-check",
    proxy="envoy",
    severity="high",
    scenario="envoy/ca-without-san",
    directives=("validation_context.match_typed_subject_alt_names", "auto_sni_san_validation"),
    help=CVC_DOC,
    fix="add match_typed_subject_alt_names [{san_type: DNS, matcher: {exact: "
    "<backend name>}}] (or auto_sni_san_validation: true with sni)",
)
def _no_name_check(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)) or found[0].name_checked:
        return None
    c, _, where = found
    sni = f" (sni {c.sni} is sent, never checked)" if c.sni else ""
    return rules.Hit(
        getattr(c.validation, "line", 0) or c.tls.line or c.line,
        f"{where}: trusted_ca without a SAN matcher: any certificate the CA issued is accepted for any name{sni}",
    )


def _dns_matchers(scope: rules.Scope, *kinds: str) -> Iterator[tuple[int, str, str, str]]:
    """``(line, where, matcher kind, value)`` of the cluster's DNS (and untyped) SAN matchers of *kinds*."""
    if not (found := _validated(scope)):
        return
    c, v, where = found
    for san_type, kind, value in c.san_matchers:
        if san_type in ("DNS", "ANY") and kind in kinds:
            # Asked only with a matcher: an SDS-only context has no validation_context to ask.
            typed = "match_typed_subject_alt_names" in v
            yield v.line_of("match_typed_subject_alt_names" if typed else "match_subject_alt_names"), where, kind, value


@rules.rule(
    "envoy-broad-san-matcher",
    proxy="envoy",
    severity="high",
    scenario="envoy/san-suffix",
    directives=("validation_context.match_typed_subject_alt_names",),
    help=CVC_DOC,
    fix="match the backend's name exactly (DNS exact <backend name>)",
)
def _broad_san(scope: rules.Scope) -> Iterator[rules.Hit]:
    for line, where, kind, value in _dns_matchers(scope, "suffix", "contains", "safe_regex"):
        if kind != "safe_regex" or re.search(r"\.\*|\.\+", value):
            yield rules.Hit(
                line,
                f"{where}: SAN matcher {kind} {value!r} accepts every name it covers (a sibling service's "
                "certificate too)",
            )


@rules.rule(
    "envoy-prefix-san-matcher",
    proxy="envoy",
    severity="medium",
    scenario="envoy/san-prefix",
    directives=("validation_context.match_typed_subject_alt_names",),
    help=CVC_DOC,
    fix="match the backend's name exactly (DNS exact <backend name>)",
)
def _prefix_san(scope: rules.Scope) -> Iterator[rules.Hit]:
    for line, where, _, value in _dns_matchers(scope, "prefix"):
        yield rules.Hit(line, f"{where}: SAN matcher prefix {value!r}: any name starting with it is accepted")


@rules.rule(
    "envoy-exact-matches-wildcard",
    proxy="envoy",
    severity="low",
    scenario="envoy/good",
    directives=("validation_context.match_typed_subject_alt_names",),
    help=CVC_DOC,
    fix="if your PKI never issues wildcards, use safe_regex with the escaped name: it is matched literally",
)
def _exact_wildcard(scope: rules.Scope) -> Iterator[rules.Hit]:
    for line, where, _, value in _dns_matchers(scope, "exact"):
        yield rules.Hit(
            line,
            f"{where}: the exact DNS matcher {value!r} also accepts a wildcard certificate covering it "
            "(*.internal for backend-api.internal: wider than OpenSSL's rule)",
        )


@rules.rule(
    "envoy-deprecated-san-matcher",
    proxy="envoy",
    severity="low",
    scenario="envoy/deprecated-san-matcher",
    directives=("validation_context.match_subject_alt_names",),
    help=CVC_DOC,
    fix="use match_typed_subject_alt_names (san_type DNS)",
)
def _deprecated_san(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)) or "match_subject_alt_names" not in found[1]:
        return None
    _, v, where = found
    return rules.Hit(
        v.line_of("match_subject_alt_names"),
        f"{where}: match_subject_alt_names is deprecated (it matches every SAN type)",
    )


@rules.rule(
    "envoy-client-controlled-name",
    proxy="envoy",
    severity="high",
    scenario="envoy/auto-san-client-host",
    directives=("auto_sni", "auto_san_validation", "host_rewrite_literal"),
    help=HPO_DOC,
    fix="set host_rewrite_literal <backend name> on every route to the "
    "cluster, or use sni + auto_sni_san_validation instead",
)
def _client_name(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)) or scope.facts["host_rewritten"]:
        return None
    c, _, where = found
    if not (c.protocol.get("auto_san_validation") or c.protocol.get("auto_sni")):
        return None
    return rules.Hit(
        c.line,
        f"{where}: auto_sni/auto_san_validation take the SNI and the name checked from the request's "
        "Host, which the client chooses (no host rewrite on its routes)",
    )


@rules.rule(
    "envoy-no-sni",
    proxy="envoy",
    severity="low",
    scenario="envoy/no-sni-routed",
    directives=("sni", "auto_host_sni", "auto_sni"),
    help=UTC_DOC,
    fix="add sni: <backend name> (or auto_host_sni: true)",
)
def _no_sni(scope: rules.Scope) -> rules.Hit | None:
    if not (found := _validated(scope)):
        return None
    c, _, where = found
    if c.sni or c.tls.get("auto_host_sni") is True or c.protocol.get("auto_sni"):
        return None
    return rules.Hit(
        c.tls.line or c.line, f"{where}: no sni: an SNI-routed backend answers with its default certificate"
    )


def _has_sds(tls: Map) -> bool:
    common = tls.get("common_tls_context") or {}
    return "validation_context_sds_secret_config" in common or isinstance(
        _get(common, "combined_validation_context", "validation_context_sds_secret_config"), dict
    )
