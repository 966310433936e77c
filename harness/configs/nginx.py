"""A user's nginx config (whole ``nginx.conf``, ``http {}`` or a ``server {}`` block), parsed with
crossplane and adapted to run in the lab.

Kept exactly: every ``proxy_ssl_*`` directive (trust paths excepted, see below), ``proxy_pass``
targets, ``upstream`` blocks, ``server_name``, locations. Changed: ``proxy_ssl_trusted_certificate``
points at the lab's internal root (or its system bundle when the path looks like an OS bundle),
``listen`` moves to ``127.0.0.1:<lab port>`` (``ssl`` kept: the probe speaks TLS then),
``ssl_certificate``/``proxy_ssl_certificate`` are lab-minted, process settings (``user``,
``pid``, ``include``, logs, temp paths, ``events``) are the lab's own, ``*_cache_path``
directories move into the lab's run directory and ``*_store`` (responses written as files) is
dropped. These are defence in depth: every proxy runs in :mod:`harness.runtimes.sandbox`, which sees no
host path to write to or socket to reach in the first place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.configs import rules
from harness.configs.base import (
    Adapted,
    LabPaths,
    Note,
    Ports,
    Route,
    Run,
    Upstream,
    crl_file,
    is_ip,
    is_system_bundle,
    ordered,
    probe_path,
    split_hostport,
    split_url,
    trust_file,
)
from harness.configs.matchers import regex_example
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

Directive = dict[str, Any]

#: main-context directives that belong to the host's process, replaced by the lab's own.
_MAIN_DROP = {
    "user",
    "pid",
    "daemon",
    "master_process",
    "worker_processes",
    "error_log",
    "include",
    "load_module",
    "lock_file",
    "worker_rlimit_nofile",
    "worker_rlimit_core",
    "worker_priority",
    "worker_cpu_affinity",
    "working_directory",
    "ssl_engine",
    "thread_pool",
    "env",
    "pcre_jit",
    "worker_shutdown_timeout",
    "timer_resolution",
    "debug_points",
}
#: Anywhere: host paths the lab replaces (logs, temp dirs) or cannot reach (includes).
_ANY_DROP = {
    "include",
    "error_log",
    "access_log",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
}
#: Cache directories nginx creates at start-up: moved into the lab's run directory.
_CACHE_PATHS = {"proxy_cache_path", "fastcgi_cache_path", "uwsgi_cache_path", "scgi_cache_path"}
#: Directives that store backend responses as files (``on``: under ``root``; or a path).
_STORES = {"proxy_store", "fastcgi_store", "uwsgi_store", "scgi_store"}
#: Client-side TLS material (the proxy as a TLS *server*): not what the lab tests.
_CLIENT_SIDE_DROP = {
    "ssl_trusted_certificate",
    "ssl_client_certificate",
    "ssl_verify_client",
    "ssl_verify_depth",
    "ssl_crl",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_stapling_file",
    "ssl_stapling_responder",
    "ssl_dhparam",
    "ssl_password_file",
    "ssl_session_ticket_key",
    "ssl_ocsp",
    "ssl_ocsp_cache",
    "ssl_ocsp_responder",
}
_LISTEN_KEEP = {"ssl", "default_server", "default"}


def parse(path: Path) -> list[Directive]:
    """The crossplane tree of *path*; a syntax error is a one-line ConfigError."""
    import crossplane

    payload = crossplane.parse(
        str(path), single=True, check_ctx=False, check_args=False, comments=False, catch_errors=True
    )
    errors = payload.get("errors") or []
    if errors:
        err = errors[0]
        what = err.get("error") or "cannot be read as an nginx config"
        raise ConfigError(f"{err.get('file', path)}:{err.get('line') or '?'}: nginx syntax: {what}")
    parsed: list[Directive] = payload["config"][0]["parsed"]
    if not parsed:
        raise ConfigError(f"{path}: no nginx directives found")
    return parsed


def shape(tree: list[Directive]) -> str:
    """``main`` (a whole nginx.conf), ``http``, ``server`` or ``location`` (what the file holds)."""
    names = {d["directive"] for d in tree}
    if "http" in names or "events" in names or "stream" in names:
        return "main"
    if "server" in names and any("block" in d for d in tree if d["directive"] == "server"):
        return "http"
    if "location" in names:
        return "server"
    if names & {"proxy_pass", "proxy_ssl_verify", "proxy_ssl_trusted_certificate"}:
        return "location"
    raise ConfigError("no http, server or location block and no proxy_pass: is this an nginx config?")


def servers(tree: list[Directive]) -> list[Directive]:
    """Every ``server`` block of the http context (wrapping a bare server/location file)."""
    http = wrap_http(tree)
    return [d for d in http["block"] if d["directive"] == "server" and "block" in d]


def wrap_http(tree: list[Directive]) -> Directive:
    kind = shape(tree)
    if kind == "main":
        for d in tree:
            if d["directive"] == "http":
                return d
        return {"directive": "http", "line": 0, "args": [], "block": []}
    if kind == "http":
        return {"directive": "http", "line": 0, "args": [], "block": tree}
    if kind == "server":
        return {
            "directive": "http",
            "line": 0,
            "args": [],
            "block": [{"directive": "server", "line": 0, "args": [], "block": tree}],
        }
    loc = {"directive": "location", "line": 0, "args": ["/"], "block": tree}
    return {
        "directive": "http",
        "line": 0,
        "args": [],
        "block": [{"directive": "server", "line": 0, "args": [], "block": [loc]}],
    }


def effective(name: str, stack: list[Directive]) -> Directive | None:
    """The directive *name* in effect for the innermost block of *stack* (nginx inheritance)."""
    for block in reversed(stack):
        for d in block.get("block", []):
            if d["directive"] == name:
                return d
    return None


def resolve_var(value: str, stack: list[Directive]) -> str | None:
    """``$name`` references replaced by a ``set $name value`` in scope, else None."""

    def sub(m: re.Match[str]) -> str:
        var = "$" + (m.group(1) or m.group(2))
        for block in reversed(stack):
            for d in block.get("block", []):
                if d["directive"] == "set" and d["args"] and d["args"][0] == var and len(d["args"]) > 1:
                    return d["args"][1]
        raise KeyError(var)

    try:
        out = value
        for _ in range(5):
            new = re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, out)
            if new == out:
                break
            out = new
        return out
    except KeyError:
        return None


def ssl_name_host(name: str) -> str:
    """The name nginx sends as SNI and checks for ``proxy_ssl_name NAME``: without a port.

    ngx_http_upstream_ssl_name() strips one ("ssl name here may contain port, notably if derived
    from $proxy_host or $http_host"): after a bracketed IPv6 address, or from the first colon."""
    end = name.find("]") + 1 if name.startswith("[") else 0
    colon = name.find(":", end)
    return name if colon < 0 else name[:colon]


def _location_probe(loc: Directive) -> str | None:
    """The request path that reaches *loc* (None: a named location, or a regex nothing matches)."""
    args = loc["args"]
    if not args:
        return None
    mod, pat = ("", args[0]) if len(args) == 1 else (args[0], args[1])
    how = {"": "prefix", "^~": "prefix", "=": "exact", "~": "regex", "~*": "regex"}.get(mod)
    if pat.startswith("@") or how is None:
        return None
    return probe_path(pat, how, flags=re.I if mod == "~*" else 0)


def _host_header(server: Directive) -> str:
    regexes: list[str] = []
    for d in server.get("block", []):
        if d["directive"] == "server_name":
            for name in d["args"]:
                if name.startswith("~"):
                    regexes.append(name[1:])
                if not name or name == "_" or name.startswith("~") or name.startswith("$"):
                    continue
                if not re.fullmatch(r"[A-Za-z0-9.*_-]+", name) and name is not d["args"][-1]:
                    continue  # escapes or spaces: not sendable as Host; a later name may be (check refuses the rest)
                if name.startswith("."):
                    return name[1:]
                return name.replace("*", "probe")
    for rx in regexes:
        # A regex name (PCRE, case-insensitive as nginx compiles it): a host it matches.
        rx = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", rx)
        host = regex_example(rx, icase=True)
        if host and re.fullmatch(r"[A-Za-z0-9.-]+", host):
            return host
    return PUBLIC_HOST


@dataclass
class _Run(Run):
    """One :func:`adapt` of an nginx config: what it finds as it goes."""

    #: The ``upstream`` blocks of the http context, by name.
    pools: dict[str, Directive] = field(default_factory=dict)
    upstreams: list[Upstream] = field(default_factory=list)
    listeners: dict[str, int] = field(default_factory=dict)


def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The config at *path* made runnable in the lab (see the module docstring)."""
    import copy

    tree = copy.deepcopy(parse(path))
    kind = shape(tree)
    http = wrap_http(tree)
    run = _Run(path, lab, ports, focus, pools=_pools(http))
    if kind != "main":
        what = f"a {kind} block" if kind != "http" else "http-level directives"
        run.notes.append(Note.whole(f"{path} holds {what}; the lab wraps it in a minimal nginx.conf"))
    _walk(run, http, [http])
    _strip_private(http)
    main, streams = _main_context(run, tree) if kind == "main" else ([], [])
    text = _build(run, main, http, streams)
    return Adapted(text=text, notes=ordered(run.notes), upstreams=run.upstreams, listeners=run.listeners)


def _pools(context: Directive) -> dict[str, Directive]:
    return {d["args"][0]: d for d in context["block"] if d["directive"] == "upstream" and d.get("args")}


def _walk(run: _Run, block: Directive, stack: list[Directive]) -> None:
    """*block* and the blocks inside it adapted in place; each ``proxy_pass https://`` found."""
    new = _server_listens(run, block) if block["directive"] == "server" else []
    seen_cert: set[str] = set()
    for d in block.get("block", []):
        if not _kept(run, d, seen_cert):
            continue
        if "block" in d:
            _walk(run, d, [*stack, d])
            if d["directive"] == "location":
                _proxy_passes(run, d, [*stack, d])
        elif d["directive"] == "proxy_pass" and block["directive"] != "location":
            _proxy_passes(run, block, stack)  # in a server, or an `if` block
        new.append(d)
    block["block"] = new


def _server_listens(run: _Run, server: Directive) -> list[Directive]:
    """A server's ``listen`` directives, moved to lab ports (and taken out of its block): first, as
    the routes of its locations need them. A server without one listens on port 80."""
    kept, listens = [], []
    for d in server.get("block", []):
        if d["directive"] != "listen":
            kept.append(d)
        elif _listen(run, d, server, d["line"]):
            listens.append(d)
    if not listens:
        fake = {"directive": "listen", "line": server["line"], "args": ["80"]}
        _listen(run, fake, server, server["line"], implicit=True)
        listens.append(fake)
    server["block"] = kept
    return listens


def _listen(run: _Run, d: Directive, server: Directive, line: int, implicit: bool = False) -> bool:
    """*d* moved to its lab port; False when it is dropped (a unix socket, a port already taken)."""
    addr = d["args"][0] if d["args"] else "80"
    if addr.startswith("unix:"):
        run.notes.append(Note("", line, f"listen {addr} dropped (unix sockets are not probed)"))
        return False
    port = addr.rsplit(":", 1)[-1] if (":" in addr and not addr.endswith("]")) else addr
    if not port.isdigit():
        port = "80"
    tls = "ssl" in d["args"] or any(x["directive"] == "ssl" and x["args"] == ["on"] for x in server.get("block", []))
    lab_port = run.ports(port)
    run.listeners[port] = lab_port
    server.setdefault("_listeners", {})[port] = tls
    new_args = [f"127.0.0.1:{lab_port}", *[a for a in d["args"][1:] if a in _LISTEN_KEEP]]
    taken = server.setdefault("_taken", set())
    if lab_port in taken:
        return False  # `listen 443` + `listen [::]:443` -> one lab listener
    taken.add(lab_port)
    old = "(none: nginx listens on *:80)" if implicit else " ".join(d["args"])
    run.notes.append(Note("", line, f"listen {old} -> listen {' '.join(new_args)}"))
    d["args"] = new_args
    return True


def _kept(run: _Run, d: Directive, seen_cert: set[str]) -> bool:
    """Whether *d* stays in its block, changed in place for the lab when it must be."""
    name, args, line = d["directive"], d["args"], d["line"]
    why = _dropped(d, seen_cert)
    if why is not None:
        if why:
            run.notes.append(Note("", line, why))
        return False
    if name in _SERVER_CERT:
        seen_cert.add(name)
        d["args"] = [str(run.lab.cert if name == "ssl_certificate" else run.lab.key)]
        run.notes.append(Note("", line, f"{name} {args[0]} replaced by a lab-minted one (client side)"))
    elif (tls_kept := _upstream_tls(d, run.path, run.lab, run.notes)) is not None:
        return tls_kept
    elif name in _CACHE_PATHS and args:
        sub = run.lab.run_dir / f"cache-{line}"
        d["args"] = [str(sub), *args[1:]]
        run.notes.append(Note("", line, f"{name} {args[0]} -> {sub}"))
    elif name == "upstream" and run.focus is not None:
        _focus_pool(run, d)
    return True


def _dropped(d: Directive, seen_cert: set[str]) -> str | None:
    """Why *d* is dropped from an http context (the note; ``""``: said nowhere), or None."""
    name, args = d["directive"], d["args"]
    if name == "include":
        return f"include {' '.join(args)} dropped (not followed: put trust directives in the checked file)"
    if name in _ANY_DROP or (name in _SERVER_CERT and name in seen_cert):
        return ""  # host paths the lab replaces; a second server certificate (the first is the lab's)
    if name in _STORES and args and args[0] != "off":
        # `on` or a path: writes backend responses as files (under `root`, or anywhere).
        return f"{name} {' '.join(args)} dropped (writes files on the host)"
    return _DROPPED.get(name)


#: The lab's own certificate for the proxy's client side (the first of each is kept).
_SERVER_CERT = ("ssl_certificate", "ssl_certificate_key")
#: Directives dropped wherever they are, with what the note says.
_DROPPED = {
    **{n: f"{n} dropped (client side: not what the lab tests)" for n in _CLIENT_SIDE_DROP},
    "stream": "stream {} dropped (only http proxying is checked)",
    "mail": "mail {} dropped (only http proxying is checked)",
}


def _focus_pool(run: _Run, pool: Directive, *, max_fails: bool = True) -> None:
    """While one server of *pool* is probed (``run.focus``), the others are down; in http (*max_fails*)
    it stays in rotation after a refused impostor."""
    focus, name = run.focus or "", pool["args"][0]
    for s in pool.get("block", []):
        if s["directive"] != "server" or not s["args"]:
            continue
        key = f"{name}|{s['args'][0]}|{s['line']}"
        if key == focus and max_fails and len(pool["block"]) > 1:
            # With several peers nginx takes a failed one out of rotation for fail_timeout; the
            # next cell would get "no live upstreams".
            s["args"] = [a for a in s["args"] if not a.startswith("max_fails=")] + ["max_fails=0"]
            run.notes.append(
                Note(
                    "",
                    s["line"],
                    f"max_fails=0 on the probed server {s['args'][0]} (a refused "
                    "impostor must not take it out of rotation for the next cell)",
                )
            )
        if key != focus and focus.startswith(name + "|") and "down" not in s["args"]:
            s["args"].append("down")
            run.notes.append(
                Note(
                    "",
                    s["line"],
                    f"server {s['args'][0]} marked down while {focus.split('|')[1]} of upstream {name} is probed",
                )
            )


def _proxy_passes(run: _Run, loc: Directive, stack: list[Directive]) -> None:
    """The HTTPS upstreams the ``proxy_pass`` directives of *loc* (a location, server or ``if``) name."""
    for d in loc.get("block", []):
        if d["directive"] != "proxy_pass" or not d["args"]:
            continue
        url = _literal_url(run, d, stack)
        if url is None or split_url(url)[0] != "https":
            continue
        route, why = _route(loc, stack)
        name_d = effective("proxy_ssl_name", stack)
        ssl_name = (
            ssl_name_host(name_d["args"][0]) if name_d and name_d["args"] and "$" not in name_d["args"][0] else None
        )
        where = f"location {' '.join(loc['args'])}" if loc["directive"] == "location" else "server"
        for host, port, pool in _targets(run, url):
            run.upstreams.append(
                Upstream(
                    label=f"{url}{f' -> {host}:{port}' if pool else ''} ({where}, line {d['line']})",
                    host=host,
                    port=port,
                    line=d["line"],
                    name=ssl_name or (host if not is_ip(host) else BACKEND_NAME),
                    route=route,
                    why_unroutable=why,
                    pool=pool,
                )
            )


def _literal_url(run: _Run, d: Directive, stack: list[Directive]) -> str | None:
    """The URL of ``proxy_pass`` *d*, a variable replaced by its ``set`` value in scope (in place);
    None when it depends on the request."""
    url: str = d["args"][0]
    if "$" not in url:
        return url
    value = resolve_var(url, stack)
    if value is None:
        run.notes.append(
            Note(
                "",
                d["line"],
                f"proxy_pass {url} depends on a request variable; not checked (give a literal URL or a `set` in scope)",
            )
        )
        return None
    run.notes.append(
        Note(
            "",
            d["line"],
            f"proxy_pass {url} -> {value} (the lab has no DNS resolver; the value of `set` was substituted)",
        )
    )
    d["args"] = [value]
    return value


def _route(loc: Directive, stack: list[Directive]) -> tuple[Route | None, str]:
    """How a request reaches *loc*: its server's first listener, Host and a path it matches; or why
    no request can."""
    server = next((b for b in stack if b["directive"] == "server"), None)
    path = _location_probe(loc) if loc["directive"] == "location" else "/"
    if server is not None and path is not None:
        lst = server.get("_listeners", {})
        listener = next(iter(lst), "80")
        return Route(listener, lst.get(listener, False), _host_header(server), path), ""
    if loc["directive"] == "location" and any(a.startswith("@") for a in loc["args"][:1]):
        return None, (
            f"named location {loc['args'][0]}: only an internal redirect (try_files, error_page) reaches "
            "it, never a request path"
        )
    return None, f"location {' '.join(loc['args'])}: no request path the lab can build matches this regex"


def _targets(run: _Run, url: str) -> list[tuple[str, int, str]]:
    """host, port and pool key of each server *url* reaches: its ``upstream`` block's, or itself."""
    _, host, port, _ = split_url(url)
    if host not in run.pools:
        return [(host, port or 443, "")]
    out = []
    for s in run.pools[host].get("block", []):
        if s["directive"] == "server" and s["args"]:
            t_host, t_port = split_hostport(s["args"][0], 80)
            out.append((t_host, t_port, f"{host}|{s['args'][0]}|{s['line']}"))
    return out


def _main_context(run: _Run, tree: list[Directive]) -> tuple[list[Directive], list[Directive]]:
    """The main context's directives the lab keeps, and its ``stream`` blocks (adapted)."""
    main: list[Directive] = []
    streams: list[Directive] = []
    for d in tree:
        name, line = d["directive"], d["line"]
        if name in _MAIN_DROP:
            if name not in ("include", "error_log", "pid"):
                run.notes.append(
                    Note(
                        "",
                        line,
                        f"{name} {' '.join(d['args'])} dropped (process setting: the lab runs one foreground process)",
                    )
                )
            elif name == "include":
                run.notes.append(Note("", line, f"include {' '.join(d['args'])} dropped (not followed)"))
        elif name == "stream" and "block" in d:
            _adapt_stream(run, d)
            streams.append(d)
        elif name == "mail":
            run.notes.append(Note("", line, "mail {} dropped (only http and stream proxying are checked)"))
        elif name not in ("events", "http"):
            main.append(d)
    return main, streams


def _build(run: _Run, main: list[Directive], http: Directive, streams: list[Directive]) -> str:
    """The adapted nginx.conf: the lab's process settings and temp paths around what was kept."""
    import crossplane

    rd = run.lab.run_dir
    head = [
        {"directive": "daemon", "args": ["off"]},
        {"directive": "master_process", "args": ["off"]},
        {"directive": "worker_processes", "args": ["1"]},
        {"directive": "pid", "args": [f"{rd}/nginx.pid"]},
        {"directive": "error_log", "args": [f"{rd}/error.log", "info"]},
        *main,
        {"directive": "events", "args": [], "block": [{"directive": "worker_connections", "args": ["256"]}]},
    ]
    lab_http = [
        {"directive": "access_log", "args": ["off"]},
        *[
            {"directive": f"{t}_temp_path", "args": [f"{rd}/{t}_temp"]}
            for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ],
    ]
    if not any(d["directive"] == "default_type" for d in http["block"]):
        lab_http.append({"directive": "default_type", "args": ["application/octet-stream"]})
    run.notes.append(Note.whole("logs, pid and temp paths are the lab's own; the error log is at level info"))
    body = crossplane.build([*head, {"directive": "http", "args": [], "block": lab_http + http["block"]}, *streams])
    return f"# trustlab check: adapted from {run.path}\n{body}\n"


#: ``listen`` parameters kept in a stream server (``ssl``: the probe speaks TLS to it then).
_STREAM_LISTEN_KEEP = {"ssl"}


def _upstream_tls(d: Directive, path: Path, lab: LabPaths, notes: list[Note]) -> bool | None:
    """The TLS towards the backend, the same in http and stream: the client certificate and the
    trust and CRL files become the lab's, in place. True: keep *d*; False: drop it; None: *d* is
    none of these."""
    name, args, line = d["directive"], d["args"], d["line"]
    if name in ("proxy_ssl_certificate", "proxy_ssl_certificate_key") and args:
        d["args"] = [str(lab.cert if name == "proxy_ssl_certificate" else lab.key)]
        notes.append(Note("", line, f"{name} {args[0]} replaced by a lab-minted client certificate"))
        return True
    if name == "proxy_ssl_password_file":
        notes.append(Note("", line, "proxy_ssl_password_file dropped (the lab key has no passphrase)"))
        return False
    if name == "proxy_ssl_trusted_certificate" and args:
        d["args"] = [trust_file(args[0], lab, notes)]
        return True
    if name == "proxy_ssl_crl" and args:
        crl = crl_file(args[0], path, lab, notes)
        if not crl:
            return False
        d["args"] = [crl]
        return True
    return None


def _adapt_stream(run: _Run, stream: Directive) -> None:
    """A ``stream {}`` block made runnable in the lab, in place; its TLS upstreams and listeners
    added to *run*.

    A stream server proxies bytes: the probe sends its HTTP request through it (over TLS when the
    server listens with ``ssl``), and the seat answers it as it answers an http proxy's request.
    Only servers whose ``proxy_ssl`` is on speak TLS to their upstream; the others are plain TCP
    and are not what the lab tests (nothing to verify)."""
    pools = _pools(stream)
    stream["block"] = _tls_servers(run, stream)
    _stream_walk(run, stream)
    servers = [d for d in stream["block"] if d["directive"] == "server"]
    for server in servers:
        # The lab's readiness check opens a TCP connection, which a stream server proxies to the
        # seat at once: a TLS session left from it would make the first cell a resumed one on
        # one run and not on another. Each cell's identity is a context of its own at the seat,
        # so no verdict depends on reuse; the evidence then does not depend on timing either.
        server["block"] = [d for d in server.get("block", []) if d["directive"] != "proxy_ssl_session_reuse"]
        server["block"].append({"directive": "proxy_ssl_session_reuse", "args": ["off"], "line": server["line"]})
        run.notes.append(
            Note(
                "",
                server["line"],
                "stream server gets proxy_ssl_session_reuse off (the lab's "
                "readiness connection reaches the backend through it; no session is carried into "
                "the cells)",
            )
        )
    for server in servers:
        _stream_upstreams(run, [stream, server], pools)


def _proxy_ssl_on(stack: list[Directive]) -> bool:
    on = effective("proxy_ssl", stack)
    return bool(on and on["args"] == ["on"])


def _tls_servers(run: _Run, stream: Directive) -> list[Directive]:
    """*stream*'s directives without its plain-TCP servers and the upstream blocks only they use."""
    kept = []
    for d in stream["block"]:
        if d["directive"] == "server" and not _proxy_ssl_on([stream, d]):
            # Plain TCP to its upstream: nothing to verify, and its upstream's name would not
            # resolve in the lab (nginx refuses to start on it).
            run.notes.append(
                Note("", d["line"], "stream server without proxy_ssl on dropped (plain TCP: no certificate to verify)")
            )
            continue
        kept.append(d)
    used = {
        p["args"][0]
        for d in kept
        if d["directive"] == "server"
        for p in d.get("block", [])
        if p["directive"] == "proxy_pass" and p["args"]
    }
    for d in [d for d in kept if d["directive"] == "upstream" and d.get("args") and d["args"][0] not in used]:
        run.notes.append(Note("", d["line"], f"stream upstream {d['args'][0]} dropped (only plain-TCP servers use it)"))
        kept.remove(d)
    return kept


def _stream_walk(run: _Run, block: Directive) -> None:
    """*block* of a stream context and the blocks inside it adapted in place."""
    new: list[Directive] = []
    for d in block.get("block", []):
        name, args, line = d["directive"], d["args"], d["line"]
        if name in _ANY_DROP or name in _CLIENT_SIDE_DROP:
            if name == "include":
                run.notes.append(Note("", line, f"include {' '.join(args)} dropped (not followed)"))
            continue
        if name in _SERVER_CERT and args:
            d["args"] = [str(run.lab.cert if name == "ssl_certificate" else run.lab.key)]
            run.notes.append(Note("", line, f"{name} {args[0]} replaced by a lab-minted one (client side)"))
        elif (tls_kept := _upstream_tls(d, run.path, run.lab, run.notes)) is not None:
            if not tls_kept:
                continue
        elif name == "listen" and block["directive"] == "server":
            if not _stream_listen(run, d, block):
                continue
        elif name == "upstream" and run.focus is not None and args:
            _focus_pool(run, d, max_fails=False)
        if "block" in d:
            _stream_walk(run, d)
        new.append(d)
    block["block"] = new


def _stream_listen(run: _Run, d: Directive, server: Directive) -> bool:
    """A stream server's *d* moved to its lab port; False when it is dropped (unix, UDP)."""
    args, line = d["args"], d["line"]
    addr = args[0] if args else ""
    if addr.startswith("unix:") or "udp" in args:
        run.notes.append(Note("", line, f"listen {' '.join(args)} dropped (only TCP listeners are probed)"))
        return False
    port = addr.rsplit(":", 1)[-1] if ":" in addr and not addr.endswith("]") else addr
    lab_port = run.ports(port)
    run.listeners[port] = lab_port
    server.setdefault("_listeners", {})[port] = "ssl" in args
    new_args = [f"127.0.0.1:{lab_port}", *[a for a in args[1:] if a in _STREAM_LISTEN_KEEP]]
    run.notes.append(Note("", line, f"stream listen {' '.join(args)} -> listen {' '.join(new_args)}"))
    d["args"] = new_args
    return True


def _stream_upstreams(run: _Run, stack: list[Directive], pools: dict[str, Directive]) -> None:
    """The TLS upstreams a stream server (``stack[-1]``) proxies to, each by its listener."""
    server = stack[-1]
    lst: dict[str, bool] = server.pop("_listeners", {})
    listener = next(iter(lst), None)
    route = Route(listener, lst[listener], PUBLIC_HOST, "/") if listener else None
    why = "" if route else "the stream server has no TCP listener the lab can reach"
    name_d = effective("proxy_ssl_name", stack)
    ssl_name = ssl_name_host(name_d["args"][0]) if name_d and name_d["args"] and "$" not in name_d["args"][0] else None
    for d in server.get("block", []):
        if d["directive"] != "proxy_pass" or not d["args"] or not _proxy_ssl_on(stack):
            continue  # plain TCP to the upstream: no certificate to verify
        target = d["args"][0]
        if "$" in target:
            run.notes.append(Note("", d["line"], f"stream proxy_pass {target} depends on a variable; not checked"))
            continue
        members = (
            [
                (s["args"][0], s["line"])
                for s in pools[target].get("block", [])
                if s["directive"] == "server" and s.get("args")
            ]
            if target in pools
            else [(target, d["line"])]
        )
        for addr, line in members:
            host, port = split_hostport(addr, 0)
            if not port:
                run.notes.append(Note("", line, f"stream server {addr} has no port; not checked"))
                continue
            run.upstreams.append(
                Upstream(
                    label=f"stream proxy_pass {target}"
                    + (f" -> {addr}" if target in pools else "")
                    + f" (stream server, line {d['line']})",
                    host=host,
                    port=port,
                    line=d["line"],
                    name=ssl_name or (host if not is_ip(host) else BACKEND_NAME),
                    route=route,
                    why_unroutable=why,
                    pool=f"{target}|{addr}|{line}" if target in pools else "",
                )
            )


def _strip_private(block: Directive) -> None:
    for d in block.get("block", []):
        d.pop("_listeners", None)
        d.pop("_taken", None)
        if "block" in d:
            _strip_private(d)


# -- audit: the same parse, as scopes, and nginx's rules ---------------------------------------
#: The trust directives a scope carries (what nginx inherits into a location; see effective()).
_TRUST = (
    "proxy_ssl_verify",
    "proxy_ssl_trusted_certificate",
    "proxy_ssl_name",
    "proxy_ssl_server_name",
    "proxy_ssl_verify_depth",
)
_DOCS = "https://nginx.org/en/docs/http/ngx_http_proxy_module.html#"


def scopes(path: Path, text: str = "") -> list[rules.Scope]:
    """Every ``proxy_pass https://...`` of *path*, with the trust directives in effect there."""
    tree = parse(path)
    http = wrap_http(tree)
    pools = {d["args"][0] for d in http["block"] if d["directive"] == "upstream" and d.get("args")}
    out: list[rules.Scope] = []

    def visit(block: Directive, stack: list[Directive]) -> None:
        for d in block.get("block", []):
            if "block" in d:
                visit(d, [*stack, d])
            if d["directive"] != "proxy_pass" or not d["args"]:
                continue
            url = d["args"][0]
            scheme, host, _, _ = split_url(resolve_var(url, stack) or url)
            if scheme != "https":
                continue
            found = {n: e for n in _TRUST if (e := effective(n, stack)) is not None}
            out.append(
                rules.Scope(
                    ProxyKind.NGINX,
                    str(path),
                    d["line"],
                    (rules.Upstream(url, host, d["line"]),),
                    {n: rules.Directive(n, tuple(e["args"]), e["line"]) for n, e in found.items()},
                    {"pools": pools},
                )
            )

    visit(http, [http])
    for stream in (d for d in tree if d["directive"] == "stream" and "block" in d):
        spools = {d["args"][0] for d in stream["block"] if d["directive"] == "upstream" and d.get("args")}
        for server in (d for d in stream["block"] if d["directive"] == "server"):
            stack = [stream, server]
            on = effective("proxy_ssl", stack)
            for d in server.get("block", []):
                if d["directive"] != "proxy_pass" or not d["args"] or not (on and on["args"] == ["on"]):
                    continue
                target = d["args"][0]
                found = {n: e for n in _TRUST if (e := effective(n, stack)) is not None}
                out.append(
                    rules.Scope(
                        ProxyKind.NGINX,
                        str(path),
                        d["line"],
                        (rules.Upstream(target, split_hostport(target, 0)[0], d["line"]),),
                        {n: rules.Directive(n, tuple(e["args"]), e["line"]) for n, e in found.items()},
                        {"pools": spools, "stream": True},
                    )
                )
    return out


def _verify_on(scope: rules.Scope) -> bool:
    verify = scope.get("proxy_ssl_verify")
    return bool(verify and verify.args == ("on",))


@rules.rule(
    "nginx-ca-without-verify",
    proxy="nginx",
    severity="high",
    scenario="nginx/ca-without-verify",
    directives=("proxy_ssl_verify", "proxy_ssl_trusted_certificate"),
    help=_DOCS + "proxy_ssl_verify",
    fix="add `proxy_ssl_verify on;`",
)
def _ca_without_verify(scope: rules.Scope) -> rules.Hit | None:
    ca, verify = scope.get("proxy_ssl_trusted_certificate"), scope.get("proxy_ssl_verify")
    if _verify_on(scope) or not ca:
        return None
    return rules.Hit(
        verify.line if verify else scope.line,
        f"proxy_ssl_trusted_certificate is set (line {ca.line}) but proxy_ssl_verify is off: the CA file is "
        "never used, any certificate is accepted",
    )


@rules.rule(
    "nginx-verify-off",
    proxy="nginx",
    severity="high",
    scenario="nginx/verify-off",
    directives=("proxy_ssl_verify", "proxy_ssl_trusted_certificate"),
    help=_DOCS + "proxy_ssl_verify",
    fix="proxy_ssl_verify on; proxy_ssl_trusted_certificate <internal root>; proxy_ssl_server_name on;",
)
def _verify_off(scope: rules.Scope) -> rules.Hit | None:
    verify = scope.get("proxy_ssl_verify")
    if _verify_on(scope) or scope.get("proxy_ssl_trusted_certificate"):
        return None
    return rules.Hit(
        verify.line if verify else scope.line,
        f"proxy_pass {scope.upstreams[0].url}: proxy_ssl_verify is off (nginx's default): any certificate is accepted",
    )


@rules.rule(
    "nginx-verify-no-ca",
    proxy="nginx",
    severity="high",
    scenario="nginx/verify-no-ca",
    directives=("proxy_ssl_verify", "proxy_ssl_trusted_certificate"),
    help=_DOCS + "proxy_ssl_trusted_certificate",
    fix="add `proxy_ssl_trusted_certificate <internal root only>;`",
)
def _verify_no_ca(scope: rules.Scope) -> rules.Hit | None:
    if not _verify_on(scope) or scope.get("proxy_ssl_trusted_certificate"):
        return None
    verify = scope.get("proxy_ssl_verify")
    return rules.Hit(
        verify.line if verify else scope.line,
        "proxy_ssl_verify on without proxy_ssl_trusted_certificate: nginx refuses to start",
    )


@rules.rule(
    "nginx-system-bundle",
    proxy="nginx",
    severity="medium",
    scenario="nginx/system-bundle",
    directives=("proxy_ssl_trusted_certificate", "proxy_ssl_verify"),
    help=_DOCS + "proxy_ssl_trusted_certificate",
    fix="trust the internal root only",
)
def _system_bundle(scope: rules.Scope) -> rules.Hit | None:
    ca = scope.get("proxy_ssl_trusted_certificate")
    if not ca or not is_system_bundle(ca.value):
        return None
    return rules.Hit(
        ca.line,
        f"{ca.value} is a system bundle: any public CA can issue a certificate for the backend",
        # Only a risk once verification is on; with it off, turning it on is the first fix.
        severity=None if _verify_on(scope) else "low",
    )


@rules.rule(
    "nginx-client-controlled-name",
    proxy="nginx",
    severity="high",
    scenario="reported/nginx-gist-ip-host-sni",
    directives=("proxy_ssl_name",),
    help=_DOCS + "proxy_ssl_name",
    fix="set proxy_ssl_name to the backend's literal name",
)
def _client_controlled_name(scope: rules.Scope) -> rules.Hit | None:
    name = scope.get("proxy_ssl_name")
    if not name or not any(v in name.value for v in ("$host", "$http_host", "$ssl_server_name", "$server_name")):
        return None
    return rules.Hit(
        name.line,
        f"proxy_ssl_name {name.value}: the client chooses the name the backend certificate is checked against "
        "(and the SNI sent)",
    )


@rules.rule(
    "nginx-ip-target-no-name",
    proxy="nginx",
    severity="medium",
    scenario="nginx/ip-target",
    directives=("proxy_pass", "proxy_ssl_name"),
    help=_DOCS + "proxy_ssl_name",
    fix="add `proxy_ssl_name <backend name>;`",
)
def _ip_target_no_name(scope: rules.Scope) -> rules.Hit | None:
    host = scope.upstreams[0].host
    if not is_ip(host) or scope.get("proxy_ssl_name"):
        return None
    return rules.Hit(
        scope.line,
        f"proxy_pass to the IP {host} without proxy_ssl_name: nginx checks the IP, so a certificate naming the "
        "backend fails (and even an IP-SAN one, on 1.22); the pressure is to turn verification off",
    )


@rules.rule(
    "nginx-upstream-block-name",
    proxy="nginx",
    severity="medium",
    scenario="reported/ingress-nginx-4928",
    directives=("proxy_pass", "upstream", "proxy_ssl_name", "proxy_ssl_verify"),
    help=_DOCS + "proxy_ssl_name",
    fix="add `proxy_ssl_name <backend name>;`",
)
def _upstream_block_name(scope: rules.Scope) -> rules.Hit | None:
    host = scope.upstreams[0].host
    if host not in scope.facts["pools"] or scope.get("proxy_ssl_name") or not _verify_on(scope):
        return None
    return rules.Hit(
        scope.line,
        f"proxy_pass https://{host} names an upstream block: nginx checks the certificate against '{host}', not "
        "the servers' names",
    )


@rules.rule(
    "nginx-verify-depth",
    proxy="nginx",
    severity="low",
    scenario="reported/nginx-1409",
    directives=("proxy_ssl_verify_depth", "proxy_ssl_verify"),
    help=_DOCS + "proxy_ssl_verify_depth",
    fix="proxy_ssl_verify_depth 2 (or the depth of your PKI)",
)
def _verify_depth(scope: rules.Scope) -> rules.Hit | None:
    depth = scope.get("proxy_ssl_verify_depth")
    if not _verify_on(scope) or (depth and not (depth.value.isdigit() and int(depth.value) < 2)):
        return None
    return rules.Hit(
        depth.line if depth else scope.line,
        f"proxy_ssl_verify_depth {depth.value if depth else 'unset (default 1)'}: a backend whose certificate "
        "chains through two intermediates is refused",
    )


@rules.rule(
    "nginx-no-sni",
    proxy="nginx",
    severity="low",
    scenario="nginx/no-sni-routed",
    directives=("proxy_ssl_server_name", "proxy_ssl_verify"),
    help=_DOCS + "proxy_ssl_server_name",
    fix="add `proxy_ssl_server_name on;`",
)
def _no_sni(scope: rules.Scope) -> rules.Hit | None:
    sni = scope.get("proxy_ssl_server_name")
    if not _verify_on(scope) or (sni and sni.args == ("on",)):
        return None
    return rules.Hit(
        sni.line if sni else scope.line,
        "proxy_ssl_server_name is off: no SNI is sent; an SNI-routed backend answers with its default certificate",
    )
