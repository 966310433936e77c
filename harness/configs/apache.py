"""A user's Apache httpd config (a ``<VirtualHost>``, or a whole apache2.conf-like file), read with
a small line-based parser and adapted to run in the lab.

Kept exactly: every ``SSLProxy*`` directive (trust paths excepted), ``ProxyPass``/``ProxyPassMatch``
targets, ``<Proxy balancer://>`` members, ``ProxyPreserveHost``, ``ServerName``, sections.
Changed: ``SSLProxyCACertificateFile``/``Path`` point at the lab's internal root (or its system
bundle when the path looks like an OS bundle), ``Listen``/``<VirtualHost>`` move to
``127.0.0.1:<lab port>``, server and proxy client certificates are lab-minted, and process
settings (``User``, ``PidFile``, ``Include``, logs, ``LoadModule``) are the lab's own. The lab
logs ``ssl:info`` because that is where mod_ssl writes its verification verdicts.

Every line is read as httpd reads it, after ``Define`` expansion (``Define X CustomLog`` then
``${X} "|cmd"`` is a CustomLog, and is dropped like one); a directive whose name comes from an
undefined variable, every log directive (piped or not: ``CustomLog``, ``ErrorLog``,
``TransferLog``, ``GlobalLog``), ``RewriteMap prg:`` and any value that starts a program
(``|cmd``, ``exec:``) are dropped. This is defence in depth: every proxy runs in
:mod:`harness.runtimes.sandbox`, where no host program, file or socket is reachable anyway.
"""

from __future__ import annotations

import re
import shlex
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
    probe_path,
    read_config,
    split_url,
    trust_file,
)
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

MODULES_DIR = Path("/usr/lib/apache2/modules")
#: Loaded when present: the modules a Debian apache2 enables plus those reverse proxies use.
MODULES = (
    "mpm_event",
    "authz_core",
    "authz_host",
    "authn_core",
    "authn_file",
    "auth_basic",
    "authz_user",
    "access_compat",
    "alias",
    "dir",
    "mime",
    "env",
    "setenvif",
    "headers",
    "rewrite",
    "log_config",
    "expires",
    "filter",
    "deflate",
    "socache_shmcb",
    "ssl",
    "proxy",
    "proxy_http",
    "proxy_wstunnel",
    "proxy_balancer",
    "slotmem_shm",
    "lbmethod_byrequests",
    "remoteip",
    "reqtimeout",
    "status",
    "http2",
    "proxy_http2",
    "unique_id",
    "substitute",
    "request",
)
_DROP = {
    "serverroot",
    "user",
    "group",
    "pidfile",
    "errorlog",
    "customlog",
    "transferlog",
    "loglevel",
    "include",
    "includeoptional",
    "loadmodule",
    "mutex",
    "defaultruntimedir",
    "listen",
    "sslsessioncache",
    "sslstaplingcache",
    "sslusestapling",
    "sslrandomseed",
    "sslpassphrasedialog",
    "scoreboardfile",
    "coredumpdirectory",
    "errorlogformat",
    "globallog",
    "bufferedlogs",
    "passenv",
    "sslcryptodevice",
    "scriptlog",
    "lockfile",
}
#: Directives whose value can run a program: dropped when it does (``prg:``, ``exec:``, ``|cmd``).
_PROGRAM = re.compile(r"^\s*(?:prg|exec)\s*:|^\s*\|", re.I)
_VAR = re.compile(r"\$\{([^}]*)\}")
_CLIENT_SIDE = {
    "sslcertificatechainfile",
    "sslcacertificatefile",
    "sslcacertificatepath",
    "sslverifyclient",
    "sslverifydepth",
    "sslcarevocationfile",
    "sslcarevocationpath",
    "sslcarevocationcheck",
    "sslopensslconfcmd",
}


@dataclass
class Line:
    """One logical config line (continuations joined) with where it starts."""

    no: int
    text: str
    words: list[str]

    @property
    def name(self) -> str:
        return self.words[0].lower() if self.words else ""


def lines(text: str) -> list[Line]:
    """Logical lines: ``\\`` continuations joined, comments and blanks kept as empty words."""
    out: list[Line] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = no
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        full = buf + raw
        buf = ""
        stripped = full.strip()
        if not stripped or stripped.startswith("#"):
            out.append(Line(start, full, []))
            continue
        try:
            words = shlex.split(stripped, comments=False, posix=True)
        except ValueError:
            words = stripped.split()
        out.append(Line(start, full, words))
    return out


def _expanded(ln: Line, defines: dict[str, str], notes: list[Note]) -> Line:
    """*ln* as httpd reads it: ``${VAR}`` replaced by earlier ``Define`` values (httpd expands a
    line before it reads the directive name, so ``Define X CustomLog`` then ``${X} "|cmd"`` is a
    CustomLog). ``Define``/``UnDefine`` lines update *defines*."""
    text = ln.text
    for _ in range(8):  # Define values may themselves name variables
        new = _VAR.sub(lambda m: defines.get(m.group(1), m.group(0)), text)
        if new == text:
            break
        text = new
    if text != ln.text:
        out = (lines(text) or [Line(ln.no, text, [])])[0]
        ln = Line(ln.no, out.text, out.words)
        if ln.name not in ("define", "undefine"):
            notes.append(Note("", ln.no, f"read as httpd expands it: {' '.join(ln.words)[:80]}"))
    if ln.name == "define" and len(ln.words) > 1:
        defines[ln.words[1]] = " ".join(ln.words[2:])
    elif ln.name == "undefine" and len(ln.words) > 1:
        defines.pop(ln.words[1], None)
    return ln


@dataclass(frozen=True)
class Pass:
    """A ``ProxyPass``/``ProxyPassMatch`` that a client request reaches: its path and target."""

    path: str
    url: str
    line: int
    regex: bool


@dataclass
class VHost:
    """The main server (line 0: everything outside any ``<VirtualHost>``) or one ``<VirtualHost>``,
    with the directives set in it (nested sections included; the last one wins, as in httpd)."""

    line: int
    port: str
    directives: dict[str, rules.Directive] = field(default_factory=dict)
    #: ``SSLEngine on`` somewhere in it: clients reach it over TLS.
    tls: bool = False
    passes: list[Pass] = field(default_factory=list)
    #: Every ``ProxyPass``/``ProxyPassMatch``/``BalancerMember`` URL in it, with its line.
    urls: list[tuple[str, int]] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        d = self.directives.get("servername")
        return d.value.split(":")[0] if d and d.value else None

    @property
    def preserve(self) -> bool:
        d = self.directives.get("proxypreservehost")
        return bool(d and d.value.lower() == "on")


@dataclass
class Tree:
    """A config as httpd reads it (``Define`` expanded), once: what ``check`` adapts and ``audit``
    reads."""

    lines: list[Line]
    #: What reading it changed (a line read as httpd expands it).
    notes: list[Note]
    main: VHost
    vhosts: list[VHost]
    #: ``<Proxy balancer://NAME>`` -> its ``BalancerMember`` URLs and lines.
    balancers: dict[str, list[tuple[str, int]]]


def read(text: str) -> Tree:
    """The :class:`Tree` of an httpd config's text."""
    notes: list[Note] = []
    defines: dict[str, str] = {}
    expanded = [_expanded(ln, defines, notes) for ln in lines(text)]
    main = VHost(0, "80")
    tree = Tree(expanded, notes, main, [], {})
    cur = main
    stack: list[tuple[str, Line]] = []
    for ln in expanded:
        w, name = ln.words, ln.name
        if not w or "$" in name:
            continue  # a directive name from an undefined variable: unknowable (check drops it)
        if name.startswith("</"):
            section = name[2:].rstrip(">")
            if stack and stack[-1][0] == section:
                stack.pop()
            if section == "virtualhost":
                cur = main
            continue
        if name.startswith("<"):
            section = name[1:].rstrip(">")
            if section == "virtualhost":
                addrs = " ".join(w[1:]).rstrip(">").strip().split()
                cur = VHost(ln.no, _port_of(addrs[0]) if addrs else "80")
                tree.vhosts.append(cur)
            stack.append((section, ln))
            continue
        cur.directives[name] = rules.Directive(name, tuple(w[1:]), ln.no)
        if name == "sslengine" and len(w) > 1 and w[1].lower() == "on":
            cur.tls = True
        if name in ("proxypass", "proxypassmatch", "balancermember"):
            url = next((x for x in w[1:] if "://" in x), "")
            if url:
                cur.urls.append((url, ln.no))
        if name == "balancermember" and len(w) > 1 and stack and stack[-1][0] == "proxy":
            bal = stack[-1][1].words[1].rstrip(">").strip("\"'").rstrip("/")
            tree.balancers.setdefault(bal, []).append((w[1], ln.no))
        if name in ("proxypass", "proxypassmatch") and len(w) > 1:
            loc = next((a for s, a in reversed(stack) if s in ("location", "locationmatch")), None)
            regex = name == "proxypassmatch"
            entry = None
            if loc is not None and (len(w) == 2 or "=" in w[2] or w[1] == "!"):
                lpath = loc.words[1].rstrip(">").strip("\"'") if len(loc.words) > 1 else "/"
                entry = Pass(lpath, w[1], ln.no, regex or loc.name == "<locationmatch")
            elif len(w) > 2:
                entry = Pass(w[1], w[2], ln.no, regex)
            if entry and entry.url != "!":
                cur.passes.append(entry)
    return tree


def _port_of(addr: str) -> str:
    m = re.search(r":(\d+)$", addr)
    if m:
        return m.group(1)
    return addr if addr.isdigit() else "80"


@dataclass
class _Run(Run):
    """One :func:`adapt` of an Apache config: where it is in the file, and the ports it listens on."""

    #: The sections open at the line being adapted (name, the line that opened it).
    stack: list[tuple[str, Line]] = field(default_factory=list)
    #: The original ports listened on (``Listen``, then each VirtualHost's), in order.
    listen_ports: list[str] = field(default_factory=list)

    def note(self, ln: Line, text: str) -> None:
        self.notes.append(Note("", ln.no, text))


def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The config at *path* made runnable in the lab (see the module docstring)."""
    tree = read(read_config(path))
    run = _Run(path, lab, ports, focus, list(tree.notes))
    body = [out for ln in tree.lines if ln.words for out in _adapted_line(run, ln)]
    upstreams = [u for vh, port in _served(run, tree) for u in _pass_upstreams(tree, vh, port)]
    head = _head(run)
    if not tree.vhosts:
        wrap_port = ports(run.listen_ports[0])
        body = [f"<VirtualHost 127.0.0.1:{wrap_port}>", *body, "</VirtualHost>"]
        run.notes.append(Note.whole(f"the directives are wrapped in <VirtualHost 127.0.0.1:{wrap_port}>"))
    run.notes.append(
        Note.whole("logs, pid and modules are the lab's own; LogLevel is warn ssl:info (mod_ssl's verdicts)")
    )
    listeners = {p: ports(p) for p in run.listen_ports}
    return Adapted(
        text="\n".join(head + body) + "\n", notes=ordered(run.notes), upstreams=upstreams, listeners=listeners
    )


def _adapted_line(run: _Run, ln: Line) -> list[str]:
    """What the lab writes for *ln* (nothing when it is dropped), each change noted."""
    refused = _runs_something(ln)
    if refused:
        run.note(ln, refused)
        return []
    if ln.name.startswith("<"):
        return [_section(run, ln)]
    if ln.name in _DROP:
        _host_setting(run, ln)
        return []
    indent = re.match(r"\s*", ln.text).group(0)  # type: ignore[union-attr]
    tls = _tls_line(run, ln, indent)
    if tls is not None:
        return tls
    if ln.name == "balancermember" and len(ln.words) > 1 and run.stack and run.stack[-1][0] == "proxy":
        return [_member(run, ln)]
    return [ln.text]


def _runs_something(ln: Line) -> str | None:
    """Why *ln* is dropped before anything else is read of it: a directive name from an undefined
    variable, or a value that runs a program (the note), else None."""
    w, name = ln.words, ln.name
    if "${" in name or "$" in name:
        return f"{w[0]} dropped (a directive name from an undefined variable)"
    if name == "rewritemap" and any(_PROGRAM.search(x) for x in w[2:3]):
        return f"RewriteMap {w[1] if len(w) > 1 else ''} {w[2]} dropped (runs a program)"
    if any(_PROGRAM.search(x) for x in w[1:]) and name not in ("proxypass", "proxypassmatch"):
        return f"{w[0]} dropped (its value runs a program: {' '.join(w[1:])[:60]})"
    return None


def _section(run: _Run, ln: Line) -> str:
    """A section's opening or closing line, kept (a ``<VirtualHost>`` moves to its lab port)."""
    name = ln.name
    if name.startswith("</"):
        if run.stack and run.stack[-1][0] == name[2:].rstrip(">"):
            run.stack.pop()
        return ln.text
    section = name[1:].rstrip(">")
    run.stack.append((section, ln))
    if section != "virtualhost":
        return ln.text
    arg = " ".join(ln.words[1:]).rstrip(">").strip()
    addrs = arg.split()
    lab_port = run.ports(_port_of(addrs[0]) if addrs else "80")
    run.note(ln, f"<VirtualHost {arg}> -> <VirtualHost 127.0.0.1:{lab_port}>")
    return f"<VirtualHost 127.0.0.1:{lab_port}>"


def _host_setting(run: _Run, ln: Line) -> None:
    """A process setting of the host's httpd (dropped: the lab writes its own), said when it matters;
    a ``Listen`` becomes one of the lab's."""
    w, name = ln.words, ln.name
    if name == "listen":
        port = _port_of(w[1]) if len(w) > 1 else "80"
        if port not in run.listen_ports:
            run.listen_ports.append(port)
        run.note(ln, f"Listen {' '.join(w[1:])} -> Listen 127.0.0.1:{run.ports(port)}")
    elif name in ("include", "includeoptional"):
        run.note(ln, f"{w[0]} {' '.join(w[1:])} dropped (not followed: put trust directives in the checked file)")
    elif name not in ("loadmodule", "errorlog", "customlog", "transferlog", "loglevel", "pidfile"):
        run.note(ln, f"{w[0]} dropped (host process setting)")


def _tls_line(run: _Run, ln: Line, indent: str) -> list[str] | None:
    """The lab's lines for a TLS directive (client side, client certificate, trust, CRL), or None
    when *ln* is none of these."""
    w, name, lab = ln.words, ln.name, run.lab
    if name in _CLIENT_SIDE:
        run.note(ln, f"{w[0]} dropped (client side: not what the lab tests)")
        return []
    if name == "sslproxymachinecertificatechainfile":
        run.note(ln, f"{w[0]} dropped (the lab has no client chain)")
        return []
    if name == "sslcertificatefile":
        run.note(ln, f"SSLCertificateFile {w[1] if len(w) > 1 else ''} replaced by a lab-minted one (client side)")
        return [f"{indent}SSLCertificateFile {lab.cert}"]
    if name == "sslcertificatekeyfile":
        return [f"{indent}SSLCertificateKeyFile {lab.key}"]
    if len(w) < 2:
        return None
    if name in ("sslproxycacertificatefile", "sslproxycacertificatepath"):
        return [f"{indent}{w[0]} {trust_file(w[1], lab, run.notes, directory=name.endswith('path'))}"]
    if name == "sslproxymachinecertificatefile":
        run.note(ln, f"{w[0]} {w[1]} replaced by a lab-minted client certificate")
        return [f"{indent}{w[0]} {lab.combined}"]
    if name == "sslproxymachinecertificatepath":
        # A hashed directory of certificate+key files; the lab has one client certificate: the
        # File form presents the same (kept as written, Apache refused the config: issue 24).
        run.note(ln, f"{w[0]} {w[1]} replaced by SSLProxyMachineCertificateFile with a lab-minted client certificate")
        return [f"{indent}SSLProxyMachineCertificateFile {lab.combined}"]
    if name in ("sslproxycarevocationfile", "sslproxycarevocationpath"):
        # A hashed CRL directory stands for the same CRLs in the File form.
        crl = crl_file(w[1], run.path, lab, run.notes)
        return [f"{indent}SSLProxyCARevocationFile {crl}"] if crl else []
    return None


def _member(run: _Run, ln: Line) -> str:
    """A ``BalancerMember``: while another member of its balancer is probed, disabled; while it is
    probed, never put in error state."""
    w = ln.words
    bal = run.stack[-1][1].words[1].rstrip(">").strip("\"'").rstrip("/")
    key, focus = f"{bal}|{w[1]}|{ln.no}", run.focus
    if focus and focus.startswith(bal + "|") and key != focus and "status=+D" not in ln.text:
        run.note(ln, f"BalancerMember {w[1]} disabled while another member is probed")
        return f"{ln.text} status=+D"
    if key == focus and not any(x.lower().startswith("retry=") for x in w[2:]):
        # A refused member is put in error state for `retry` (60 s); the next cell would get "All
        # workers are in error state" (503) instead of a verdict.
        run.note(
            ln,
            f"retry=0 on the probed BalancerMember {w[1]} (a refused impostor must not put it in error "
            "state for the next cell)",
        )
        return f"{ln.text} retry=0"
    return ln.text


def _served(run: _Run, tree: Tree) -> list[tuple[VHost, str]]:
    """Each server a request reaches and the port it listens on: the VirtualHosts, else the main
    server on the first Listen (or 80)."""
    served = [(vh, vh.port) for vh in tree.vhosts]
    if not tree.vhosts:
        port = run.listen_ports[0] if run.listen_ports else "80"
        served = [(tree.main, port)]
        if not run.listen_ports:
            run.listen_ports.append(port)
            run.notes.append(Note.whole(f"{run.path} has no Listen; the lab listens on 127.0.0.1:{run.ports(port)}"))
    for _, port in served:
        if port not in run.listen_ports:
            run.listen_ports.append(port)
    return served


def _pass_upstreams(tree: Tree, vh: VHost, vport: str) -> list[Upstream]:
    """The HTTPS upstreams *vh*'s ProxyPass/ProxyPassMatch send to (a balancer's members each)."""
    out = []
    for ps in vh.passes:
        scheme, host, _, _ = split_url(ps.url)
        balancer = scheme == "balancer"
        members = tree.balancers.get(f"balancer://{host}", []) if balancer else [(ps.url, ps.line)]
        probe = probe_path(ps.path, "regex" if ps.regex else "prefix")
        route = Route(vport, vh.tls, vh.name or PUBLIC_HOST, probe) if probe else None
        for murl, mline in members:
            m_scheme, m_host, m_port, _ = split_url(murl)
            if m_scheme not in ("https", "h2", "wss"):
                continue
            target = f"{ps.url} -> {murl}" if balancer else murl
            out.append(
                Upstream(
                    label=f"ProxyPass{'Match' if ps.regex else ''} {ps.path} {target} (line {mline})",
                    host=m_host,
                    port=m_port or 443,
                    line=mline,
                    name=m_host if not is_ip(m_host) else BACKEND_NAME,
                    route=route,
                    why_unroutable="" if probe else f"no client request path matches {ps.path!r}",
                    pool=f"balancer://{host}|{murl}|{mline}" if balancer else "",
                )
            )
    return out


def _head(run: _Run) -> list[str]:
    """The lab's own process settings, modules and listeners, before the adapted lines."""
    rd = run.lab.run_dir
    # <IfFile> is decided where Apache runs (this host, or the docker runtime's image): the modules
    # present there are loaded, the others left out.
    modules = [
        line
        for m in MODULES
        for line in (
            f"<IfFile {MODULES_DIR}/mod_{m}.so>",
            f"  LoadModule {m}_module {MODULES_DIR}/mod_{m}.so",
            "</IfFile>",
        )
    ]
    return [
        f"# trustlab check: adapted from {run.path}",
        f'ServerRoot "{rd}"',
        f'PidFile "{rd}/httpd.pid"',
        f'DefaultRuntimeDir "{rd}"',
        f"Mutex file:{rd} default",
        f'ErrorLog "{rd}/error.log"',
        "# ssl:info is where mod_ssl logs its proxy-side verification verdicts (AH02276, AH02411 ...)",
        "LogLevel warn ssl:info proxy:info proxy_http:info",
        *modules,
        *[f"Listen 127.0.0.1:{run.ports(p)}" for p in run.listen_ports],
        "<IfFile /etc/mime.types>",
        "  TypesConfig /etc/mime.types",
        "</IfFile>",
        "<IfFile !/etc/mime.types>",
        "  TypesConfig /dev/null",
        "</IfFile>",
        f"ServerName {PUBLIC_HOST}",
    ]


def validate(path: Path) -> None:
    """Raise ConfigError when *path* does not look like an Apache config."""
    src = lines(read_config(path))
    if not any(ln.name in ("proxypass", "proxypassmatch", "<virtualhost", "sslproxyengine", "listen") for ln in src):
        raise ConfigError(f"{path}: no <VirtualHost>, Listen or ProxyPass: is this an Apache config?")


# -- audit: the same tree, as scopes, and Apache's rules ---------------------------------------
_DOCS = "https://httpd.apache.org/docs/2.4/mod/mod_ssl.html#"


def scopes(path: Path, text: str) -> list[rules.Scope]:
    """The main server and each ``<VirtualHost>`` that proxies to HTTPS, with its directives merged
    over the main server's (a virtual host inherits what it does not set)."""
    tree = read(text)
    out = []
    for vh in [tree.main, *tree.vhosts]:
        https = [(u, no) for u, no in vh.urls if split_url(u)[0] in ("https", "h2", "wss")]
        if not https:
            continue
        merged = vh.directives if vh is tree.main else {**tree.main.directives, **vh.directives}
        out.append(
            rules.Scope(
                ProxyKind.APACHE,
                str(path),
                https[0][1],
                tuple(rules.Upstream(u, split_url(u)[1], no) for u, no in https),
                merged,
            )
        )
    return out


def _value(scope: rules.Scope, name: str) -> tuple[str | None, int]:
    """A directive's first argument (``None`` when unset or empty) and the line to point at."""
    d = scope.get(name)
    return (d.value or None, d.line) if d else (None, scope.line)


_VERIFY_FIX = "SSLProxyVerify require + SSLProxyCACertificateFile <internal root>"


@rules.rule(
    "apache-verify-none",
    proxy="apache",
    severity="high",
    scenario="apache/verify-none",
    directives=("SSLProxyVerify",),
    help=_DOCS + "sslproxyverify",
    fix=_VERIFY_FIX,
)
def _verify_none(scope: rules.Scope) -> rules.Hit | None:
    verify, line = _value(scope, "sslproxyverify")
    if not verify or verify.lower() not in ("none", "optional_no_ca"):
        return None
    return rules.Hit(
        line,
        f"SSLProxyVerify {verify}: the chain is not checked; any CA's certificate for the backend name is accepted",
    )


@rules.rule(
    "apache-verify-default",
    proxy="apache",
    severity="high",
    scenario="apache/defaults",
    directives=("SSLProxyVerify",),
    help=_DOCS + "sslproxyverify",
    fix=_VERIFY_FIX,
)
def _verify_default(scope: rules.Scope) -> rules.Hit | None:
    verify, line = _value(scope, "sslproxyverify")
    if verify:
        return None
    return rules.Hit(
        line,
        "SSLProxyVerify unset (default none): the chain is not checked; any CA's certificate for the "
        "backend name is accepted",
    )


@rules.rule(
    "apache-name-check-off",
    proxy="apache",
    severity="high",
    scenario="apache/name-check-off",
    directives=("SSLProxyCheckPeerName",),
    help=_DOCS + "sslproxycheckpeername",
    fix="SSLProxyCheckPeerName on",
)
def _name_check_off(scope: rules.Scope) -> rules.Hit | None:
    peer, line = _value(scope, "sslproxycheckpeername")
    if not peer or peer.lower() != "off":
        return None
    return rules.Hit(line, "SSLProxyCheckPeerName off: any certificate from a trusted CA is accepted for any name")


@rules.rule(
    "apache-cn-off-peername-unset",
    proxy="apache",
    severity="high",
    scenario="apache/cn-check-off",
    directives=("SSLProxyCheckPeerCN", "SSLProxyCheckPeerName"),
    help=_DOCS + "sslproxycheckpeercn",
    fix="add `SSLProxyCheckPeerName on` (or drop SSLProxyCheckPeerCN)",
)
def _cn_off_peername_unset(scope: rules.Scope) -> rules.Hit | None:
    cn, line = _value(scope, "sslproxycheckpeercn")
    if not cn or cn.lower() != "off" or _value(scope, "sslproxycheckpeername")[0]:
        return None
    return rules.Hit(
        line,
        "SSLProxyCheckPeerCN off with SSLProxyCheckPeerName unset: the name check is disabled (the two "
        "directives are linked)",
    )


@rules.rule(
    "apache-expire-check-off",
    proxy="apache",
    severity="high",
    scenario="apache/expire-check-off",
    directives=("SSLProxyCheckPeerExpire",),
    help=_DOCS + "sslproxycheckpeerexpire",
    fix="SSLProxyCheckPeerExpire on",
)
def _expire_check_off(scope: rules.Scope) -> rules.Hit | None:
    exp, line = _value(scope, "sslproxycheckpeerexpire")
    if not exp or exp.lower() != "off":
        return None
    return rules.Hit(line, "SSLProxyCheckPeerExpire off: expired and not-yet-valid certificates are accepted")


@rules.rule(
    "apache-verify-depth",
    proxy="apache",
    severity="medium",
    scenario="apache/seed-recipe",
    directives=("SSLProxyVerifyDepth", "SSLProxyVerify"),
    help=_DOCS + "sslproxyverifydepth",
    fix="SSLProxyVerifyDepth 2 (or the depth of your PKI)",
)
def _verify_depth(scope: rules.Scope) -> rules.Hit | None:
    depth, line = _value(scope, "sslproxyverifydepth")
    if (_value(scope, "sslproxyverify")[0] or "").lower() != "require":
        return None
    if depth and not (depth.isdigit() and int(depth) < 2):
        return None
    return rules.Hit(
        line,
        f"SSLProxyVerifyDepth {depth or 'unset (default 1)'}: a root -> intermediate -> leaf chain is "
        "refused, so the legitimate backend is blocked",
    )


@rules.rule(
    "apache-system-bundle",
    proxy="apache",
    severity="medium",
    scenario="apache/system-bundle",
    directives=("SSLProxyCACertificateFile", "SSLProxyCACertificatePath"),
    help=_DOCS + "sslproxycacertificatefile",
    fix="trust the internal root only",
)
def _system_bundle(scope: rules.Scope) -> rules.Hit | None:
    ca, line = _value(scope, "sslproxycacertificatefile")
    if not ca:
        ca, line = _value(scope, "sslproxycacertificatepath")
    if not ca or not is_system_bundle(ca):
        return None
    return rules.Hit(line, f"{ca} is a system bundle: any public CA can issue a certificate for the backend")


@rules.rule(
    "apache-preserve-host",
    proxy="apache",
    severity="medium",
    scenario="apache/preserve-host",
    directives=("ProxyPreserveHost",),
    help="https://httpd.apache.org/docs/2.4/mod/mod_proxy.html#proxypreservehost",
    fix="ProxyPreserveHost Off for HTTPS backends (or a certificate for the public name)",
)
def _preserve_host(scope: rules.Scope) -> rules.Hit | None:
    ph, line = _value(scope, "proxypreservehost")
    if not ph or ph.lower() != "on":
        return None
    return rules.Hit(
        line,
        "ProxyPreserveHost On: Apache checks the backend certificate against the client's Host, not the ProxyPass host",
    )


@rules.rule(
    "apache-ip-target",
    proxy="apache",
    severity="medium",
    scenario="apache/ip-target",
    directives=("ProxyPass", "ProxyPassMatch", "BalancerMember"),
    help="https://httpd.apache.org/docs/2.4/mod/mod_proxy.html#proxypass",
    fix="proxy to the backend's name",
)
def _ip_target(scope: rules.Scope) -> list[rules.Hit]:
    return [
        rules.Hit(
            u.line,
            f"ProxyPass to the IP {u.host}: no SNI and the name check uses the IP; a certificate naming the "
            "backend is refused",
        )
        for u in scope.upstreams
        if is_ip(u.host)
    ]
