"""What every config adapter shares: the upstreams it found, the lab's paths, its notes.

An adapter reads a user's real proxy config (``trustlab check`` / ``trustlab audit``) and
returns the same config made runnable in a lab: every directive that decides backend trust
is kept exactly as written, only what cannot run in the lab is changed (trusted-CA paths
stand for the lab's root or system bundle, listeners move to a lab port on 127.0.0.1,
client-side certificates are lab-minted, log/pid/include paths are redirected or dropped),
and each change is said in one line (a :class:`Note`; :attr:`Adapted.notes`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import posixpath
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harness.errors import ConfigError, read_input
from harness.vocab import BACKEND_NAME

#: The OS-wide trust stores, by exact path (Debian/Ubuntu, RHEL/Fedora, SUSE, Alpine, Arch,
#: FreeBSD, macOS/Homebrew): a trust path that is one of these stands for the lab's system bundle,
#: anything else for the lab's internal root. Exact paths, never substrings: a private CA file
#: named ``upstreamcacert.pem`` or ``/etc/ssl/certs/internal-ca.pem`` is a private CA (issue 24).
SYSTEM_BUNDLE_FILES = frozenset(
    {
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/ssl/certs/ca-bundle.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/pki/tls/certs/ca-bundle.trust.crt",
        "/etc/pki/tls/cert.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ca-certificates/extracted/tls-ca-bundle.pem",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
        "/usr/local/share/certs/ca-root-nss.crt",
        "/usr/local/etc/openssl/cert.pem",
        "/usr/local/etc/openssl@3/cert.pem",
        "/opt/homebrew/etc/openssl@3/cert.pem",
        "/opt/homebrew/etc/ca-certificates/cert.pem",
        "/usr/lib/ssl/cert.pem",
    }
)
#: The same stores as hashed directories (CApath, SSLProxyCACertificatePath, a ca-base).
SYSTEM_BUNDLE_DIRS = frozenset(
    {
        "/etc/ssl/certs",
        "/etc/pki/tls/certs",
        "/etc/pki/ca-trust/extracted/pem",
        "/usr/share/ca-certificates",
        "/usr/local/share/certs",
        "/usr/lib/ssl/certs",
        "/etc/ca-certificates/extracted",
    }
)


def is_system_bundle(path: str) -> bool:
    """True when *path* is an OS-wide trust bundle (or its directory), by exact known path."""
    p = path.strip().strip("\"'")
    p = p.rstrip("/") or p
    return p in SYSTEM_BUNDLE_FILES or p in SYSTEM_BUNDLE_DIRS


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Route:
    """How a client request reaches one upstream: listener (by its original port), Host, path."""

    listener: str
    tls: bool
    host: str
    path: str
    #: What a route's request matchers also ask for (Caddy ``method``, ``header``): sent as is.
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """The request the probe sends, as ``check`` shows it: ``GET /api/ (Host a.example, X-K: v)``."""
        extra = ", ".join([f"Host {self.host}"] + [f"{k}: {v}" for k, v in self.headers])
        return f"{self.method} {self.path} ({extra})"


@dataclass
class Upstream:
    """One HTTPS backend target of the config."""

    label: str
    host: str
    port: int
    line: int
    #: The name the legitimate backend's certificate carries: the target's host name, or for
    #: an IP target the name the config says to expect (else the lab's backend-api.internal).
    name: str = BACKEND_NAME
    route: Route | None = None
    why_unroutable: str = ""
    #: Key of the pool (upstream block / backend / balancer) it belongs to, if any.
    pool: str = ""
    #: The file its line is in, when not the config given (Traffic Server's remap.config).
    file: str = ""

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps what an adapted config points at."""

    run_dir: Path
    ca: Path
    bundle: Path
    ca_dir: Path
    bundle_dir: Path
    cert: Path
    key: Path
    combined: Path
    #: The lab's CRLs (``revoked`` listed in the intermediate's): one per CA of the chain, and the
    #: intermediate's alone. None where no CRL is minted (a scenario's own render).
    crl_chain: Path | None = None
    crl_leaf: Path | None = None
    #: The CA files that exist on the config's host (a challenge's declared internal root). None:
    #: any trusted-CA path stands for the lab's root (``check`` on a user's own config, whose files
    #: the lab cannot see). Set: any other path, the system bundle's aside, stands for a missing
    #: file, as a typo would on the real host.
    ca_files: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Note:
    """One change an adapter made, said in one line: where (a file beside the config, ``""`` for the
    config itself; a line, ``None`` for a change to the whole config) and what."""

    file: str
    line: int | None
    text: str

    @classmethod
    def whole(cls, text: str) -> Note:
        """A note on the whole config (no line)."""
        return cls("", None, text)

    def __str__(self) -> str:
        if self.line is None:
            return self.text
        return f"{self.file} line {self.line}: {self.text}" if self.file else f"line {self.line}: {self.text}"


def ordered(notes: list[Note], *, unnumbered_last: bool = False, files: tuple[str, ...] = ()) -> list[Note]:
    """*notes* without repeats, by file (the config, then *files* in that order, then any other by
    name) and line; notes without a line first (or last), each group in the order it was said."""
    others = sorted({n.file for n in notes} - {"", *files})
    rank = {f: i for i, f in enumerate(("", *files, *others))}

    def key(n: Note) -> tuple[int, int]:
        if n.line is None:
            return (len(rank), 0) if unnumbered_last else (0, 0)
        return (rank[n.file], n.line)

    return sorted(dict.fromkeys(notes), key=key)


@dataclass
class Adapted:
    """An adapted config and what was changed to make it run in the lab."""

    text: str
    notes: list[Note]
    upstreams: list[Upstream]
    listeners: dict[str, int] = field(default_factory=dict)
    #: The file name the adapted config needs (``caddy.json``: Caddy picks its adapter by name);
    #: ``""``: the driver's :attr:`~harness.proxies.base.Driver.config_name`.
    config_name: str = ""
    #: Further files the adapted config needs beside it (Traffic Server's remap.config): name -> text.
    extra_files: dict[str, str] = field(default_factory=dict)

    @property
    def adaptations(self) -> list[str]:
        """The notes as ``check`` shows them, one line each."""
        return [str(n) for n in self.notes]


@dataclass
class Run:
    """One ``adapt()`` of a config: the config, the lab's paths and ports, the upstream group probed
    (*focus*: its pool key, or None), and what the adapter says as it goes. Each adapter's own
    record (``_Run``) adds what it collects."""

    path: Path
    lab: LabPaths
    ports: Ports
    focus: str | None
    notes: list[Note] = field(default_factory=list)


class Ports:
    """Lab listen ports, one per original listener port, never one the seat uses."""

    def __init__(self, avoid: set[int] | None = None, first: int = 20000) -> None:
        self.avoid = set(avoid or ())
        self.next = first
        self.map: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        if key not in self.map:
            while self.next in self.avoid:
                self.next += 1
            self.map[key] = self.next
            self.next += 1
        return self.map[key]


#: The words of the note for a trusted-CA path that names no file of the host (see ``ca_files``).
ABSENT_CA = "does not exist on this host"


def trust_file(path: str, lab: LabPaths, notes: list[Note], *, directory: bool = False) -> str:
    """The lab file a trusted-CA path stands for, with the note saying so."""
    bundle = is_system_bundle(path)
    if lab.ca_files is not None and not bundle and _normal(path) not in {_normal(f) for f in lab.ca_files}:
        known = " or ".join(lab.ca_files) or "none"
        notes.append(Note.whole(f"{path} {ABSENT_CA} (its CA file: {known}); it stands for a missing file"))
        return str(lab.run_dir / "absent" / PurePosixPath(_normal(path)).name)
    pair = (lab.bundle_dir, lab.ca_dir) if directory else (lab.bundle, lab.ca)
    new = pair[0] if bundle else pair[1]
    what = "the lab's system bundle (internal root + a 'public' CA)" if bundle else "the lab's internal root"
    notes.append(Note.whole(f"{path} stands for {what}"))
    return str(new)


def _normal(path: str) -> str:
    """A path as the proxy opens it: quotes off, ``//`` and ``.`` folded."""
    return posixpath.normpath(path.strip().strip("\"'"))


def crl_file(ref: str, config: Path, lab: LabPaths, notes: list[Note]) -> str:
    """The lab CRL file a config's CRL reference (``proxy_ssl_crl``, ``crl-file``, ...) stands for.

    Its scope is kept where it can be known: a file of that name beside the config holding one CRL
    stands for the intermediate's CRL alone (a proxy that checks the whole chain then misses the
    root's: the config's own mistake, judged as the proxy judges it); otherwise one CRL per CA of the
    chain. ``check`` runs ``revoked`` whenever the adapted config names a lab CRL."""
    if lab.crl_chain is None or lab.crl_leaf is None:
        notes.append(Note.whole(f"{ref} dropped (no lab CRL here; revocation is not tested)"))
        return ""
    count = _crl_count(config.parent / Path(ref.strip("\"'")).name)
    if count == 1:
        notes.append(
            Note.whole(
                f"{ref} (one CRL, beside the config) stands for the lab intermediate's CRL alone; revoked is run"
            )
        )
        return str(lab.crl_leaf)
    notes.append(
        Note.whole(f"{ref} stands for the lab's CRLs of every CA in the chain (root and intermediate); revoked is run")
    )
    return str(lab.crl_chain)


def _crl_count(path: Path) -> int | None:
    """How many PEM CRLs the regular file *path* holds (never following a link), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    return data.count(b"-----BEGIN X509 CRL-----") or None


#: How deep a user's config may nest (YAML, JSON, TOML): real ones stay under 30 levels; the
#: parsers and the adapters' walkers recurse, so a deeper file must stop here, in one line.
MAX_DEPTH = 100
#: How many nodes a YAML file may expand to through its aliases (an "alias bomb" expands a few
#: lines into billions of nodes); real configs that reuse anchors stay far below.
MAX_YAML_NODES = 200_000
_CONFIG_LIMIT = 2_000_000


def read_config(path: Path, *, limit: int = _CONFIG_LIMIT) -> str:
    """The text of a user's config, or a one-line :class:`ConfigError`."""
    where = str(path)
    raw = read_input(
        path, error=ConfigError, kind="a proxy config", limit=limit, directory_hint="pass the config file itself"
    )
    if b"\0" in raw:
        raise ConfigError(f"{where}: binary file; pass a text proxy config")
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        raise ConfigError(f"{where}: empty file")
    return text


def check_yaml(text: str, where: str, yaml: Any) -> None:
    """Refuse, before anything builds it, a YAML text nested deeper than :data:`MAX_DEPTH` or
    expanding through aliases to more than :data:`MAX_YAML_NODES` nodes.

    Reads PyYAML's event stream (flat: no recursion, no object built): each collection's
    expanded size is summed as it closes, an anchor remembers its size, an alias adds it.
    Raises :class:`ConfigError`; a YAML syntax error propagates (``yaml.YAMLError``)."""
    sizes = [0]  # expanded node count of each open collection (the document at the bottom)
    anchors: list[str | None] = []
    anchored: dict[str, int] = {}
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, yaml.CollectionStartEvent):
            sizes.append(1)
            anchors.append(ev.anchor)
            if len(anchors) > MAX_DEPTH:
                raise ConfigError(
                    f"{where}: line {ev.start_mark.line + 1}: nested more than {MAX_DEPTH} levels "
                    "deep; no proxy config needs that many"
                )
        elif isinstance(ev, yaml.CollectionEndEvent):
            size, anchor = sizes.pop(), anchors.pop()
            if anchor:
                anchored[anchor] = size
            sizes[-1] += size
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor:
                anchored[ev.anchor] = 1
            sizes[-1] += 1
        elif isinstance(ev, yaml.AliasEvent):
            sizes[-1] += anchored.get(ev.anchor, 1)
            if sum(sizes) > MAX_YAML_NODES:
                raise ConfigError(
                    f"{where}: line {ev.start_mark.line + 1}: its YAML aliases (*{ev.anchor}) expand it to more "
                    f"than {MAX_YAML_NODES} nodes; write the repeated parts out, or reuse fewer of them"
                )


def check_depth(data: Any, where: str) -> None:
    """Refuse parsed data (JSON, TOML) nested deeper than :data:`MAX_DEPTH` (iteratively)."""
    todo = [(data, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; no proxy config needs that many")
        if isinstance(node, dict):
            todo.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            todo.extend((v, depth + 1) for v in node)


def named_file(config: Path, value: str, what: str) -> PurePosixPath:
    """Where a file that *config* names (its setting *what*) may be read from: beside *config*.

    A config is someone else's (a pull request checked in CI, a challenge attempt) and the
    adapter runs as the user, often root: it reads no path on the config's say-so. A name
    without ``..`` stands for the longest tail of it found in *config*'s directory
    (``/etc/traefik/dynamic/api.yml`` -> ``dynamic/api.yml`` there, else ``api.yml``). Returns
    the path relative to that directory; a ``..`` is a :class:`ConfigError` naming the setting."""
    p = PurePosixPath(value.replace("\\", "/"))
    if ".." in p.parts:
        raise ConfigError(
            f"{config}: {what} {value!r} leaves the config's directory (..); trustlab reads only files "
            f"beside the config: copy it next to {config.name} and name it relatively"
        )
    parts = [x for x in p.parts if x not in (".", "/")]
    if not parts:
        raise ConfigError(f"{config}: {what} {value!r} names no file")
    # Written for a deployment (/etc/traefik/dynamic/api.yml next to /etc/traefik/traefik.yml) and
    # shipped as a tree (traefik.yml + dynamic/api.yml): the longest tail of the path that is there
    # beside the config, else the file of that name there (issue 24).
    for i in range(len(parts)):
        tail = PurePosixPath(*parts[i:])
        if os.path.lexists(config.parent / tail):
            return tail
    return PurePosixPath(parts[-1])


def open_named(config: Path, rel: PurePosixPath, value: str, what: str, *, directory: bool = False) -> int:
    """Open *rel* (from :func:`named_file`) under *config*'s directory following no link at
    any level (``O_NOFOLLOW`` per component, ``O_NONBLOCK``): a link there may point anywhere
    on this host. Returns the descriptor; every refusal is a :class:`ConfigError` that names
    the setting and never shows the file's content."""
    from harness.runtimes.sandbox import open_planted

    base = config.parent
    try:
        fd = open_planted(base / rel, base)
    except FileNotFoundError:
        raise ConfigError(
            f"{config}: {what} {value} not found beside the config ({base / rel}); put it next to "
            f"{config.name}, or pass the dynamic file itself"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ConfigError(
                f"{config}: {what} {value} is a symbolic link (or under one); trustlab reads only files beside "
                "the config, never through a link: copy the file itself there"
            ) from None
        raise ConfigError(f"{config}: {what} {value}: cannot read ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    want = stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)
    if not want:
        os.close(fd)
        kind = "a directory" if directory else "a regular file"
        raise ConfigError(f"{config}: {what} {value} is not {kind}; pass {kind} beside the config")
    return fd


def read_named(config: Path, fd: int, shown: str, *, limit: int = _CONFIG_LIMIT) -> str:
    """The text of the regular file open at *fd* (closed here), a config the user's config
    names; errors as :func:`read_config`'s, naming *shown*."""
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise ConfigError(f"{shown}: larger than {limit // 1_000_000} MB: too large for a proxy config")
    if b"\0" in raw:
        raise ConfigError(f"{shown}: binary file; pass a text proxy config")
    return raw.decode("utf-8", "replace")


Adapt = Callable[..., Adapted]


def split_url(url: str) -> tuple[str, str, int | None, str]:
    """scheme, host, port (None when absent), path of a proxy_pass URL."""
    m = re.match(r"^(\w+)://(\[[^\]]+\]|[^/:]+)(?::(\d+))?(/.*)?$", url)
    if not m:
        return "", url, None, ""
    return (m.group(1).lower(), m.group(2).strip("[]"), int(m.group(3)) if m.group(3) else None, m.group(4) or "")


def split_hostport(value: str, default: int) -> tuple[str, int]:
    m = re.match(r"^(\[[^\]]+\]|[^:]+)(?::(\d+))?$", value)
    if not m:
        return value, default
    return m.group(1).strip("[]"), int(m.group(2)) if m.group(2) else default


def regex_sample(pattern: str) -> str | None:
    """A string that *pattern* (a PCRE location/ProxyPassMatch regex) matches, or None.

    Literals are kept, classes give their first member (``[0-9]`` -> ``0``), quantifiers their
    minimum (``+`` once), groups their first alternative; the caller re-checks the result.
    """
    p, i = pattern, 0
    escapes = {"d": "0", "w": "a", "s": "-", "D": "a", "W": "-", "S": "a", "b": "", "B": "", "A": "", "z": "", "Z": ""}

    def alt() -> str:
        nonlocal i
        out = seq()
        while i < len(p) and p[i] == "|":
            i += 1
            seq()
        return out

    def seq() -> str:
        nonlocal i
        out = ""
        while i < len(p) and p[i] not in "|)":
            piece = atom()
            if i < len(p) and p[i] in "*+?{":
                if p[i] == "{":
                    j = p.index("}", i)
                    n = int(p[i + 1 : j].split(",")[0] or 0)
                    i = j + 1
                else:
                    n = 1 if p[i] == "+" else 0
                    i += 1
                if i < len(p) and p[i] in "?+":
                    i += 1
                piece *= n
            out += piece
        return out

    def atom() -> str:
        nonlocal i
        c = p[i]
        if c == "(":
            i += 1
            if p.startswith("?", i):
                m = re.match(r"\?(?:P?<[^>]+>|[:=!imsx-]*:?)", p[i:])
                i += len(m.group(0)) if m else 1
            s = alt()
            i += 1
            return s
        if c == "[":
            j = i + 1
            if j < len(p) and p[j] == "^":
                j += 1
            if j < len(p) and p[j] == "]":
                j += 1
            while j < len(p) and p[j] != "]":
                j += 2 if p[j] == "\\" else 1
            body, i = p[i + 1 : j], j + 1
            if body.startswith("^"):
                return next((ch for ch in "xa0_-" if ch not in body), "x")
            if body.startswith("\\") and len(body) > 1:
                return escapes.get(body[1], body[1])
            return body[:1]
        if c == "\\":
            i += 2
            e = p[i - 1] if i - 1 < len(p) else ""
            return escapes.get(e, e)
        i += 1
        if c == ".":
            return "a"
        if c in "^$":
            return ""
        return c

    try:
        sample = alt()
    except (ValueError, IndexError):
        return None
    return sample


def probe_path(pattern: str, how: str = "prefix", *, flags: int = 0) -> str | None:
    """The request path the lab sends to reach a route that matches *pattern* *how*: ``prefix``
    (nginx ``location /api``, ``ProxyPass /api``, Envoy ``prefix``), ``exact`` or ``regex``; None
    when no path the lab can build matches.

    The worker appends a unique tail to a path ending in ``/`` (``trustlab-probe/...``): a prefix
    is sent as a directory, an exact path ending in ``/`` gets a query so that it stays exact."""
    if how == "prefix":
        return pattern if pattern.endswith("/") else pattern + "/"
    if how == "exact":
        return pattern + ("?trustlab-probe" if pattern.endswith("/") else "")
    if how == "regex":
        return regex_probe_path(pattern, flags=flags)
    raise ValueError(f"probe_path: unknown match {how!r}")


def regex_probe_path(pattern: str, *, flags: int = 0) -> str | None:
    """A request path a regex location sends to its upstream (see the worker's path rule)."""
    from harness.configs.matchers import regex_example

    tail = "trustlab-probe/proxy/legit/0"
    pattern = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)  # PCRE named groups, Python spelling
    # The literal-first sample, else one from the pattern's own syntax tree (back-references,
    # lookaheads: harness.configs.matchers).
    for sample in (regex_sample(pattern), regex_example(pattern, start="/", icase=bool(flags & re.I))):
        if sample is None:
            continue
        base = sample if sample.startswith("/") else "/" + sample
        for cand, checked in ((base.rstrip("/") + "/", base.rstrip("/") + "/" + tail), (base, base)):
            try:
                if re.search(pattern, checked, flags):
                    return cand if cand.endswith("/") else cand + "?trustlab-probe"
            except re.error:
                return None
    return None
