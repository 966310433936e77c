"""A user's Caddy config (a Caddyfile, or Caddy's native JSON), parsed once into one model that
both ``trustlab check`` (:func:`adapt`) and ``trustlab audit`` (:func:`audit`) read.

The model (:class:`CaddyConfig`) is a list of :class:`ReverseProxy`: one per ``reverse_proxy``
directive (Caddyfile) or ``reverse_proxy`` handler (JSON), each with its upstreams, the site
that routes to it, and its ``transport http`` TLS settings with their lines. The Caddyfile is
read by a small lexer and block parser (quotes, backticks, comments, line continuations,
heredocs, snippets and ``import``); JSON by :mod:`json`.

Kept exactly: every ``transport http`` TLS setting (``tls``, ``tls_insecure_skip_verify``,
``tls_server_name``, ``tls_except_ports``, ``versions`` ...; in JSON ``transport.tls``), the
upstreams, matchers, ``handle``/``route`` structure and ``header_up``. Changed: trusted-CA files
(``tls_trusted_ca_certs``, ``tls_trust_pool``, JSON ``root_ca_pem_files``/``ca``) stand for the
lab's internal root (or its system bundle when the path looks like an OS bundle), and inline or
Caddy-internal CAs for the internal root; ``tls_client_auth`` uses a lab-minted client
certificate; site addresses keep their host (the Host matcher) on ``http://`` and a lab port,
bound to 127.0.0.1; the global options are the lab's (``admin off``, ``auto_https off``, storage
and logs in the lab); site ``tls``, ``log`` and ``bind`` lines, file ``import``\\ s, health checks
and retries are dropped (health checks would hit the seat between cells and mark the upstream
down depending on the previous identity; retries only delay a refusal), and so is every
directive (JSON: handler) not on the allow-list (:data:`SITE_KEEP`, :data:`JSON_KEEP`). Each
change is one note.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    is_ip,
    is_system_bundle,
    probe_path,
    read_config,
    trust_file,
)
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

# -- the Caddyfile: tokens and blocks ---------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One Caddyfile token: its value, its text as written (quotes kept) and its line."""

    text: str
    raw: str
    line: int


@dataclass
class Node:
    """One Caddyfile line (a directive and its arguments) and its block, if it opens one."""

    tokens: list[Token]
    block: list[Node] | None = None
    #: The line of its first token, or of its ``{`` (the global options block has no tokens).
    start: int = 0

    @property
    def name(self) -> str:
        return self.tokens[0].text if self.tokens else ""

    @property
    def args(self) -> list[str]:
        return [t.text for t in self.tokens[1:]]

    @property
    def line(self) -> int:
        return self.tokens[0].line if self.tokens else self.start

    def children(self, name: str) -> list[Node]:
        return [n for n in self.block or [] if n.name == name]


def tokenize(text: str, where: str) -> list[list[Token]]:
    """The Caddyfile's tokens, one list per logical line (Caddy's lexer rules)."""
    lines: list[list[Token]] = []
    cur: list[Token] = []
    i, line, n = 0, 1, len(text)

    def end_line() -> None:
        nonlocal cur
        if cur:
            lines.append(cur)
        cur = []

    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
            end_line()
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "\\" and text.startswith("\n", i + 1):  # a line continuation
            i += 2
            line += 1
            continue
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start, start_line = i, line
        if ch == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\':
                    i += 1
                if text[i] == "\n":
                    line += 1
                value.append(text[i])
                i += 1
            if i >= n:
                raise ConfigError(f"{where}: line {start_line}: unterminated quoted string")
            i += 1
            cur.append(Token("".join(value), text[start:i], start_line))
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise ConfigError(f"{where}: line {start_line}: unterminated backtick string")
            line += text.count("\n", i, j)
            cur.append(Token(text[i + 1 : j], text[i : j + 1], start_line))
            i = j + 1
            continue
        m = re.match(r"<<([A-Za-z0-9_-]+)[ \t]*\n", text[i:])
        if m:  # a heredoc: up to the line holding only its marker
            marker = m.group(1)
            body_start = i + m.end()
            close = re.compile(rf"^[ \t]*{re.escape(marker)}(?=[ \t]|$)", re.M).search(text, body_start)
            if not close:
                raise ConfigError(f"{where}: line {start_line}: heredoc <<{marker} is never closed")
            i = close.end()
            cur.append(Token(text[body_start : close.start()].rstrip("\n"), text[start:i], start_line))
            line += text.count("\n", start, i)
            continue
        while i < n and text[i] not in " \t\r\n":
            i += 1
        word = text[start:i]
        cur.append(Token(word, word, start_line))
    end_line()
    return lines


def parse_caddyfile(text: str, where: str) -> list[Node]:
    """The Caddyfile's nodes: ``{`` at the end of a line opens a block, a lone ``}`` closes it."""
    lines = tokenize(text, where)
    root: list[Node] = []
    stack: list[tuple[list[Node], int]] = [(root, 0)]
    for toks in lines:
        if toks[0].raw == "}":
            if len(stack) == 1:
                raise ConfigError(f"{where}: line {toks[0].line}: '}}' closes nothing")
            stack.pop()
            toks = toks[1:]
            if not toks:
                continue
        if toks[-1].raw == "{":
            node = Node(toks[:-1], [], start=toks[-1].line)
            stack[-1][0].append(node)
            assert node.block is not None
            stack.append((node.block, toks[-1].line))
        else:
            stack[-1][0].append(Node(toks))
    if len(stack) > 1:
        raise ConfigError(f"{where}: line {stack[-1][1]}: '{{' is never closed; a Caddyfile block ends with '}}'")
    return root


# -- the model both check and audit read --------------------------------------------------------


@dataclass
class Target:
    """One upstream of a reverse_proxy: as written, and what it means."""

    raw: str
    scheme: str
    host: str
    port: int
    line: int

    @property
    def dynamic(self) -> bool:
        return "{" in self.raw


@dataclass
class Setting:
    """One trust setting of a transport, with the line it is on (Caddyfile) or near (JSON)."""

    name: str
    args: list[str]
    line: int


@dataclass
class ReverseProxy:
    """One ``reverse_proxy`` (directive or JSON handler) and everything that decides its trust."""

    line: int
    site: list[str]
    path: str
    targets: list[Target]
    settings: dict[str, Setting] = field(default_factory=dict)
    #: The transport module (``http``; ``fastcgi`` and others never speak TLS to a backend).
    transport: str = "http"
    #: Why the lab cannot send a request to it (a named matcher it cannot satisfy ...).
    why_unroutable: str = ""
    #: The Caddyfile node or JSON handler it came from (adapt rewrites it in place).
    source: Any = None
    #: The method and headers its request matchers ask for (``@ws header Upgrade websocket``).
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()

    def setting(self, name: str) -> Setting | None:
        return self.settings.get(name)

    @property
    def tls(self) -> bool:
        """Whether it speaks TLS to its upstreams (``https://``, ``tls``, a ``tls_*`` option)."""
        if self.transport != "http":
            return False
        if any(t.scheme == "https" for t in self.targets):
            return True
        return any(n == "tls" or n.startswith("tls_") for n in self.settings) or any(
            t.scheme == "" and t.port == 443 for t in self.targets
        )

    def tls_targets(self) -> list[Target]:
        if not self.tls:
            return []
        except_ports = {a for s in [self.setting("tls_except_ports")] if s for a in s.args}
        return [t for t in self.targets if t.scheme != "http" and str(t.port) not in except_ports]


@dataclass
class CaddyConfig:
    """A parsed Caddy config: its format, its reverse proxies, and the tree they came from."""

    path: Path
    format: str  # "caddyfile" or "json"
    proxies: list[ReverseProxy]
    tree: Any
    #: Caddyfile: the global options node and the snippets, by name.
    options: Node | None = None
    snippets: dict[str, list[Node]] = field(default_factory=dict)


_TLS_SETTINGS = (
    "tls",
    "tls_insecure_skip_verify",
    "tls_trusted_ca_certs",
    "tls_trust_pool",
    "tls_server_name",
    "tls_client_auth",
    "tls_timeout",
    "tls_renegotiation",
    "tls_except_ports",
    "tls_curves",
    "versions",
)
#: Placeholders that a client controls (the request's Host, headers, URI ...).
_CLIENT_PLACEHOLDER = re.compile(
    r"\{(?:http\.request\.(?:host|hostport|header\.[^}]*|uri[^}]*|orig_uri[^}]*)|host|hostport|header\.[^}]*"
    r"|>[^}]*|query\.[^}]*|http\.request\.tls\.server_name|tls_server_name)\}",
    re.I,
)


def load(path: Path) -> CaddyConfig:
    """Read and parse *path* once: JSON when it is JSON (``{...}`` with ``apps``), else a Caddyfile."""
    text = read_config(path)
    stripped = text.lstrip()
    if stripped.startswith("{") and re.match(r'\{\s*"', stripped):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: line {exc.lineno}: invalid JSON ({exc.msg}); Caddy's JSON config is one object"
            ) from None
        except RecursionError:
            raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep; no config needs that many") from None
        check_depth(data, str(path))  # the adapter's walkers recurse
        if not isinstance(data, dict):
            raise ConfigError(f'{path}: a Caddy JSON config is one object with "apps"')
        return _from_json(path, text, data)
    return _from_caddyfile(path, text)


def split_target(raw: str, line: int) -> Target:
    """``https://host:port`` / ``host:port`` / ``host`` / ``[::1]:8443`` -> scheme, host, port."""
    m = re.match(r"^(?:(?P<scheme>[a-z0-9]+)://)?(?P<rest>.*)$", raw, re.I)
    assert m
    scheme = (m.group("scheme") or "").lower()
    rest = m.group("rest").split("/", 1)[0]
    if scheme in ("h2c",):
        scheme = "http"
    hm = re.match(r"^\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?$", rest) or re.match(
        r"^(?P<host>[^:]*)(?::(?P<port>[\d-]+))?$", rest
    )
    host, port_s = (hm.group(1), hm.group(2)) if hm else (rest, None)
    port = (
        int(port_s.split("-")[0]) if port_s and port_s.split("-")[0].isdigit() else (443 if scheme == "https" else 80)
    )
    return Target(raw, scheme, host or "", port, line)


def _site_route(addresses: list[str]) -> tuple[str, str, int]:
    """(Host a client sends, the site's path prefix, its original port) from site addresses."""
    first = addresses[0] if addresses else ""
    m = re.match(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[^\]]*\]|[^:/]*)(?::(?P<port>\d+))?(?P<path>/.*)?$", first)
    if not m:
        return PUBLIC_HOST, "/", 80
    scheme, host, port_s, path = m.group("scheme"), m.group("host"), m.group("port"), m.group("path") or "/"
    port = int(port_s) if port_s else (80 if scheme == "http" else 443)
    if host.startswith("*."):
        host = "trustlab-probe" + host[1:]
    return host or PUBLIC_HOST, path.rstrip("*") or "/", port


# -- Caddyfile -> model ------------------------------------------------------------------------


def _from_caddyfile(path: Path, text: str) -> CaddyConfig:
    where = str(path)
    nodes = parse_caddyfile(text, where)
    options = None
    if nodes and not nodes[0].tokens and nodes[0].block is not None:
        options = nodes.pop(0)
    snippets = {n.name[1:-1]: n.block or [] for n in nodes if re.fullmatch(r"\(.+\)", n.name) and n.block is not None}
    sites = [n for n in nodes if not re.fullmatch(r"\(.+\)", n.name)]
    if sites and all(n.block is None for n in sites):
        # One site without braces: the first line is its address, the rest its body.
        sites = [Node(sites[0].tokens, sites[1:])]
    cfg = CaddyConfig(path, "caddyfile", [], sites, options, snippets)
    for site in sites:
        if site.block is None:
            raise ConfigError(
                f"{where}: line {site.line}: {' '.join(t.raw for t in site.tokens)!r} outside a site block; "
                "a Caddyfile is site blocks (example.com { ... })"
            )
        addresses = [a.strip(",") for t in site.tokens for a in t.text.split(",") if a.strip(",")]
        _walk(site.block, addresses, _site_route(addresses)[1], cfg, {}, depth=0)
    return cfg


#: The most directives one block may expand to through snippet imports: nested imports multiply
#: (ten snippets importing the previous one ten times: 10**10 directives from 20 lines).
MAX_EXPANDED = 10_000


def _expand(
    block: list[Node], snippets: dict[str, list[Node]], depth: int = 0, budget: list[int] | None = None
) -> Iterator[Node]:
    budget = [MAX_EXPANDED] if budget is None else budget
    for n in block:
        if n.name == "import" and n.args and n.args[0] in snippets and depth < 10:
            yield from _expand(snippets[n.args[0]], snippets, depth + 1, budget)
        else:
            budget[0] -= 1
            if budget[0] < 0:
                raise ConfigError(
                    f"line {n.line}: snippet imports expand one block to more than {MAX_EXPANDED} directives "
                    "(nested imports multiply); import fewer snippets"
                )
            yield n


#: A request a route's matchers ask for beyond its path: (method, headers).
Asked = tuple[str, tuple[tuple[str, str], ...]]
_PLAIN: Asked = ("GET", ())


def _walk(
    block: list[Node],
    site: list[str],
    prefix: str,
    cfg: CaddyConfig,
    matchers: dict[str, Node],
    *,
    depth: int,
    asked: Asked = _PLAIN,
    why: str = "",
) -> None:
    nodes = list(_expand(block, cfg.snippets))
    named = {**matchers, **{n.name: n for n in nodes if n.name.startswith("@")}}
    for n in nodes:
        if n.name in ("handle", "handle_path", "route") and n.block is not None and depth < 20:
            sub, more, why_not = _matcher_request(n.args[0] if n.args else "", named)
            _walk(
                n.block,
                site,
                _join(prefix, sub) if sub else prefix,
                cfg,
                named,
                depth=depth + 1,
                asked=_merge(asked, more),
                why=why or why_not,
            )
        elif n.name == "reverse_proxy":
            cfg.proxies.append(_reverse_proxy(n, site, prefix, named, cfg, asked=asked, why=why))


def _merge(a: Asked, b: Asked) -> Asked:
    return (b[0] if b[0] != "GET" else a[0], a[1] + b[1])


#: Matchers a request can be built for (issue 24: the lab sends what they ask for); others
#: (path_regexp, header_regexp, remote_ip, expression, not ...) make the route unprobeable, said so.
_BUILDABLE = ("path", "method", "header", "query", "host")


def _matcher_request(token: str, named: dict[str, Node]) -> tuple[str, Asked, str]:
    """What a request needs to match a matcher token (``/api/*``, ``@name``): its path, its method
    and headers, and why it cannot be built when it cannot (a regexp, an IP, an expression ...).

    A named matcher's lines are ANDed; each gives its first alternative: ``method POST PUT`` sends
    POST, ``header Upgrade websocket`` sends that header (``*`` wildcards at either end dropped),
    ``query debug=1`` appends ``?debug=1`` to the path."""
    if token.startswith("/"):
        return token, _PLAIN, ""
    if not token.startswith("@"):
        return "", _PLAIN, ""
    m = named.get(token)
    if m is None:
        return "", _PLAIN, f"named matcher {token} is not defined"
    lines = [(m.args[0], m.args[1:])] if m.args else []
    lines += [(c.name, c.args) for c in m.block or []]
    path, query, method, headers, others = "", "", "GET", [], []
    for kind, args in lines:
        if kind not in _BUILDABLE or (kind != "method" and not args) or any(a.startswith("!") for a in args):
            others.append(kind)
        elif kind == "path":
            path = path or args[0]
        elif kind == "method" and args:
            method = args[0].upper()
        elif kind == "header":
            value = args[1] if len(args) > 1 else "1"  # `header X` alone: present, any value
            headers.append((args[0], value.strip("*") or "1"))
        elif kind == "query":
            query = "&".join([*filter(None, [query]), *(a if "=" in a else f"{a}=1" for a in args)])
        else:  # host: the site's own address already names the Host the route is reached with
            pass
    if others:
        return (
            "",
            _PLAIN,
            (
                f"named matcher {token} matches on {', '.join(others)}: the lab cannot build a request for it "
                f"(it builds {', '.join(_BUILDABLE)})"
            ),
        )
    path = path.rstrip("*") or ("/" if query else "")  # /admin/* -> /admin/ (the probe adds a tail)
    return path + ("?" + query if query else ""), (method, tuple(headers)), ""


def _join(prefix: str, path: str) -> str:
    return (prefix.rstrip("/") + "/" + path.lstrip("/")) if prefix != "/" else path


def _reverse_proxy(
    n: Node,
    site: list[str],
    prefix: str,
    named: dict[str, Node],
    cfg: CaddyConfig,
    *,
    asked: Asked = _PLAIN,
    why: str = "",
) -> ReverseProxy:
    args = list(n.tokens[1:])
    path = prefix
    if args and (args[0].text.startswith(("/", "@")) or args[0].text == "*"):
        sub, more, why_not = _matcher_request(args.pop(0).text, named)
        path, asked, why = (_join(prefix, sub) if sub else prefix), _merge(asked, more), why or why_not
    targets = [split_target(t.text, t.line) for t in args]
    rp = ReverseProxy(
        n.line, site, path.rstrip("*") or "/", targets, why_unroutable=why, source=n, method=asked[0], headers=asked[1]
    )
    for c in _expand(n.block or [], cfg.snippets):
        if c.name == "to":
            rp.targets += [split_target(t.text, t.line) for t in c.tokens[1:]]
        elif c.name == "dynamic":
            rp.why_unroutable = rp.why_unroutable or f"line {c.line}: dynamic upstreams ({' '.join(c.args)})"
        elif c.name == "transport":
            rp.transport = c.args[0] if c.args else "http"
            for s in _expand(c.block or [], cfg.snippets):
                if s.name in _TLS_SETTINGS or s.name.startswith("tls"):
                    args_ = s.args
                    if s.name == "tls_trust_pool" and s.block:
                        args_ = args_ + [
                            a for sub in s.block for a in sub.args if sub.name in ("pem_file", "pem_files")
                        ]
                    rp.settings[s.name] = Setting(s.name, args_, s.line)
    if rp.path.endswith("/") is False and "*" not in path:
        rp.path = rp.path  # an exact path matcher: the probe requests exactly it
    return rp


# -- JSON -> model -----------------------------------------------------------------------------


def _from_json(path: Path, text: str, data: dict[str, Any]) -> CaddyConfig:
    cfg = CaddyConfig(path, "json", [], data)
    servers = (((data.get("apps") or {}).get("http") or {}).get("servers")) or {}
    if not isinstance(servers, dict):
        raise ConfigError(f"{path}: apps.http.servers must be an object of servers")
    lines = _JsonLines(text)
    for name, server in servers.items():
        if not isinstance(server, dict):
            continue
        listen = [str(x) for x in server.get("listen", [])]
        for route in server.get("routes", []) or []:
            _json_route(route, listen, "/", [], cfg, lines, name)
    return cfg


class _JsonLines:
    """Lines of ``"handler": "reverse_proxy"`` occurrences, in order (JSON findings' lines)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.handlers = [
            text.count("\n", 0, m.start()) + 1 for m in re.finditer(r'"handler"\s*:\s*"reverse_proxy"', text)
        ]
        self.seen = 0

    def next_handler(self) -> int:
        line = self.handlers[self.seen] if self.seen < len(self.handlers) else 1
        self.seen += 1
        return line

    def key_after(self, key: str, line: int) -> int:
        """The first line at or after *line* holding ``"key"``."""
        for i, ln in enumerate(self.text.splitlines()[line - 1 :], start=line):
            if f'"{key}"' in ln:
                return i
        return line


def _json_route(
    route: Any, listen: list[str], path: str, hosts: list[str], cfg: CaddyConfig, lines: _JsonLines, server: str
) -> None:
    if not isinstance(route, dict):
        return
    for match in route.get("match", []) or []:
        if isinstance(match, dict):
            hosts = [str(h) for h in match.get("host", [])] or hosts
            path = str((match.get("path") or [path])[0])
    for h in route.get("handle", []) or []:
        if not isinstance(h, dict):
            continue
        if h.get("handler") == "subroute":
            for sub in h.get("routes", []) or []:
                _json_route(sub, listen, path, hosts, cfg, lines, server)
        elif h.get("handler") == "reverse_proxy":
            line = lines.next_handler()
            targets = [
                split_target(str(u.get("dial", "")), lines.key_after("dial", line))
                for u in h.get("upstreams", []) or []
                if isinstance(u, dict)
            ]
            transport = h.get("transport") or {}
            site = [
                f"{hosts[0] if hosts else ''}{a if a.startswith(':') else ':' + a.rsplit(':', 1)[-1]}"
                for a in listen[:1]
            ]
            rp = ReverseProxy(line, site or [":80"], path.rstrip("*") or "/", targets, source=h)
            rp.transport = str(transport.get("protocol", "http"))
            if h.get("dynamic_upstreams"):
                rp.why_unroutable = "dynamic upstreams"
            tls = transport.get("tls")
            if isinstance(tls, dict):
                # JSON's transport.tls: TLS on; each key stands for its Caddyfile spelling.
                rp.settings["tls"] = Setting("tls", [], lines.key_after("tls", line))
                for key, value in tls.items():
                    name, args = _json_setting(key, value)
                    rp.settings[name] = Setting(name, args, lines.key_after(key, line))
                for t in rp.targets:
                    if not t.scheme:
                        t.scheme = "https"
            cfg.proxies.append(rp)


def _json_setting(key: str, value: Any) -> tuple[str, list[str]]:
    """A JSON transport.tls key as the Caddyfile setting it is (the audit rules read one spelling)."""
    if key == "insecure_skip_verify":
        return ("tls_insecure_skip_verify", []) if value else ("tls_insecure_skip_verify_false", [])
    if key == "server_name":
        return "tls_server_name", [str(value)]
    if key == "root_ca_pem_files":
        return "tls_trusted_ca_certs", [str(v) for v in value or []]
    if key == "root_ca_pool":
        return "tls_trust_pool", ["inline", *(str(v) for v in value or [])]
    if key == "ca" and isinstance(value, dict):
        provider = str(value.get("provider", ""))
        files = [str(v) for v in value.get("pem_files", []) or []]
        return "tls_trust_pool", [provider, *files]
    if key in ("client_certificate_file", "client_certificate_key_file", "client_certificate_automate"):
        return "tls_client_auth", [str(value)]
    return f"tls_{key}" if not key.startswith("tls") else key, [json.dumps(value)]


# -- check: the adapted config ------------------------------------------------------------------

_LAB_OPTIONS = """{{
	admin off
	auto_https off
	storage file_system {run_dir}/storage
	log {{
		output stderr
		format json
		level INFO
	}}
}}
"""
#: Site directives that belong to the host (client-side certificates, log files, bind addresses).
_SITE_DROP = {
    "tls": "client-side TLS: the lab probes over http",
    "log": "a log file",
    "bind": "the lab binds 127.0.0.1",
}
#: Directives kept where a site, handle or route block lists them (an allow-list): what routes,
#: rewrites or answers a request. Everything else (forward_auth, php_fastcgi, basic_auth,
#: templates, tracing, metrics, invoke, acme_server, a plugin's directive ...) is dropped with a
#: note: it calls out, runs code, serves the host's files or asks for credentials, and none
#: decides whom Caddy trusts upstream (issue 26). Named matchers (``@name``) are kept.
SITE_KEEP = frozenset(
    {
        "reverse_proxy",
        "handle",
        "handle_path",
        "handle_errors",
        "route",
        "header",
        "request_header",
        "uri",
        "rewrite",
        "redir",
        "respond",
        "encode",
        "method",
        "abort",
        "error",
        "vars",
        "map",
        "request_body",
        "import",
        "root",
        "file_server",
        "try_files",
        "skip_log",
        "log_skip",
    }
)
#: Blocks whose directives are judged by :data:`SITE_KEEP` (the site's own block, and these).
_CONTAINERS = ("handle", "handle_path", "handle_errors", "route", "handle_response")
#: Also kept in a snippet, which may be imported inside a reverse_proxy or transport block.
_SNIPPET_KEEP = SITE_KEEP | {
    "to",
    "transport",
    "lb_policy",
    "header_up",
    "header_down",
    "trusted_proxies",
    "flush_interval",
    "request_buffers",
    "response_buffers",
    "stream_timeout",
    "stream_close_delay",
    "handle_response",
    "replace_status",
    "copy_response",
    "copy_response_headers",
    "method",
    "rewrite",
    "dynamic",
}
#: reverse_proxy subdirectives the lab removes: health checks and retries (see the module doc).
_RP_DROP = re.compile(
    r"^(health_\w+|fail_duration|max_fails|unhealthy_\w+|lb_try_duration|lb_try_interval|lb_retries|passive_health)$"
)


def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The config at *path* made runnable in the lab (see the module docstring)."""
    cfg = load(path)
    if cfg.format == "json":
        return _adapt_json(cfg, lab, ports, focus)
    return _adapt_caddyfile(cfg, lab, ports, focus)


def _rp_route(rp: ReverseProxy, host: str, port: int) -> Route:
    """The request that reaches a reverse_proxy: its site's port and host, its matcher's path, method, headers."""
    return Route(str(port), False, host, _route_probe(rp.path), rp.method, rp.headers)


def upstreams_of(cfg: CaddyConfig, listeners: dict[str, int] | Callable[[str], int]) -> list[Upstream]:
    """The HTTPS upstreams of *cfg*, each with the route a request takes to reach it."""
    out: list[Upstream] = []
    for rp in cfg.proxies:
        targets = rp.tls_targets()
        pool = f"rp{rp.line}" if len(targets) > 1 else ""
        name_s = rp.setting("tls_server_name")
        literal = name_s.args[0] if name_s and name_s.args and "{" not in name_s.args[0] else ""
        host, _, port = _site_route(rp.site)
        for t in targets:
            if t.dynamic or not t.host:
                continue
            name = literal or (BACKEND_NAME if is_ip(t.host) else t.host)
            route = None if rp.why_unroutable else _rp_route(rp, host, port)
            out.append(
                Upstream(
                    label=f"{t.raw} (line {t.line})",
                    host=t.host.strip("[]"),
                    port=t.port,
                    line=t.line,
                    name=name,
                    route=route,
                    why_unroutable=rp.why_unroutable,
                    pool=f"{pool}|{t.host}:{t.port}" if pool else "",
                )
            )
    return out


def _route_probe(path: str) -> str:
    """The request path a site's path matcher takes: a file name as written, else as a prefix; a
    query the matcher asks for kept."""
    base, q, query = path.partition("?")
    base = base if re.search(r"\.\w+$", base) else str(probe_path(base))
    return base + q + query


def _adapt_caddyfile(cfg: CaddyConfig, lab: LabPaths, ports: Ports, focus: str | None) -> Adapted:
    notes: list[Note] = []
    where = str(cfg.path)
    out = [f"# trustlab check: adapted from {where}", _LAB_OPTIONS.format(run_dir=lab.run_dir)]
    if cfg.options is not None:
        kept = [n.name for n in cfg.options.block or []]
        notes.append(
            Note(
                "",
                cfg.options.line,
                f"global options ({', '.join(kept) or 'empty'}) replaced by the lab's "
                "(admin off, auto_https off, storage and logs in the lab)",
            )
        )
    else:
        notes.append(Note.whole("global options added: admin off, auto_https off, storage and logs in the lab"))
    listeners: dict[str, int] = {}
    for name, body in cfg.snippets.items():
        out.append(f"({name}) {{")
        out += _emit(body, 1, lab, notes, focus, cfg, parent="snippet")
        out.append("}")
    for site in cfg.tree:
        addresses = [a.strip(",") for t in site.tokens for a in t.text.split(",") if a.strip(",")]
        new = []
        for a in addresses:
            host, path, port = _site_route([a])
            lab_port = ports(str(port))
            listeners[str(port)] = lab_port
            bare = re.sub(r"^https?://", "", a).split("/", 1)[0]
            host_part = re.sub(r":\d+$", "", bare) if not bare.startswith("[") else bare.split("]")[0] + "]"
            new.append(f"http://{host_part}:{lab_port}{path if a.count('/') > (2 if '://' in a else 0) else ''}")
        notes.append(Note("", site.line, f"site {', '.join(addresses)} -> {', '.join(new)} (bound to 127.0.0.1)"))
        out.append(f"{', '.join(new)} {{")
        out.append("\tbind 127.0.0.1")
        out += _emit(site.block or [], 1, lab, notes, focus, cfg)
        out.append("}")
    ups = upstreams_of(cfg, listeners)
    return Adapted("\n".join(out) + "\n", _dedupe(notes), ups, listeners)


def _quote(value: str) -> str:
    if value and not re.search(r'[\s"`{}#]', value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _emit(
    block: list[Node],
    depth: int,
    lab: LabPaths,
    notes: list[Note],
    focus: str | None,
    cfg: CaddyConfig,
    *,
    parent: str = "",
    rp_line: int = 0,
) -> list[str]:
    """*block* (inside *parent*, at *depth* tabs) as the lab writes it, each change noted."""
    out: list[str] = []
    pad = "\t" * depth
    for n in block:
        name = n.name
        why = _left_out(n, depth, parent, cfg)
        if why:
            notes.append(Note("", n.line, why))
            continue
        toks = [t.raw for t in n.tokens]
        if parent == "transport":
            toks = _trust_tokens(n, lab, notes)
        if focus and (name == "reverse_proxy" or (parent == "reverse_proxy" and name == "to")):
            toks = _focus_targets(n, toks, focus, notes, rp_line=n.line if name == "reverse_proxy" else rp_line)
            if toks == ["to"]:
                continue
        line = pad + " ".join(toks)
        if n.block is None:
            out.append(line)
            continue
        inner = name if name in ("reverse_proxy", "transport", *_CONTAINERS) else "x"
        out.append(line + " {")
        out += _emit(
            n.block,
            depth + 1,
            lab,
            notes,
            focus,
            cfg,
            parent=inner,
            rp_line=n.line if name == "reverse_proxy" else rp_line,
        )
        out.append(pad + "}")
    return out


def _left_out(n: Node, depth: int, parent: str, cfg: CaddyConfig) -> str:
    """Why the lab leaves directive *n* out (its note), or ``""``: a site setting that reaches out of
    the lab, an import of a host file, a directive off the allow-list, a health check."""
    name = n.name
    if parent == "" and depth == 1 and name in _SITE_DROP:
        return f"{name} {' '.join(n.args)} dropped ({_SITE_DROP[name]})".replace("  ", " ")
    if name == "import" and n.args and n.args[0] not in cfg.snippets:
        return f"import {n.args[0]} dropped (reads a host file)"
    keep = SITE_KEEP if parent in ("", *_CONTAINERS) else _SNIPPET_KEEP if parent == "snippet" else None
    if keep is not None and name not in keep and not name.startswith("@"):
        return f"{name} dropped (not on the lab's allow-list: only what routes, rewrites or answers a request is kept)"
    if parent == "reverse_proxy" and _RP_DROP.match(name):
        return f"{name} {' '.join(n.args)} dropped (health checks and retries)".replace("  ", " ")
    return ""


def _focus_targets(n: Node, toks: list[str], focus: str, notes: list[Note], *, rp_line: int) -> list[str]:
    """Only the focused upstream of a load-balanced reverse_proxy (its line or its ``to`` lines)."""
    if not focus.startswith(f"rp{rp_line}|"):
        return toks
    want = focus.split("|", 1)[1]
    kept = [toks[0]]
    for t in n.tokens[1:]:
        tg = split_target(t.text, t.line)
        if t.text.startswith(("/", "@", "*")) or f"{tg.host}:{tg.port}" == want:
            kept.append(t.raw)
    if len(kept) < len(toks):
        notes.append(Note("", rp_line, f"only upstream {want} of this reverse_proxy is probed"))
    return kept


def _trust_tokens(n: Node, lab: LabPaths, notes: list[Note]) -> list[str]:
    """A ``transport http`` subdirective with its CA and client-certificate paths made the lab's."""
    name, args = n.name, n.args
    if name == "tls_trusted_ca_certs":
        files = [trust_file(a, lab, notes) for a in args]
        return [name, *dict.fromkeys(files)]
    if name == "tls_trust_pool":
        provider = args[0] if args else ""
        if provider == "file":
            files = args[1:] or [a for sub in n.block or [] for a in sub.args if sub.name in ("pem_file", "pem_files")]
            n.block = None
            return [name, "file", *dict.fromkeys(trust_file(a, lab, notes) for a in files)]
        notes.append(Note("", n.line, f"tls_trust_pool {provider} stands for the lab's internal root"))
        n.block = None
        return [name, "file", str(lab.ca)]
    if name == "tls_client_auth":
        notes.append(Note("", n.line, "tls_client_auth uses a lab-minted client certificate"))
        return [name, str(lab.cert), str(lab.key)]
    return [t.raw for t in n.tokens]


def _json_lab_top(data: dict[str, Any], lab: LabPaths, notes: list[Note]) -> None:
    """The lab's own top level (admin off, storage and logs in the lab) in place of the user's."""
    for key in list(data):
        if key not in ("apps",):
            notes.append(Note.whole(f"top-level {key!r} replaced by the lab's (admin off, logs in the lab)"))
            data.pop(key)
    data["admin"] = {"disabled": True, "config": {"persist": False}}
    data["storage"] = {"module": "file_system", "root": f"{lab.run_dir}/storage"}
    data["logging"] = {"logs": {"default": {"writer": {"output": "stderr"}, "encoder": {"format": "json"}}}}


def _adapt_json(cfg: CaddyConfig, lab: LabPaths, ports: Ports, focus: str | None) -> Adapted:
    data = json.loads(json.dumps(cfg.tree))  # a copy: the model keeps the user's own
    notes: list[Note] = []
    _json_lab_top(data, lab, notes)
    apps = data.setdefault("apps", {})
    for app in list(apps):
        if app != "http":
            notes.append(Note.whole(f"apps.{app} dropped (certificates, ACME, PKI: not the backend's trust)"))
            apps.pop(app)
    listeners: dict[str, int] = {}
    # The model's proxies come in the order _json_handlers walks the handlers: their lines.
    lines = [rp.line for rp in cfg.proxies]
    for name, server in (apps.get("http", {}).get("servers") or {}).items():
        old = [str(x) for x in server.get("listen", [])] or [":443"]
        port = old[0].rsplit(":", 1)[-1].split("-")[0]
        listeners[port] = ports(port)
        server["listen"] = [f"127.0.0.1:{listeners[port]}"]
        server["automatic_https"] = {"disable": True}
        notes.append(Note.whole(f"server {name}: listen {', '.join(old)} -> 127.0.0.1:{listeners[port]}"))
        for key in ("tls_connection_policies", "logs", "listener_wrappers"):
            if server.pop(key, None) is not None:
                notes.append(Note.whole(f"server {name}: {key} dropped (client side)"))
        _json_allow(server.get("routes"), notes)
        for h in _json_handlers(server.get("routes", [])):
            _json_trust(h, lab, notes, focus, lines.pop(0) if lines else 0)
    ups = upstreams_of(cfg, listeners)
    return Adapted(json.dumps(data, indent=2) + "\n", _dedupe(notes), ups, listeners, config_name="caddy.json")


#: JSON handlers kept (the allow-list of :data:`SITE_KEEP`, in Caddy's JSON names).
JSON_KEEP = frozenset(
    {
        "reverse_proxy",
        "subroute",
        "headers",
        "rewrite",
        "static_response",
        "encode",
        "vars",
        "map",
        "file_server",
        "error",
        "request_body",
        "copy_response",
        "copy_response_headers",
    }
)


def _json_allow(routes: Any, notes: list[Note]) -> None:
    """Drop every handler not in :data:`JSON_KEEP` from *routes*, their subroutes and the
    reverse proxies' ``handle_response`` routes (iteratively), each with a note."""
    todo = [routes]
    while todo:
        for route in todo.pop() or []:
            if not isinstance(route, dict) or not isinstance(route.get("handle"), list):
                continue
            kept = []
            for h in route["handle"]:
                kind = h.get("handler") if isinstance(h, dict) else None
                if kind not in JSON_KEEP:
                    notes.append(
                        Note.whole(
                            f"handler {kind!r} dropped (not on the lab's allow-list: only what routes, "
                            "rewrites or answers a request is kept)"
                        )
                    )
                    continue
                kept.append(h)
                if kind == "subroute":
                    todo.append(h.get("routes"))
                for hr in h.get("handle_response") or [] if kind == "reverse_proxy" else []:
                    if isinstance(hr, dict):
                        todo.append(hr.get("routes"))
            route["handle"] = kept


def _json_handlers(routes: Any) -> Iterator[dict[str, Any]]:
    for route in routes or []:
        if not isinstance(route, dict):
            continue
        for h in route.get("handle", []) or []:
            if isinstance(h, dict) and h.get("handler") == "subroute":
                yield from _json_handlers(h.get("routes"))
            elif isinstance(h, dict) and h.get("handler") == "reverse_proxy":
                yield h


def _json_trust(h: dict[str, Any], lab: LabPaths, notes: list[Note], focus: str | None, line: int) -> None:
    if focus and focus.startswith(f"rp{line}|") and isinstance(h.get("upstreams"), list):
        want = focus.split("|", 1)[1]
        kept = [u for u in h["upstreams"] if isinstance(u, dict) and _dial_key(str(u.get("dial", ""))) == want]
        if kept and len(kept) < len(h["upstreams"]):
            h["upstreams"] = kept
            notes.append(Note("", line, f"only upstream {want} of this reverse_proxy is probed"))
    for key in ("health_checks",):
        if h.pop(key, None) is not None:
            notes.append(Note.whole("reverse_proxy health_checks dropped (health checks and retries)"))
    lb = h.get("load_balancing")
    if isinstance(lb, dict) and any(k in lb for k in ("try_duration", "try_interval", "retries")):
        for k in ("try_duration", "try_interval", "retries"):
            lb.pop(k, None)
        notes.append(Note.whole("reverse_proxy load_balancing retries dropped (health checks and retries)"))
    tls = (h.get("transport") or {}).get("tls")
    if not isinstance(tls, dict):
        return
    if "root_ca_pem_files" in tls:
        tls["root_ca_pem_files"] = list(dict.fromkeys(trust_file(str(p), lab, notes) for p in tls["root_ca_pem_files"]))
    if "root_ca_pool" in tls:
        tls["root_ca_pem_files"] = [str(lab.ca)]
        tls.pop("root_ca_pool")
        notes.append(Note.whole("transport.tls.root_ca_pool (inline CA) stands for the lab's internal root"))
    ca = tls.get("ca")
    if isinstance(ca, dict):
        if ca.get("provider") == "file":
            ca["pem_files"] = list(dict.fromkeys(trust_file(str(p), lab, notes) for p in ca.get("pem_files", [])))
        else:
            notes.append(
                Note.whole(f"transport.tls.ca provider {ca.get('provider')!r} stands for the lab's internal root")
            )
            tls["ca"] = {"provider": "file", "pem_files": [str(lab.ca)]}
    if any(k.startswith("client_certificate") for k in tls):
        for k in [k for k in tls if k.startswith("client_certificate")]:
            tls.pop(k)
        tls["client_certificate_file"], tls["client_certificate_key_file"] = str(lab.cert), str(lab.key)
        notes.append(Note.whole("transport.tls client certificate: a lab-minted one"))


def _dial_key(dial: str) -> str:
    t = split_target(dial, 0)
    return f"{t.host}:{t.port}"


def _dedupe(notes: list[Note]) -> list[Note]:
    return list(dict.fromkeys(notes))


# -- audit: one scope per TLS reverse_proxy, its rules on the registry ----------------------------
_DOCS = "https://caddyserver.com/docs/caddyfile/directives/reverse_proxy"


def scopes(path: Path, text: str = "") -> list[rules.Scope]:
    """Every reverse_proxy of *path* that speaks TLS to its upstreams, with its transport's settings."""
    out = []
    for rp in load(path).proxies:
        if not rp.tls:
            continue
        out.append(
            rules.Scope(
                ProxyKind.CADDY,
                str(path),
                rp.line,
                tuple(rules.Upstream(t.raw, t.host, t.line) for t in rp.tls_targets()),
                {n: rules.Directive(n, tuple(s.args), s.line) for n, s in rp.settings.items()},
            )
        )
    return out


def _targets(scope: rules.Scope) -> str:
    return " ".join(u.url for u in scope.upstreams) or "its upstream"


@rules.rule(
    "caddy-skip-verify",
    proxy="caddy",
    severity="high",
    scenario="caddy/verify-off",
    directives=("tls_insecure_skip_verify",),
    help=f"{_DOCS}#tls_insecure_skip_verify",
    fix="remove tls_insecure_skip_verify and trust the backend's CA: tls_trust_pool file <internal root>",
)
def _skip_verify(scope: rules.Scope) -> rules.Hit | None:
    s = scope.get("tls_insecure_skip_verify")
    if not s:
        return None
    return rules.Hit(
        s.line,
        f"reverse_proxy {_targets(scope)}: tls_insecure_skip_verify: no chain, name or date check, "
        "any certificate is accepted",
    )


@rules.rule(
    "caddy-client-controlled-name",
    proxy="caddy",
    severity="high",
    scenario="caddy/server-name-from-host",
    directives=("tls_server_name",),
    help=f"{_DOCS}#tls_server_name",
    fix="set tls_server_name to the backend's literal name (or leave it out: the upstream's host)",
)
def _client_name(scope: rules.Scope) -> rules.Hit | None:
    s = scope.get("tls_server_name")
    if not (s and s.args and _CLIENT_PLACEHOLDER.search(s.value)) or scope.get("tls_insecure_skip_verify"):
        return None
    return rules.Hit(
        s.line,
        f"tls_server_name {s.value}: the client chooses the SNI and the name the backend's "
        "certificate is checked against",
    )


@rules.rule(
    "caddy-system-store",
    proxy="caddy",
    severity="medium",
    scenario="caddy/system-store",
    directives=("tls_trust_pool", "tls_trusted_ca_certs"),
    help=f"{_DOCS}#tls_trust_pool",
    fix="trust the internal root only: transport http { tls_trust_pool file <internal root> }",
)
def _system_store(scope: rules.Scope) -> rules.Hit | None:
    if any(scope.get(n) for n in ("tls_trust_pool", "tls_trusted_ca_certs", "tls_insecure_skip_verify")):
        return None
    return rules.Hit(
        scope.line,
        f"reverse_proxy {_targets(scope)} verifies against the system trust store: any public CA "
        "can issue a certificate for the backend's name",
    )


@rules.rule(
    "caddy-system-bundle",
    proxy="caddy",
    severity="medium",
    scenario="caddy/system-bundle",
    directives=("tls_trust_pool", "tls_trusted_ca_certs"),
    help=f"{_DOCS}#tls_trust_pool",
    fix="trust the internal root only",
)
def _system_bundle(scope: rules.Scope) -> Iterator[rules.Hit]:
    for name in ("tls_trust_pool", "tls_trusted_ca_certs"):
        s = scope.get(name)
        if s is None:
            continue
        for f in s.args:
            if is_system_bundle(f):
                yield rules.Hit(
                    s.line, f"{name} {f} is a system bundle: any public CA can issue a certificate for the backend"
                )


@rules.rule(
    "caddy-ip-target-no-name",
    proxy="caddy",
    severity="medium",
    scenario="caddy/ip-target",
    directives=("tls_server_name",),
    help=f"{_DOCS}#tls_server_name",
    fix="add tls_server_name <the backend's name> to transport http",
)
def _ip_no_name(scope: rules.Scope) -> Iterator[rules.Hit]:
    if scope.get("tls_server_name") or scope.get("tls_insecure_skip_verify"):
        return
    for u in scope.upstreams:
        if is_ip(u.host):
            yield rules.Hit(
                u.line,
                f"upstream {u.url} is an IP without tls_server_name: Go checks the IP against the "
                "certificate's IP SANs, so the backend's own certificate is refused and any certificate the CA "
                "issued for that IP passes",
            )


@rules.rule(
    "caddy-trusted-ca-certs-deprecated",
    proxy="caddy",
    severity="low",
    scenario="caddy/trusted-ca-certs",
    directives=("tls_trusted_ca_certs",),
    help=f"{_DOCS}#tls_trust_pool",
    fix="on Caddy 2.8+: tls_trust_pool file <the same files>",
)
def _deprecated(scope: rules.Scope) -> rules.Hit | None:
    s = scope.get("tls_trusted_ca_certs")
    if not s or scope.get("tls_insecure_skip_verify"):
        return None
    return rules.Hit(
        s.line,
        "tls_trusted_ca_certs is deprecated since Caddy 2.8 (same trust as tls_trust_pool file); "
        "Caddy 2.6 refuses tls_trust_pool, so a config shared across versions keeps this spelling",
    )
