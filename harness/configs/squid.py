"""A user's Squid config (``squid.conf`` of a reverse proxy: ``http_port ... accel`` and
``cache_peer ... originserver tls``), read once by a line parser that both ``trustlab check``
(:func:`adapt`) and ``trustlab audit`` (:func:`scopes` and the rules below) use.

By allow-list (issue 26): only the directives in :data:`KEEP` are kept, each one on its terms;
every other line is dropped with a note naming it. What decides backend trust is kept exactly:
each ``cache_peer``'s TLS options (``tls``/``ssl``, ``tls-flags``/``sslflags``, ``tls-domain``/
``ssldomain``, ``tls-default-ca``, ``tls-min-version``, ``tls-options``; :data:`PEER_KEEP`), the
global ``tls_outgoing_options`` and ``sslproxy_cert_error``, and the routing (``cache_peer_access``,
``cache_peer_domain``, ``never_direct``/``always_direct``, ``http_access``, ``acl``). Changed:
``tls-cafile``/``sslcafile`` (and ``cafile=``) stand for the lab's internal root (or its system
bundle for an OS bundle path), ``tls-capath`` for the lab's hashed directory, client certificates
are lab-minted, CRL files the lab's; ``http_port``/``https_port`` move to ``127.0.0.1:<lab port>``;
``cache deny all`` comes first (a response cached for one identity would answer the next); every
peer gets the lab's :data:`~harness.proxies.squid.PEER_PLUMBING` (no peer marked dead by refused
impostors); health probes (``monitorurl=``, ``standby=``) are dropped (they would reach the seat
between cells); logs, pid and core files are the lab's. Dropped as defence in depth (every proxy
runs in :mod:`harness.runtimes.sandbox` anyway): every helper program (``auth_param``,
``external_acl_type``, ``url_rewrite_program``, ``*_program``, ``logfile_daemon``), ``include``,
every quoted-file or ``parameters()`` argument (an ACL that reads a file becomes one that never
matches, so the rules naming it still parse), other listeners (ICP, HTCP, SNMP) and anything else
not on the list.

Squid's defaults that matter (squid.conf.documented, 5.7, measured in ``scenarios/squid/``): a
TLS peer is verified against ``tls-cafile`` *and* the system store (``tls-default-ca`` is on for
peers); the name checked is ``tls-domain``, else the peer's host (never ``name=`` nor
``forceddomain=``, which only label the peer and rewrite the Host sent to it); Squid's own
matcher accepts ``*.internal`` for ``backend-api.internal`` and no IP SAN;
``DONT_VERIFY_DOMAIN`` is parsed for peers and ignored.
"""

from __future__ import annotations

import re
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
    trust_file,
)
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

#: Directives kept (routing, access, headers, the trust settings); anything else is dropped.
KEEP = frozenset(
    {
        "http_port",
        "https_port",
        "cache_peer",
        "cache_peer_access",
        "cache_peer_domain",
        "never_direct",
        "always_direct",
        "prefer_direct",
        "nonhierarchical_direct",
        "acl",
        "http_access",
        "http_reply_access",
        "request_header_access",
        "reply_header_access",
        "request_header_add",
        "reply_header_add",
        "request_header_replace",
        "header_replace",
        "tls_outgoing_options",
        "sslproxy_cert_error",
        "sslproxy_flags",
        "sslproxy_cafile",
        "sslproxy_capath",
        "forwarded_for",
        "via",
        "visible_hostname",
        "url_rewrite_host_header",
        "httpd_suppress_version_string",
        "host_verify_strict",
        "client_dst_passthru",
        "connect_timeout",
        "peer_connect_timeout",
        "forward_timeout",
        "read_timeout",
        "request_timeout",
        "dns_v4_first",
    }
)
#: Lab plumbing: the user's own lines for these are dropped silently (the lab writes its own).
PLUMBING = frozenset(
    {
        "pid_filename",
        "coredump_dir",
        "cache_log",
        "access_log",
        "debug_options",
        "logformat",
        "cache_store_log",
        "netdb_filename",
        "pinger_enable",
        "shutdown_lifetime",
        "cache",
    }
)
#: ``cache_peer`` options kept (after host, type, http-port, icp-port); the rest are dropped.
PEER_KEEP = frozenset(
    {
        "tls",
        "ssl",
        "tls-default-ca",
        "tls-flags",
        "sslflags",
        "tls-domain",
        "ssldomain",
        "tls-min-version",
        "tls-options",
        "ssloptions",
        "sslversion",
        "tls-cipher",
        "sslcipher",
        "originserver",
        "name",
        "forceddomain",
        "no-query",
        "no-digest",
        "no-netdb-exchange",
        "proxy-only",
        "round-robin",
        "weighted-round-robin",
        "default",
        "weight",
        "login",
        "front-end-https",
        "connect-timeout",
        "max-conn",
        "no-tproxy",
        "allow-miss",
        "carp",
        "userhash",
        "sourcehash",
        "no-delay",
        "parent",
        "sibling",
        "multicast",
    }
)
#: ``cache_peer`` options naming a file, and what each stands for in the lab.
_PEER_FILES = {
    "tls-cafile": "ca",
    "sslcafile": "ca",
    "tls-capath": "ca_dir",
    "sslcapath": "ca_dir",
    "tls-cert": "cert",
    "sslcert": "cert",
    "tls-key": "key",
    "sslkey": "key",
    "tls-crlfile": "crl",
    "sslcrlfile": "crl",
}
#: The lab's own per-peer options (the user's are replaced): see harness.proxies.squid.
_PEER_LAB = ("connect-fail-limit", "tls-options")
#: ``http_port``/``https_port`` options kept; the rest (intercept, ssl-bump, certificates ...) dropped.
_PORT_KEEP = frozenset({"accel", "defaultsite", "vhost", "no-vhost", "protocol", "ignore-cc", "allow-direct", "name"})
#: ACL types that need a helper or an authentication scheme the adapter drops.
_HELPER_ACLS = frozenset({"external", "proxy_auth", "proxy_auth_regex", "ext_user", "ext_user_regex"})
_DOCS = "https://www.squid-cache.org/Versions/v5/cfgman/"


@dataclass
class Line:
    """One logical squid.conf line (continuations joined): its number, words and raw text."""

    no: int
    words: list[str]

    @property
    def key(self) -> str:
        return self.words[0]


@dataclass
class Peer:
    """One ``cache_peer`` line: host, port, its options (key -> value, ``True`` for a flag)."""

    line: int
    host: str
    port: int
    name: str
    options: dict[str, str | bool] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return "tls" in self.options or "ssl" in self.options

    def get(self, *keys: str) -> str | bool | None:
        for k in keys:
            if k in self.options:
                return self.options[k]
        return None

    @property
    def domain(self) -> str | None:
        d = self.get("tls-domain", "ssldomain")
        return d if isinstance(d, str) and d else None

    @property
    def flags(self) -> set[str]:
        f = self.get("tls-flags", "sslflags")
        return set(re.split(r"[,:|]", f)) if isinstance(f, str) else set()


def parse(text: str) -> list[Line]:
    """The logical lines of *text* (``#`` comments and blanks dropped, ``\\`` continuations joined)."""
    out: list[Line] = []
    pending: list[str] = []
    start = 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = no
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        words = " ".join(pending).split()
        pending = []
        if words:
            out.append(Line(start, words))
    if pending and " ".join(pending).split():
        out.append(Line(start, " ".join(pending).split()))
    return out


def peers(lines: list[Line]) -> list[Peer]:
    """Every ``cache_peer`` line as a :class:`Peer`."""
    out = []
    for ln in lines:
        if ln.key != "cache_peer" or len(ln.words) < 4:
            continue
        w = ln.words
        try:
            port = int(w[3])
        except ValueError:
            raise ConfigError(f"line {ln.no}: cache_peer {w[1]}: http-port {w[3]!r} is not a number") from None
        opts: dict[str, str | bool] = {}
        for word in w[5:]:
            k, eq, v = word.partition("=")
            opts[k] = v if eq else True
        host = w[1].strip("[]")
        name = opts.get("name")
        out.append(Peer(ln.no, host, port, name if isinstance(name, str) else w[1], opts))
    return out


def _reads_file(words: list[str]) -> bool:
    """``parameters("/file")`` anywhere, or a quoted ACL value (``acl x dstdomain "/etc/squid/x"``:
    a file of values, squid.conf.documented): Squid reads a host file. A quoted string elsewhere
    (``request_header_add X-A "value"``) is a string."""
    if any("parameters(" in x for x in words[1:]):
        return True
    return words[0] == "acl" and any(x.startswith('"') for x in words[3:])


@dataclass
class _Run(Run):
    """One :func:`adapt` of a squid.conf: what it leaves out, what it finds."""

    #: ACLs that read a host file or need a dropped helper (name -> the line that first defines it).
    never: dict[str, int] = field(default_factory=dict)
    #: The peers left out while another one is probed, and each peer's name by its line.
    others: set[str] = field(default_factory=set)
    peer_at: dict[int, str] = field(default_factory=dict)
    listeners: dict[str, int] = field(default_factory=dict)
    accel: list[tuple[str, bool, str | None]] = field(default_factory=list)  # (original port, tls, defaultsite)


def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The squid.conf at *path* made runnable in the lab (see the module docstring)."""
    from harness.proxies.squid import PEER_PLUMBING

    lines = parse(read_config(path))
    all_peers = peers(lines)
    if not any(ln.key in ("cache_peer", "http_port", "https_port") for ln in lines):
        raise ConfigError(f"{path}: no http_port or cache_peer line: is this a Squid config?")
    never: dict[str, int] = {}
    for ln in lines:
        if ln.key == "acl" and len(ln.words) > 2 and (_reads_file(ln.words) or ln.words[2] in _HELPER_ACLS):
            never.setdefault(ln.words[1], ln.no)
    # While one peer is probed the others are left out, with the rules that name them: a peer
    # that is only denied requests still gets Squid's TCP probe at start, which reached the seat
    # during the first cell (seen in 2 of 12 runs of tests/configs/squid/two-sites.conf).
    others = {p.name for p in all_peers if focus and f"{p.name}|{p.line}" != focus} if len(all_peers) > 1 else set()
    run = _Run(path, lab, ports, focus, never=never, others=others, peer_at={p.line: p.name for p in all_peers})
    out = [
        f"# trustlab check: adapted from {path}",
        # First: nothing is cached (a response cached for one identity would answer the next cell).
        "cache deny all",
    ]
    out += [new for ln in lines if (new := _line(run, ln, PEER_PLUMBING)) is not None]
    out += _plumbing(lab.run_dir, lines)
    run.notes.append(
        Note.whole("logs, pid and core files are the lab's; cache_log at debug 83,5 (the evidence of a block)")
    )
    run.notes.append(Note.whole(f"every cache_peer gets {PEER_PLUMBING} (refused impostors never mark a peer dead)"))
    upstreams = _upstreams(lines, all_peers, run.accel)
    return Adapted("\n".join(out) + "\n", ordered(run.notes), upstreams, run.listeners)


def _line(run: _Run, ln: Line, plumbing: str) -> str | None:
    """What the lab writes for *ln* (None: left out), each change noted."""
    w, no, key = ln.words, ln.no, ln.key
    why = _left_out(run, ln)
    if why is not None:
        if why:
            run.notes.append(Note("", no, why))
        return None
    if key == "acl" and len(w) > 1 and w[1] in run.never:
        if run.never[w[1]] != no:
            return None
        run.notes.append(Note("", no, f"acl {w[1]} -> never matches (reads a host file or needs a helper)"))
        return f"acl {w[1]} src 255.255.255.255/32"
    if _reads_file(w):
        run.notes.append(Note("", no, f"{' '.join(w)[:80]} dropped (reads a host file)"))
        return None
    if key in ("http_port", "https_port"):
        return _port_line(w, no, run.lab, run.ports, run.notes, run.listeners, run.accel) or None
    if key == "cache_peer":
        return _peer_line(w, no, run.lab, run.notes, run.path, plumbing)
    if key in ("tls_outgoing_options", "sslproxy_cafile", "sslproxy_capath"):
        return _outgoing_line(w, run.lab, run.notes)
    return " ".join(w)


def _left_out(run: _Run, ln: Line) -> str | None:
    """Why *ln* is left out (the note; ``""``: said nowhere): a peer not probed now, the lab's own
    plumbing, a directive off the allow-list. None: it is not."""
    w, no, key = ln.words, ln.no, ln.key
    if (
        run.others
        and len(w) > 1
        and (
            (key == "cache_peer" and run.peer_at.get(no, "") in run.others)
            or (key in ("cache_peer_access", "cache_peer_domain") and w[1] in run.others)
        )
    ):
        return f"{key} {w[1]} left out while another peer is probed"
    if key in PLUMBING:
        return f"{' '.join(w)} dropped (the lab caches nothing: cache deny all)" if key == "cache" else ""
    if key not in KEEP:
        return f"{' '.join(w)[:80]} dropped (not on trustlab's allow-list for Squid)"
    return None


def _plumbing(run_dir: Path, lines: list[Line]) -> list[str]:
    """The lab's own settings, after the config's (nothing here decides backend trust)."""
    from harness.proxies.squid import DEBUG_OPTIONS

    out = [
        "# trustlab lab plumbing (nothing here decides backend trust)",
        f"pid_filename {run_dir}/squid.pid",
        f"coredump_dir {run_dir}",
        "pinger_enable off",
        "netdb_filename none",
        "cache_store_log none",
        "shutdown_lifetime 0 seconds",
        f"cache_log {run_dir}/cache.log",
        f"debug_options {DEBUG_OPTIONS}",
        'logformat trustlab trustlab req="%rm %ru" status=%>Hs peer=%Sh/%<a err_code=%err_code err_detail=%err_detail',
        f"access_log stdio:{run_dir}/access.log trustlab",
    ]
    if not any(ln.key == "visible_hostname" for ln in lines):
        out.append("visible_hostname trustlab-proxy")
    return out


def _port_line(
    w: list[str],
    no: int,
    lab: LabPaths,
    ports: Ports,
    notes: list[Note],
    listeners: dict[str, int],
    accel: list[tuple[str, bool, str | None]],
) -> str | None:
    addr = w[1] if len(w) > 1 else "3128"
    port = addr.rsplit(":", 1)[-1]
    if not port.isdigit():
        raise ConfigError(f"line {no}: {w[0]} {addr}: no port number")
    if port in listeners:
        notes.append(Note("", no, f"{' '.join(w)} dropped (port {port} already listened on)"))
        return None
    lab_port = ports(port)
    listeners[port] = lab_port
    kept = [x for x in w[2:] if x.partition("=")[0] in _PORT_KEEP]
    dropped = [x for x in w[2:] if x.partition("=")[0] not in _PORT_KEEP]
    tls = w[0] == "https_port"
    if tls:
        kept += [f"tls-cert={lab.cert}", f"tls-key={lab.key}"]
        own = ("tls-cert", "tls-key", "cert", "key")
        if any(d.partition("=")[0] in own for d in dropped):
            notes.append(Note("", no, f"{w[0]} {addr}: its certificate replaced by a lab-minted one (the client side)"))
        dropped = [d for d in dropped if d.partition("=")[0] not in own]
    new = " ".join([w[0], f"127.0.0.1:{lab_port}", *kept])
    notes.append(
        Note(
            "",
            no,
            f"{w[0]} {addr} -> {w[0]} 127.0.0.1:{lab_port}"
            + (f" ({', '.join(d.partition('=')[0] for d in dropped)} dropped)" if dropped else ""),
        )
    )
    site = next((x.partition("=")[2] for x in w[2:] if x.startswith("defaultsite=")), None)
    if "accel" in kept:
        accel.append((port, tls, site))
    return new


def _peer_line(w: list[str], no: int, lab: LabPaths, notes: list[Note], config: Path, plumbing: str) -> str:
    head = w[:5]
    new = list(head)
    for word in w[5:]:
        k, eq, v = word.partition("=")
        if k in _PEER_LAB:
            if k == "tls-options" and v and "NO_TLSv1_3" not in v:
                # The user's options are kept; the lab's TLS 1.2 cap is added to them below.
                plumbing = plumbing.replace("tls-options=", f"tls-options={v}:")
            continue
        if k in _PEER_FILES and eq:
            what = _PEER_FILES[k]
            if what == "ca":
                new.append(f"{k}={trust_file(v, lab, notes)}")
            elif what == "ca_dir":
                new.append(f"{k}={trust_file(v, lab, notes, directory=True)}")
            elif what == "crl":
                crl = crl_file(v, config, lab, notes)
                if crl:
                    new.append(f"{k}={crl}")
            else:
                notes.append(Note("", no, f"{k}={v} replaced by a lab-minted client {what}"))
                new.append(f"{k}={lab.cert if what == 'cert' else lab.key}")
            continue
        if k in PEER_KEEP:
            new.append(word)
            continue
        why = (
            "health probes would reach the seat between cells"
            if k in ("monitorurl", "monitorinterval", "monitorsize", "standby", "background-ping")
            else "not on trustlab's allow-list for cache_peer"
        )
        notes.append(Note("", no, f"cache_peer {w[1]}: {k} dropped ({why})"))
    return " ".join(new) + " " + plumbing


def _outgoing_line(w: list[str], lab: LabPaths, notes: list[Note]) -> str:
    new = [w[0]]
    for word in w[1:]:
        k, eq, v = word.partition("=")
        if w[0] in ("sslproxy_cafile", "sslproxy_capath"):
            new.append(trust_file(word, lab, notes, directory=w[0].endswith("capath")))
        elif eq and k in ("cafile", "capath"):
            new.append(f"{k}={trust_file(v, lab, notes, directory=k == 'capath')}")
        elif eq and k in ("cert", "key"):
            notes.append(Note.whole(f"{w[0]}: {k}={v} replaced by a lab-minted client {k}"))
            new.append(f"{k}={lab.cert if k == 'cert' else lab.key}")
        elif eq and k == "crlfile":
            notes.append(Note.whole(f"{w[0]}: crlfile={v} dropped"))
        else:
            new.append(word)
    return " ".join(new)


def _acl_values(lines: list[Line]) -> dict[str, tuple[str, list[str]]]:
    """Each ACL name: its type and values (every line of that name)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for ln in lines:
        if ln.key == "acl" and len(ln.words) > 3:
            t, vals = out.setdefault(ln.words[1], (ln.words[2], []))
            vals += [v for v in ln.words[3:] if not v.startswith("-")]
    return out


def _upstreams(lines: list[Line], all_peers: list[Peer], accel: list[tuple[str, bool, str | None]]) -> list[Upstream]:
    """One :class:`Upstream` per TLS peer, with the request (listener, Host, path) that reaches it."""
    acls = _acl_values(lines)
    ups = []
    several = len(all_peers) > 1
    for p in all_peers:
        if not p.tls:
            continue
        name = p.domain or (p.host if not is_ip(p.host) else BACKEND_NAME)
        u = Upstream(
            label=f"cache_peer {p.name} {p.host}:{p.port} (line {p.line})",
            host=p.host,
            port=p.port,
            line=p.line,
            name=name,
            pool=f"{p.name}|{p.line}" if several else "",
        )
        if not accel:
            u.why_unroutable = "no http_port/https_port with accel: a forward proxy is not probed"
        else:
            port, tls, site = next(((a, t, s) for a, t, s in accel if t), accel[0])
            host, path, why = _peer_request(p, lines, acls)
            if why:
                u.why_unroutable = why
            else:
                u.route = Route(port, tls, host or site or PUBLIC_HOST, path or "/")
        ups.append(u)
    return ups


def _peer_request(
    p: Peer, lines: list[Line], acls: dict[str, tuple[str, list[str]]]
) -> tuple[str | None, str | None, str]:
    """(Host, path) a request needs to be sent to peer *p*, by its first ``allow`` rule."""
    for ln in lines:
        w = ln.words
        if ln.key == "cache_peer_domain" and len(w) > 2 and w[1] == p.name:
            dom = next((d for d in w[2:] if not d.startswith("!")), None)
            if dom:
                return dom.lstrip("."), None, ""
        if ln.key != "cache_peer_access" or len(w) < 3 or w[1] != p.name:
            continue
        if w[2] != "allow":
            if w[3:] == ["all"]:
                return None, None, f"cache_peer_access {p.name} deny all (line {ln.no}): no request reaches it"
            continue
        host = path = None
        for name in w[3:]:
            if name.startswith("!"):
                continue
            if name == "all":
                continue
            if name not in acls:
                return None, None, f"cache_peer_access {p.name} (line {ln.no}): acl {name} is not defined"
            t, vals = acls[name]
            if t == "dstdomain" and vals:
                host = vals[0].lstrip(".")
            elif t in ("urlpath_regex", "url_regex") and vals:
                m = re.match(r"\^?(/[\w/\-.]*)", vals[0])
                if not m:
                    return None, None, f"acl {name} {t} {vals[0]}: too complex to probe"
                path = m.group(1)
            else:
                return None, None, f"cache_peer_access {p.name} (line {ln.no}): acl {name} ({t}) too complex to probe"
        return host, path, ""
    return None, None, ""


# -- audit: the same parse, one scope per TLS peer ---------------------------------------------


def scopes(path: Path, text: str) -> list[rules.Scope]:
    """Every TLS ``cache_peer`` with its options as directives (both spellings under the new name)."""
    out = []
    spelling = {
        "sslflags": "tls-flags",
        "ssldomain": "tls-domain",
        "sslcafile": "tls-cafile",
        "sslcapath": "tls-capath",
        "ssl": "tls",
    }
    lines = parse(text)
    # sslproxy_cert_error: the first allow rule (a global, written for SSL-bump, that reaches peers too).
    bypass = next(
        (
            rules.Directive("sslproxy_cert_error", tuple(ln.words[2:]), ln.no)
            for ln in lines
            if ln.key == "sslproxy_cert_error" and ln.words[1:2] == ["allow"]
        ),
        None,
    )
    for p in peers(lines):
        if not p.tls:
            continue
        found: dict[str, rules.Directive] = {}
        if bypass:
            found["sslproxy_cert_error"] = bypass
        for k, v in p.options.items():
            found[spelling.get(k, k)] = rules.Directive(k, () if v is True else (str(v),), p.line)
        out.append(
            rules.Scope(
                ProxyKind.SQUID,
                str(path),
                p.line,
                (rules.Upstream(f"{p.host}:{p.port}", p.host, p.line),),
                found,
                {"peer": p.name, "host": p.host, "flags": p.flags},
            )
        )
    return out


def _trusts_system(scope: rules.Scope) -> bool:
    d = scope.get("tls-default-ca")
    return not d or d.value.lower() not in ("off", "no", "false", "0")


@rules.rule(
    "squid-dont-verify-peer",
    proxy="squid",
    severity="high",
    scenario="squid/dont-verify-peer",
    directives=("tls-flags", "sslflags"),
    help=_DOCS + "cache_peer.html",
    fix="remove DONT_VERIFY_PEER; trust the internal root: tls-cafile=<internal root> tls-default-ca=off",
)
def _dont_verify_peer(scope: rules.Scope) -> rules.Hit | None:
    if "DONT_VERIFY_PEER" not in scope.facts["flags"]:
        return None
    return rules.Hit(scope.line, f"cache_peer {scope.facts['peer']}: DONT_VERIFY_PEER: any certificate is accepted")


@rules.rule(
    "squid-system-store",
    proxy="squid",
    severity="medium",
    scenario="squid/default-ca",
    directives=("tls-default-ca", "tls-cafile"),
    help=_DOCS + "cache_peer.html",
    fix="add tls-default-ca=off beside tls-cafile=<internal root>",
)
def _system_store(scope: rules.Scope) -> rules.Hit | None:
    if "DONT_VERIFY_PEER" in scope.facts["flags"] or not _trusts_system(scope):
        return None
    ca = scope.get("tls-cafile")
    said = f"tls-cafile {ca.value} and " if ca else "no tls-cafile: only "
    return rules.Hit(
        scope.line,
        f"cache_peer {scope.facts['peer']}: {said}the system trust store (tls-default-ca is on for peers): any "
        "public CA can issue a certificate for the backend",
    )


@rules.rule(
    "squid-system-bundle",
    proxy="squid",
    severity="medium",
    scenario="squid/system-bundle",
    directives=("tls-cafile",),
    help=_DOCS + "cache_peer.html",
    fix="trust the internal root only",
)
def _system_bundle(scope: rules.Scope) -> rules.Hit | None:
    ca = scope.get("tls-cafile")
    if "DONT_VERIFY_PEER" in scope.facts["flags"] or not ca or not is_system_bundle(ca.value):
        return None
    return rules.Hit(scope.line, f"cache_peer {scope.facts['peer']}: tls-cafile {ca.value} is a system bundle")


@rules.rule(
    "squid-dont-verify-domain-ignored",
    proxy="squid",
    severity="low",
    scenario="squid/dont-verify-domain",
    directives=("tls-flags", "sslflags"),
    help=_DOCS + "cache_peer.html",
    fix="remove DONT_VERIFY_DOMAIN (Squid 5.7 ignores it on a cache_peer: the name is still checked)",
)
def _dont_verify_domain(scope: rules.Scope) -> rules.Hit | None:
    if "DONT_VERIFY_DOMAIN" not in scope.facts["flags"] or "DONT_VERIFY_PEER" in scope.facts["flags"]:
        return None
    return rules.Hit(
        scope.line,
        f"cache_peer {scope.facts['peer']}: DONT_VERIFY_DOMAIN is parsed and ignored for peers (5.7): the name "
        "is still checked; a config relying on it breaks when that changes",
    )


@rules.rule(
    "squid-ip-peer-no-domain",
    proxy="squid",
    severity="medium",
    scenario="squid/ip-target",
    directives=("tls-domain", "ssldomain"),
    help=_DOCS + "cache_peer.html",
    fix="add tls-domain=<backend name> (the name sent as SNI and checked)",
)
def _ip_no_domain(scope: rules.Scope) -> rules.Hit | None:
    if not is_ip(scope.facts["host"]) or scope.get("tls-domain") or "DONT_VERIFY_PEER" in scope.facts["flags"]:
        return None
    return rules.Hit(
        scope.line,
        f"cache_peer {scope.facts['peer']}: addressed by IP with no tls-domain: Squid checks the certificate "
        "against the IP string and matches no IP SAN, so every certificate is refused (the pressure that leads "
        "to DONT_VERIFY_PEER)",
    )


@rules.rule(
    "squid-nothing-trusted",
    proxy="squid",
    severity="medium",
    scenario="squid/no-ca-default-off",
    directives=("tls-default-ca", "tls-cafile", "tls-capath"),
    help=_DOCS + "cache_peer.html",
    fix="add tls-cafile=<internal root>",
)
def _nothing_trusted(scope: rules.Scope) -> rules.Hit | None:
    if _trusts_system(scope) or scope.get("tls-cafile") or scope.get("tls-capath"):
        return None
    if "DONT_VERIFY_PEER" in scope.facts["flags"]:
        return None
    return rules.Hit(
        scope.line,
        f"cache_peer {scope.facts['peer']}: tls-default-ca=off and no tls-cafile: no "
        "certificate can verify, the legitimate backend's neither",
    )


@rules.rule(
    "squid-wildcard-one-label",
    proxy="squid",
    severity="low",
    scenario="squid/good",
    directives=("tls-domain",),
    help=_DOCS + "cache_peer.html",
    fix="make sure the CA that issues the backend's certificate never issues *.<parent> (name constraints)",
)
def _wildcard(scope: rules.Scope) -> rules.Hit | None:
    if "DONT_VERIFY_PEER" in scope.facts["flags"]:
        return None
    d = scope.get("tls-domain")
    name = d.value if d else scope.facts["host"]
    if is_ip(name) or name.count(".") != 1:
        return None
    parent = name.split(".", 1)[1]
    return rules.Hit(
        scope.line,
        f"cache_peer {scope.facts['peer']}: Squid's own name matcher accepts *.{parent} for {name} (OpenSSL's "
        "would not): a wildcard certificate one label up answers for the backend",
    )


@rules.rule(
    # check on tests/configs/squid/cert-error-allow-all.conf shows it too
    # (tests/test_check_squid_trafficserver.py: every impostor spoofed).
    "squid-cert-error-bypass",
    proxy="squid",
    severity="high",
    scenario="squid/cert-error-allow-all",
    directives=("sslproxy_cert_error",),
    help=_DOCS + "sslproxy_cert_error.html",
    fix="remove sslproxy_cert_error allow ... (it is for SSL-bump; it bypasses the cache_peer's verification too)",
)
def _cert_error(scope: rules.Scope) -> rules.Hit | None:
    d = scope.get("sslproxy_cert_error")
    if not d or "DONT_VERIFY_PEER" in scope.facts["flags"]:
        return None
    which = "every request" if d.args == ("all",) else f"requests matching {' '.join(d.args)}"
    return rules.Hit(
        d.line,
        f"cache_peer {scope.facts['peer']}: sslproxy_cert_error allow {' '.join(d.args)}: Squid bypasses certificate "
        f"errors on the peer's connection too ({which}): the peer line reads as verifying, and every impostor is "
        "answered",
        severity="high" if d.args == ("all",) else "medium",
    )
