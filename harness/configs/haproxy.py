"""A user's HAProxy config, read with a small line-based parser and adapted to run in the lab.

Kept exactly: every ``server``/``default-server`` keyword that decides trust (``ssl``, ``verify``,
``ca-file`` (path excepted), ``sni``, ``verifyhost``, ``no-verifyhost`` ...), ``ssl-server-verify``
and the ``ssl-default-server-*`` globals, ``use_backend``/``default_backend`` routing and ACLs.
Changed: ``ca-file`` points at the lab's internal root (or system bundle), ``bind`` lines move to
``127.0.0.1:<lab port>`` (``ssl`` kept with a lab-minted ``crt``), ``check`` is dropped from server
lines (health checks would hit the seat between cells and mark servers down depending on the
previous identity), and process settings (``chroot``, ``user``, ``daemon``, ``stats socket``,
``pidfile``, logs) are the lab's own. Dropped as defence in depth (every proxy runs in
:mod:`harness.runtimes.sandbox` anyway, where no host file or program exists): every Lua loader,
``external-check``, ``program`` sections, environment setters, and every line that reads a host
file (``errorfile``, ``-f``/``-M`` pattern files, ``map*()`` converters, ``file``/``lf-file``
returns, SPOE and OpenTracing ``filter ... config FILE``). The lab's ``log-format`` records ``ssl_bc_err_str``: the
evidence for a block.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    read_config,
    split_hostport,
    trust_file,
)
from harness.configs.matchers import Built, Term, unshadowed_request
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

SECTIONS = (
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "program",
    "mailers",
    "cache",
    "ring",
    "http-errors",
)
_GLOBAL_DROP = (
    "chroot",
    "user",
    "group",
    "uid",
    "gid",
    "daemon",
    "pidfile",
    "stats",
    "log",
    "nbproc",
    "master-worker",
    "ca-base",
    "crt-base",
    "node",
    "description",
    "lua-load",
    "lua-load-per-thread",
    "lua-prepend-path",
    "external-check",
    "insecure-fork-wanted",
    "insecure-setuid-wanted",
    "setenv",
    "presetenv",
    "resetenv",
    "unsetenv",
    "ssl-engine",
    "ssl-dh-param-file",
    "51degrees-data-file",
    "wurfl-data-file",
    "deviceatlas-json-file",
    "h1-case-adjust-file",
    "server-state-file",
    "server-state-base",
)
#: Anywhere: directives that run a program or read a host file into the config, its errors or
#: its responses (``errorfile``, ``-f FILE`` patterns, maps, SPOE/OpenTracing configs).
_ANY_DROP = ("external-check", "errorfile", "errorfiles", "errorloc", "errorloc302", "errorloc303")
_FILE_FUNCS = re.compile(r"\b(?:map(?:_\w+)?|set-map|del-map|add-acl|del-acl)\(")
_LOG_FORMAT = (
    'log-format "trustlab req=\\"%r\\" status=%ST term=%ts ssl_bc_err=%[ssl_bc_err] '
    'ssl_bc_err_str=\\"%[ssl_bc_err_str]\\""'
)
#: Server keywords taking one argument (so their value is never read as a keyword).
_ARG_KEYWORDS = {
    "ca-file",
    "crl-file",
    "crt",
    "sni",
    "verifyhost",
    "verify",
    "alpn",
    "npn",
    "ciphers",
    "ciphersuites",
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "maxconn",
    "minconn",
    "maxqueue",
    "port",
    "addr",
    "id",
    "cookie",
    "slowstart",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "error-limit",
    "observe",
    "init-addr",
    "resolvers",
    "resolve-prefer",
    "resolve-net",
    "resolve-opts",
    "source",
    "ssl-min-ver",
    "ssl-max-ver",
    "pool-max-conn",
    "pool-low-conn",
    "pool-purge-delay",
    "max-reuse",
    "proto",
    "agent-port",
    "agent-inter",
    "agent-addr",
    "agent-send",
    "check-sni",
    "check-alpn",
    "proxy-v2-options",
    "redir",
    "track",
    "usesrc",
    "namespace",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "tcp-ut",
    "socks4",
    "log-proto",
    "ws",
    "shard",
    "set-proxy-v2-tlv-fmt",
    "hash-key",
    "sni-auto",
}


@dataclass
class Section:
    kind: str
    name: str
    line: int
    body: list[tuple[int, str, list[str]]] = field(default_factory=list)


def words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True, posix=True)
    except ValueError:
        return text.split("#", 1)[0].split()


def parse(text: str) -> list[Section]:
    """Sections with their (line number, raw line, words), comments dropped."""
    sections: list[Section] = [Section("_top", "", 0)]
    for no, raw in enumerate(text.splitlines(), 1):
        w = words(raw)
        if not w:
            continue
        if (
            w[0] in SECTIONS
            and not raw[:1].isspace()
            or (w[0] in SECTIONS and w[0] in ("global", "defaults", "frontend", "backend", "listen"))
        ):
            sections.append(Section(w[0], w[1] if len(w) > 1 else "", no))
            continue
        sections[-1].body.append((no, raw, w))
    return sections


def server_options(w: list[str]) -> dict[str, str | bool]:
    """The keywords of a ``server``/``default-server`` line (after name and address)."""
    start = 3 if w[0] == "server" else 1
    out: dict[str, str | bool] = {}
    i = start
    while i < len(w):
        key = w[i]
        if key in _ARG_KEYWORDS and i + 1 < len(w):
            out[key] = w[i + 1]
            i += 2
        else:
            out[key] = True
            i += 1
    return out


@dataclass(frozen=True)
class Server:
    """One ``server`` line with the options in effect for it (what ``check`` and ``audit`` read).

    HAProxy applies a ``default-server`` line to the servers *after* it only, and a new
    ``defaults`` section starts over (its ``default-server`` lines replace the previous ones):
    measured with HAProxy 2.6.12 (``haproxy -c``: a ``default-server verify none`` below the
    server line, or in an earlier ``defaults`` section, leaves the server verifying).
    """

    section: Section
    line: int
    words: list[str]
    #: The server line's own keywords.
    own: dict[str, str | bool]
    #: The defaults section's ``default-server`` lines, then its own section's above it, then its own.
    options: dict[str, str | bool]

    @property
    def ssl(self) -> bool:
        """TLS to this server: ``ssl`` in effect and no ``no-ssl`` on the line itself."""
        return self.options.get("ssl") is True and "no-ssl" not in self.own


def servers(sections: list[Section]) -> list[Server]:
    """Every ``server`` line of *sections* with its effective options (see :class:`Server`)."""
    defaults: dict[str, str | bool] = {}
    out = []
    for sec in sections:
        if sec.kind == "defaults":
            defaults = {}
        local: dict[str, str | bool] = {}
        for no, _, w in sec.body:
            if w[0] == "default-server":
                (defaults if sec.kind == "defaults" else local).update(server_options(w))
            elif w[0] == "server":
                own = server_options(w)
                out.append(Server(sec, no, w, own, {**defaults, **local, **own}))
    return out


def _acl_route(
    cond: list[str], acls: dict[str, list[list[str]]], earlier: Sequence[tuple[str, list[str]]] = ()
) -> Built | str:
    """The request a ``use_backend ... if|unless COND`` condition matches (HAProxy's grammar:
    terms side by side are ANDed, ``or``/``||`` separate alternatives, ``!`` negates; a named ACL
    defined on several lines, or with several values, matches any of them) and no *earlier* rule
    (backend, condition) takes first, or why none can be built."""
    alternatives = _acl_alternatives(cond, acls)
    if isinstance(alternatives, str):
        return alternatives
    taken = [(f"use_backend {be} {' '.join(c)}", _acl_alternatives(c, acls)) for be, c in earlier]
    return unshadowed_request(alternatives, taken, default_host=PUBLIC_HOST, none="no condition")


def _acl_alternatives(cond: list[str], acls: dict[str, list[list[str]]]) -> list[list[Term]] | str:
    """*cond* as alternatives of terms (see :func:`_acl_route`), or why it cannot be read."""
    if not cond:
        return [[]]
    words = list(cond)
    unless = words[0] == "unless"
    if words[0] in ("if", "unless"):
        words = words[1:]
    # Tokens: a named ACL, an anonymous `{ ... }` one, `!`, `or`.
    groups: list[list[tuple[bool, list[list[str]], str]]] = [[]]
    i, negate = 0, False
    while i < len(words):
        w = words[i]
        if w in ("or", "||"):
            groups.append([])
        elif w == "!":
            negate = not negate
            i += 1
            continue
        elif w == "{":
            j = words.index("}", i) if "}" in words[i:] else len(words)
            groups[-1].append((negate, [words[i + 1 : j]], "{ " + " ".join(words[i + 1 : j]) + " }"))
            i = j
        else:
            neg = negate
            if w.startswith("!"):
                neg, w = not neg, w[1:]
            if w not in acls:
                return f"acl {w} is not defined in this frontend"
            groups[-1].append((neg, acls[w], w))
        negate = False
        i += 1
    if unless:
        if len(groups) != 1 or any(len(g) != 1 for g in groups):
            return "an `unless` over several ACLs is too complex to build a request for"
        neg, defs, name = groups[0][0]
        groups = [[(not neg, defs, name)]]
    alternatives: list[list[Term]] = []
    for group in groups:
        conj: list[list[Term]] = [[]]
        for neg, defs, name in group:
            options: list[Term] = []
            for expr in defs:
                got = _acl_terms(expr, name)
                if isinstance(got, str):
                    options.append(Term("unknown", "eq", text=got))
                    continue
                options += got
            if neg:
                conj = [
                    c + [Term(t.kind, t.op, t.value, t.key, t.icase, True, "!" + t.text) for t in options] for c in conj
                ]
            else:
                conj = [c + [t] for c in conj for t in options][:64]
        alternatives += conj
    return alternatives


#: ``-m`` match methods and the suffixes of the fetch names (``path_beg``) that stand for them.
_HAP_OPS = {
    "str": "eq",
    "beg": "beg",
    "end": "end",
    "sub": "sub",
    "reg": "reg",
    "dom": "dom",
    "dir": "dir",
    "found": "found",
}


def _acl_terms(expr: list[str], name: str) -> list[Term] | str:
    """The alternatives (one per value) of one ACL expression ``fetch [flags] values``."""
    if not expr:
        return f"acl {name}: empty"
    fetch, rest = expr[0], expr[1:]
    icase, op, values, i = False, "", [], 0
    while i < len(rest):
        v = rest[i]
        if v == "-i":
            icase = True
        elif v == "-m" and i + 1 < len(rest):
            op = _HAP_OPS.get(rest[i + 1], "")
            if not op:
                return f"acl {name}: -m {rest[i + 1]}: a match method the lab cannot build a request for"
            i += 1
        elif v == "--":
            values += rest[i + 1 :]
            break
        elif v.startswith("-") and len(v) == 2:
            pass
        else:
            values.append(v)
        i += 1
    m = re.fullmatch(
        r"(req\.)?(path|url|hdr|fhdr|method|url_param|urlp|ssl_fc_sni|req\.ssl_sni|src)"
        r"(?:_(beg|end|sub|reg|dom|dir|len|cnt|ip|val))?(?:\(([^),]*)[^)]*\))?",
        fetch,
    )
    if not m:
        return f"acl {name}: {fetch}: a fetch the lab cannot build a request for"
    base, suffix, arg = m.group(2), m.group(3), (m.group(4) or "").strip()
    if suffix in ("len", "cnt", "ip", "val"):
        return f"acl {name}: {fetch}: a fetch the lab cannot build a request for"
    op = op or _HAP_OPS.get(suffix or "", "eq")
    if base in ("path", "url"):
        kind, key = "path", ""
    elif base in ("hdr", "fhdr"):
        if not arg:
            return f"acl {name}: {fetch} without a header name"
        kind, key = ("host", "") if arg.lower() == "host" else ("header", arg)
    elif base == "method":
        kind, key = "method", ""
    elif base in ("url_param", "urlp"):
        if not arg:
            return f"acl {name}: {fetch} without a parameter name"
        kind, key = "query", arg
        if not values:
            op = "found"
    elif base in ("ssl_fc_sni", "req.ssl_sni"):
        kind, key = "host", ""
    else:
        kind, key = "client", ""
    if op == "found":
        return [Term(kind, "found", "", key, icase, text=f"{name} ({' '.join(expr)})")]
    if not values:
        return f"acl {name}: {fetch} without a value"
    return [Term(kind, op, v, key, icase, text=f"{name} ({fetch} {v})") for v in values]


@dataclass
class _Front:
    """A frontend (or listen section) as the lab probes through it: the listener it reaches (its
    first TLS one, else its first), its ACLs and use_backend rules, its default backend."""

    listener: str = ""
    tls: bool = False
    acls: dict[str, list[list[str]]] = field(default_factory=dict)
    rules: list[tuple[str, list[str]]] = field(default_factory=list)
    default_be: str | None = None
    #: Its lab listeners by original port (TLS or not).
    binds: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Run(Run):
    """One :func:`adapt` of an HAProxy config: what it writes and finds."""

    #: Each server line's effective settings (its defaults applied), by line.
    effective: dict[int, Server] = field(default_factory=dict)
    out: list[str] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)
    listeners: dict[str, int] = field(default_factory=dict)


def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The config at *path* made runnable in the lab (see the module docstring)."""
    sections = parse(read_config(path))
    if not any(s.kind in ("frontend", "backend", "listen") for s in sections):
        raise ConfigError(f"{path}: no frontend, backend or listen section: is this an HAProxy config?")
    effective = {s.line: s for s in servers(sections)}
    run = _Run(path, lab, ports, focus, effective=effective, out=[f"# trustlab check: adapted from {path}"])
    if not any(s.kind == "global" for s in sections):
        run.out += ["global", "    log stdout format raw local0 info"]
    fronts = [front for sec in sections if (front := _section(run, sec)) is not None]
    for u in run.upstreams:
        _route(u, fronts)
    run.notes.append(
        Note.whole(
            "retries 0 in every backend: a refused handshake is retried after 1 s, which only delays the verdict"
        )
    )
    run.notes.append(
        Note.whole("logs go to stdout with the lab's log-format (ssl_bc_err_str is the evidence of a block)")
    )
    return Adapted(
        text="\n".join(run.out) + "\n", notes=ordered(run.notes), upstreams=run.upstreams, listeners=run.listeners
    )


def _section(run: _Run, sec: Section) -> _Front | None:
    """*sec* written for the lab (the lab's logging, no retries); a frontend's or listen section's
    routing, or None."""
    if sec.kind == "_top":
        return None
    if sec.kind == "program":
        run.notes.append(Note("", sec.line, f"program {sec.name} dropped (runs a program)"))
        return None
    run.out.append(f"{sec.kind} {sec.name}".rstrip())
    if sec.kind == "global":
        run.out.append("    log stdout format raw local0 info")
    if sec.kind in ("defaults", "frontend", "listen"):
        run.out += ["    log global", f"    {_LOG_FORMAT}"]
    if sec.kind in ("defaults", "backend", "listen"):
        # A refused handshake is retried after a fixed 1 s turn-around (3 retries by default);
        # each retry re-verifies, so retries change how long a refusal takes, never its verdict.
        run.out.append("    retries 0")
    front = _Front()
    for no, raw, w in sec.body:
        if not _dropped(run, sec, no, w):
            _body_line(run, sec, front, no, raw, w)
    if sec.kind == "frontend":
        return front
    if sec.kind == "listen":
        front.default_be = sec.name
        return front
    return None


def _dropped(run: _Run, sec: Section, no: int, w: list[str]) -> bool:
    """True when line *no* (words *w*) of *sec* is not written as it is (said, when it matters)."""
    key = w[0]
    if sec.kind == "global" and key in _GLOBAL_DROP:
        if key != "log":
            run.notes.append(Note("", no, f"{' '.join(w)} dropped (host process setting)"))
        return True
    if _reads_host(key, w):
        if key == "acl" and len(w) > 1:
            # Rules that name the ACL must still parse: it becomes one that never matches.
            run.notes.append(Note("", no, f"{' '.join(w)[:80]} -> acl {w[1]} always_false (reads a host file)"))
            run.out.append(f"    acl {_quote(w[1])} always_false")
            return True
        run.notes.append(Note("", no, f"{' '.join(w)[:80]} dropped (runs a program or reads a host file)"))
        return True
    if key == "retries":
        run.notes.append(Note("", no, f"retries {' '.join(w[1:])} -> 0 (retries only delay a refusal)"))
        return True
    if key == "stats" and w[1:2] == ["socket"]:
        run.notes.append(Note("", no, "stats socket dropped (host path)"))
        return True
    return key in ("log", "log-format", "log-format-sd", "error-log-format") or (
        key == "option" and len(w) > 1 and w[1] in ("httplog", "tcplog", "logasap")
    )


def _body_line(run: _Run, sec: Section, front: _Front, no: int, raw: str, w: list[str]) -> None:
    """A kept line of *sec*: a bind moved to the lab, a server's TLS files the lab's, routing noted."""
    key = w[0]
    if key == "bind":
        _bind(run, front, no, w)
        return
    if key == "acl" and len(w) > 2:
        front.acls.setdefault(w[1], []).append(w[2:])
    if key == "use_backend" and len(w) > 1:
        front.rules.append((w[1], w[2:]))
    if key == "default_backend" and len(w) > 1:
        front.default_be = w[1]
    if key in ("server", "default-server"):
        line_out = _server_line(w, no, run.lab, run.notes, sec, run.focus, run.path)
        if key == "server":
            _record_server(run.effective[no], run.upstreams)
        run.out.append("    " + line_out)
        return
    run.out.append(raw if raw[:1].isspace() else "    " + raw.strip())


def _bind(run: _Run, front: _Front, no: int, w: list[str]) -> None:
    """A ``bind`` moved to its lab port (TLS with the lab's certificate); one per original port."""
    port = w[1].rsplit(":", 1)[-1] if len(w) > 1 else "80"
    port = port if port.isdigit() else "80"
    lab_port = run.ports(port)
    if port in front.binds:
        return
    run.listeners[port] = lab_port
    is_tls = "ssl" in w
    front.binds[port] = is_tls
    # Probe through the TLS listener when there is one: a plain one often only redirects.
    if not front.listener or (is_tls and not front.tls):
        front.listener, front.tls = port, is_tls
    new = f"bind 127.0.0.1:{lab_port}" + (f" ssl crt {run.lab.combined}" if is_tls else "")
    run.notes.append(Note("", no, f"{' '.join(w)} -> {new}"))
    run.out.append("    " + new)


def _route(u: Upstream, fronts: list[_Front]) -> None:
    """Which frontend request reaches *u*'s backend (``u.route``), or why none does."""
    be = u.pool.split("|", 1)[0]
    for front in (f for f in fronts if f.listener):
        rules = front.rules
        for i, (target, cond) in enumerate(rules):
            if target != be:
                continue
            built = _acl_route(cond, front.acls, [r for r in rules[:i] if r[0] != be])
            if not isinstance(built, str):
                u.route = Route(
                    front.listener, front.tls, built.host or PUBLIC_HOST, built.path, built.method, built.headers
                )
                break
            u.why_unroutable = f"use_backend {be} {' '.join(cond)}: {built}"
        if u.route is None and front.default_be == be:
            # The request no use_backend rule takes (the lab's default one when none does).
            built = _acl_route([], front.acls, [r for r in rules if r[0] != be])
            if not isinstance(built, str):
                u.route = Route(front.listener, front.tls, PUBLIC_HOST, built.path, built.method, built.headers)
            else:
                u.why_unroutable = f"default_backend {be}: {built}"
        if u.route is not None:
            return
    if not u.why_unroutable:
        u.why_unroutable = f"no frontend sends requests to backend {be}"


def _reads_host(key: str, w: list[str]) -> bool:
    """True for a line that runs a program or reads a host file (see :data:`_ANY_DROP`)."""
    if "$" in key or key in _ANY_DROP or (key == "option" and w[1:2] == ["external-check"]):
        return True  # ("$": a keyword from an environment variable is unknowable here)
    if key == "filter" and "config" in w[1:]:
        return True  # spoe / opentracing: their own config file
    if "-f" in w[1:] or "-M" in w[1:] or any(x in ("file", "lf-file") for x in w[1:]):
        return key in (
            "acl",
            "http-request",
            "http-response",
            "http-after-response",
            "tcp-request",
            "tcp-response",
            "use_backend",
            "use-server",
            "redirect",
            "monitor",
        )
    return bool(_FILE_FUNCS.search(" ".join(w[1:])))


def _server_line(
    w: list[str], no: int, lab: LabPaths, notes: list[Note], sec: Section, focus: str | None, config: Path
) -> str:
    start = 3 if w[0] == "server" else 1
    new = list(w[:start])
    i = start
    while i < len(w):
        k = w[i]
        if k in ("check", "check-ssl") or (k == "resolvers" and i + 1 < len(w)):
            if k == "check":
                notes.append(
                    Note(
                        "",
                        no,
                        f"`check` dropped from {w[0]} {w[1] if len(w) > 1 else ''} (health "
                        "checks would reach the seat between cells)",
                    )
                )
            i += 2 if k == "resolvers" else 1
            continue
        if k == "ca-file" and i + 1 < len(w):
            new += [k, trust_file(w[i + 1], lab, notes)]
            i += 2
            continue
        if k == "crt" and i + 1 < len(w):
            notes.append(Note("", no, f"crt {w[i + 1]} replaced by a lab-minted client certificate"))
            new += [k, str(lab.combined)]
            i += 2
            continue
        if k == "crl-file" and i + 1 < len(w):
            crl = crl_file(w[i + 1], config, lab, notes)
            new += [k, crl] if crl else []
            i += 2
            continue
        if k in _ARG_KEYWORDS and i + 1 < len(w):
            new += [k, w[i + 1]]
            i += 2
            continue
        new.append(k)
        i += 1
    if w[0] == "server" and focus and focus.startswith(sec.name + "|") and focus != f"{sec.name}|{w[1]}|{no}":
        new.append("disabled")
        notes.append(Note("", no, f"server {w[1]} disabled while another server of {sec.name} is probed"))
    return " ".join(_quote(x) for x in new)


def _quote(word: str) -> str:
    return word if re.fullmatch(r"[^\s\"'#\\]+", word) else "'" + word.replace("'", "'\\''") + "'"


def _record_server(server: Server, upstreams: list[Upstream]) -> None:
    w, no, opts, sec = server.words, server.line, server.options, server.section
    if len(w) < 3 or not server.ssl:
        return
    host, port = split_hostport(w[2], 443)
    if host.startswith(("unix@", "abns@", "/", "ipv4@", "ipv6@")):
        host = host.split("@", 1)[-1]
    # The name the config explicitly expects, else the target's host name, else the lab's name.
    vh = opts.get("verifyhost")
    sni = opts.get("sni")
    m = re.fullmatch(r"str\(([^)]+)\)", sni) if isinstance(sni, str) else None
    if isinstance(vh, str):
        name = vh
    elif m:
        name = m.group(1)
    else:
        name = host if not is_ip(host) else BACKEND_NAME
    upstreams.append(
        Upstream(
            label=f"backend {sec.name} server {w[1]} {w[2]} (line {no})",
            host=host,
            port=port,
            line=no,
            name=name,
            pool=f"{sec.name}|{w[1]}|{no}",
        )
    )


# -- audit: the same parse, as scopes, and HAProxy's rules -------------------------------------
_DOCS = "https://docs.haproxy.org/2.6/configuration.html#5.2-"


def scopes(path: Path, text: str) -> list[rules.Scope]:
    """Every ``server ... ssl`` line, with the options in effect for it (see :class:`Server`) and
    the global ``ssl-server-verify``."""
    sections = parse(text)
    glob: rules.Directive | None = None
    out = []
    for sec in sections:  # ssl-server-verify: the last one of the global section(s)
        for no, _, w in sec.body:
            if sec.kind == "global" and w[0] == "ssl-server-verify" and len(w) > 1:
                glob = rules.Directive("ssl-server-verify", (w[1],), no)
    for server in servers(sections):
        w = server.words
        if len(w) < 3 or not server.ssl:
            continue
        found = {k: rules.Directive(k, () if v is True else (str(v),), server.line) for k, v in server.options.items()}
        if glob:
            found["ssl-server-verify"] = glob
        host = split_hostport(w[2], 443)[0]
        out.append(
            rules.Scope(
                ProxyKind.HAPROXY,
                str(path),
                server.line,
                (rules.Upstream(w[2], host, server.line),),
                found,
                {"server": w[1]},
            )
        )
    return out


def _verify(scope: rules.Scope) -> str:
    """``verify`` in effect: the server's (or its default-server's), else ssl-server-verify, else required."""
    own, glob = scope.get("verify"), scope.get("ssl-server-verify")
    return own.value if own else glob.value if glob else "required"


@rules.rule(
    "haproxy-verify-none",
    proxy="haproxy",
    severity="high",
    scenario="haproxy/verify-none",
    directives=("verify", "ssl-server-verify"),
    help=_DOCS + "verify",
    fix="verify required ca-file <internal root> verifyhost <backend name>",
)
def _verify_none(scope: rules.Scope) -> rules.Hit | None:
    if _verify(scope) != "none":
        return None
    glob = scope.get("ssl-server-verify")
    line = scope.line if scope.get("verify") else glob.line if glob else 0
    return rules.Hit(line, f"server {scope.facts['server']}: verify none: any certificate is accepted")


@rules.rule(
    "haproxy-no-ca-file",
    proxy="haproxy",
    severity="medium",
    scenario="haproxy/defaults",
    directives=("ca-file", "verify"),
    help=_DOCS + "ca-file",
    fix="add ca-file <internal root>",
)
def _no_ca_file(scope: rules.Scope) -> rules.Hit | None:
    if _verify(scope) == "none" or scope.get("ca-file"):
        return None
    return rules.Hit(
        scope.line,
        f"server {scope.facts['server']}: ssl with verification required but no ca-file: HAProxy refuses to "
        "start (and suggests `verify none`)",
    )


@rules.rule(
    "haproxy-system-bundle",
    proxy="haproxy",
    severity="medium",
    scenario="haproxy/system-bundle",
    directives=("ca-file", "verify"),
    help=_DOCS + "ca-file",
    fix="trust the internal root only",
)
def _system_bundle(scope: rules.Scope) -> rules.Hit | None:
    ca = scope.get("ca-file")
    if _verify(scope) == "none" or not ca or not is_system_bundle(ca.value):
        return None
    return rules.Hit(
        scope.line,
        f"server {scope.facts['server']}: ca-file {ca.value} is a system bundle: any public CA can issue a "
        "certificate for the backend",
    )


@rules.rule(
    "haproxy-no-name-check",
    proxy="haproxy",
    severity="high",
    scenario="haproxy/ca-only",
    directives=("verifyhost", "sni", "verify"),
    help=_DOCS + "verifyhost",
    fix="add verifyhost <backend name> (and sni str(<backend name>))",
)
def _no_name_check(scope: rules.Scope) -> rules.Hit | None:
    if _verify(scope) == "none" or scope.get("verifyhost") or _sni(scope) is not None:
        return None
    return rules.Hit(
        scope.line,
        f"server {scope.facts['server']}: neither verifyhost nor sni: the certificate's name is never checked, "
        "so any certificate from the trusted CA (a sibling service's) is accepted",
    )


def _sni(scope: rules.Scope) -> str | None:
    """The ``sni`` expression, when one is given (a bare ``sni`` keyword is not one)."""
    sni = scope.get("sni")
    return sni.value if sni and sni.args else None


@rules.rule(
    "haproxy-client-controlled-sni",
    proxy="haproxy",
    severity="high",
    scenario="haproxy/sni-from-host",
    directives=("sni", "verifyhost", "verify"),
    help=_DOCS + "sni",
    fix="add verifyhost <backend name>",
)
def _client_controlled_sni(scope: rules.Scope) -> rules.Hit | None:
    sni = _sni(scope)
    if _verify(scope) == "none" or scope.get("verifyhost") or sni is None or sni.startswith("str("):
        return None
    return rules.Hit(
        scope.line,
        f"server {scope.facts['server']}: sni {sni} without verifyhost: the name checked is the one the request "
        "carries",
    )


@rules.rule(
    "haproxy-no-verifyhost",
    proxy="haproxy",
    severity="high",
    scenario="haproxy/no-verifyhost",
    directives=("no-verifyhost", "verify"),
    help=_DOCS + "no-verifyhost",
    fix="remove no-verifyhost",
)
def _no_verifyhost(scope: rules.Scope) -> rules.Hit | None:
    if _verify(scope) == "none" or not scope.get("no-verifyhost"):
        return None
    return rules.Hit(scope.line, f"server {scope.facts['server']}: no-verifyhost disables the name check")
