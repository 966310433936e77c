"""A user's Traefik configuration, parsed once into one tree that ``check`` and ``audit`` both read.

Input: the static configuration file (YAML or TOML) with the dynamic file(s) its
``providers.file`` names (``filename``, or every ``.yml``/``.yaml``/``.toml`` of ``directory``),
or a dynamic configuration file alone. A named file is read only beside the static file (an
absolute path stands for the file of that name there; no ``..``, no symbolic link at any level):
the config is someone else's and the adapter may run as root (issue 26).

Kept exactly: every setting that decides backend trust: the static ``serversTransport``
(``insecureSkipVerify``, ``rootCAs`` (paths excepted), ``maxIdleConnsPerHost`` ...), every dynamic
``http.serversTransports.<name>`` (``insecureSkipVerify``, ``rootCAs`` (paths excepted),
``serverName``, ``peerCertURI``, ``disableHTTP2`` ...), each service's ``loadBalancer`` (server
URLs, ``serversTransport``, ``passHostHeader``), routers (rules, entry points, services,
middlewares: only those that rewrite the request or response, by allow-list) and the entry
points' own ``http`` settings. Changed, each said in one line:
``rootCAs`` stand for the lab's internal root (or its system bundle, for an OS bundle path);
transport and router client certificates are lab-minted; entry points listen on
``127.0.0.1:<lab port>``; ``healthCheck`` is dropped (health checks would reach the seat between
cells); ACME resolvers, other providers (Docker, Kubernetes ...), the API, dashboard, metrics,
tracing, access log and plugins are dropped; the log is the lab's. The lab adds one router,
``trustlab-ready`` (``noop@internal`` on an entry point of its own), which it waits for before
the first request: Traefik listens before it applies its routers.

The adapted file is written as JSON (valid YAML) and read by Traefik twice, as static and as
dynamic configuration, like the lab's own template (``labs/traefik/traefik.yml.tmpl``).
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    named_file,
    open_named,
    ordered,
    read_config,
    read_named,
    trust_file,
)
from harness.configs.matchers import Built, Term, unshadowed_request
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

#: Top-level keys of the static configuration (anything else at the top is dynamic or unknown).
STATIC_KEYS = (
    "global",
    "entrypoints",
    "providers",
    "log",
    "accesslog",
    "api",
    "metrics",
    "tracing",
    "ping",
    "serverstransport",
    "tcpserverstransport",
    "certificatesresolvers",
    "experimental",
    "hostresolver",
    "spiffe",
    "core",
    "ocsp",
    "pilot",
)
DYNAMIC_KEYS = ("http", "tcp", "udp", "tls")
#: Static keys the lab drops (they reach out of the lab, or are the host's own business).
_STATIC_DROP = (
    "api",
    "metrics",
    "tracing",
    "ping",
    "accesslog",
    "certificatesresolvers",
    "experimental",
    "pilot",
    "hostresolver",
    "spiffe",
    "ocsp",
    "log",
    "global",
    "providers",
    "tcpserverstransport",
)
#: Middlewares kept (an allow-list): they only rewrite the request or the response. Every other
#: kind is dropped from the routers (and chains) that use it, with a note: it calls out of the
#: lab (forwardAuth, errors), runs code (plugin), replays or delays requests (retry,
#: circuitBreaker, rateLimit, inFlightReq, buffering), or asks for credentials the probe does not
#: have (basicAuth, digestAuth); none decides whom Traefik trusts upstream (issue 26).
_MIDDLEWARE_KEEP = (
    "addprefix",
    "stripprefix",
    "stripprefixregex",
    "replacepath",
    "replacepathregex",
    "headers",
    "chain",
    "redirectscheme",
    "redirectregex",
    "ipallowlist",
    "ipwhitelist",
    "compress",
    "contenttype",
    "passtlsclientcert",
)
READY = "trustlab-ready"


@dataclass
class Tree:
    """One Traefik configuration: its static part, its (merged) dynamic part, and where each
    setting was written (``line("http", "serversTransports", "t", "insecureSkipVerify")``)."""

    path: Path
    static: dict[str, Any]
    dynamic: dict[str, Any]
    files: list[Path]
    #: Lower-cased key path -> (file, line).
    lines: dict[tuple[str, ...], tuple[str, int]] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    #: The top-level keys of the file given, as written (unknown ones too: ``serverTransport``).
    top: tuple[str, ...] = ()

    def line(self, *keys: str) -> int:
        """The line a setting was written on (its closest written parent's, else 1)."""
        path = tuple(k.lower() for k in keys)
        while path:
            if path in self.lines:
                return self.lines[path][1]
            path = path[:-1]
        return 1

    def at(self, *keys: str) -> str:
        """``line N`` in the file given, ``other.yml line N`` in a dynamic file it names."""
        file = self.where(*keys)
        line = f"line {self.line(*keys)}"
        return line if file == str(self.path) else f"{Path(file).name} {line}"

    def note(self, text: str, *keys: str) -> Note:
        """*text* said at the line a setting was written on (in the file given, or a dynamic file)."""
        file = self.where(*keys)
        return Note("" if file == str(self.path) else Path(file).name, self.line(*keys), text)

    def where(self, *keys: str) -> str:
        path = tuple(k.lower() for k in keys)
        while path:
            if path in self.lines:
                return self.lines[path][0]
            path = path[:-1]
        return str(self.path)

    # -- the trust-deciding facts -------------------------------------------------------
    def transports(self) -> dict[str, dict[str, Any]]:
        return _map(get(self.dynamic, "http", "serversTransports"))

    def services(self) -> dict[str, dict[str, Any]]:
        return _map(get(self.dynamic, "http", "services"))

    def routers(self) -> dict[str, dict[str, Any]]:
        return _map(get(self.dynamic, "http", "routers"))

    def static_transport(self) -> dict[str, Any]:
        return _map(get(self.static, "serversTransport"))

    def transport_of(self, service: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The transport a service uses: (its name, its settings); the static one when it names none.

        A dynamic transport does not inherit the static one's settings (traefik/traefik#10612)."""
        name = get(service, "loadBalancer", "serversTransport")
        if not isinstance(name, str) or not name:
            return None, self.static_transport()
        return name, _map(self.transports().get(name.removesuffix("@file")))

    def https_servers(self) -> Iterator[tuple[str, int, str, dict[str, Any]]]:
        """(service name, server index, URL, service) for every ``https://`` server."""
        for sname, svc in self.services().items():
            servers = get(svc, "loadBalancer", "servers")
            for i, server in enumerate(servers if isinstance(servers, list) else []):
                url = get(server, "url")
                if isinstance(url, str) and url.lower().startswith("https://"):
                    yield sname, i, url, svc


def get(node: Any, *keys: str) -> Any:
    """``node[k1][k2]...``, matching keys case-insensitively (Traefik's own rule); ``None`` if absent."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = next((v for k, v in node.items() if str(k).lower() == key.lower()), None)
    return node


def _map(node: Any) -> dict[str, Any]:
    return node if isinstance(node, dict) else {}


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _files(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value] if isinstance(value, list) else []


# -- parsing --------------------------------------------------------------------------------
def _load(path: Path, text: str | None = None) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[str, int]]]:
    text = read_config(path) if text is None else text
    where = str(path)
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: invalid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; no config needs that many") from None
        check_depth(data, where)
        return data, _toml_lines(text, where)
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the project's dependencies
        raise ConfigError(f"{where}: reading YAML needs PyYAML; run: pip install pyyaml") from None
    try:
        check_yaml(text, where, yaml)  # depth and alias expansion bounded before anything is built
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        # PyYAML's own message quotes the file around the error (a snippet): say where and
        # what only, so an error never shows more of a file than its line number.
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a Traefik configuration is a mapping of keys (entryPoints, http ...)")
    lines: dict[tuple[str, ...], tuple[str, int]] = {}

    def walk(n: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = (*prefix, str(k.value).lower())
                lines.setdefault(key, (where, k.start_mark.line + 1))
                walk(v, key)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                key = (*prefix, str(i))
                lines.setdefault(key, (where, v.start_mark.line + 1))
                walk(v, key)

    walk(node, ())
    return data, lines


def _toml_lines(text: str, where: str) -> dict[tuple[str, ...], tuple[str, int]]:
    """Where each key of a TOML file is written (tables, arrays of tables, dotted keys)."""
    lines: dict[tuple[str, ...], tuple[str, int]] = {}
    table: tuple[str, ...] = ()
    counts: dict[tuple[str, ...], int] = {}

    def split(dotted: str) -> tuple[str, ...]:
        return tuple(p.strip().strip("\"'").lower() for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', dotted))

    for no, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if m := re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", s):
            base = split(m.group(1))
            counts[base] = counts.get(base, -1) + 1
            table = (*base, str(counts[base]))
            lines.setdefault(base, (where, no))
            lines.setdefault(table, (where, no))
        elif m := re.match(r"^\[\s*([^\]]+?)\s*\]", s):
            table = split(m.group(1))
            for i in range(1, len(table) + 1):
                lines.setdefault(table[:i], (where, no))
        elif m := re.match(r"^([A-Za-z0-9_\-.\"']+)\s*=", s):
            key = (*table, *split(m.group(1)))
            for i in range(len(table) + 1, len(key) + 1):
                lines.setdefault(key[:i], (where, no))
    return lines


def parse(path: Path, dynamic: tuple[Path, ...] = ()) -> Tree:
    """The configuration at *path* (static or dynamic), the dynamic files it names, and those
    *dynamic* names (``check --dynamic``: the user's own, read as given, never through a link)."""
    path = Path(path)
    data, lines = _load(path)
    top = {str(k).lower() for k in data}
    if not top & set(STATIC_KEYS) and not top & set(DYNAMIC_KEYS):
        raise ConfigError(
            f"{path}: neither a static (entryPoints, providers, serversTransport) nor a dynamic "
            "(http) Traefik configuration"
        )
    static = {k: v for k, v in data.items() if str(k).lower() in STATIC_KEYS}
    tree = Tree(path, static, {}, [path], dict(lines), top=tuple(str(k) for k in data))
    for key in data:
        if str(key).lower() == "servertransport":
            tree.notes.append(
                tree.note(f"`{key}` is not a Traefik key (serversTransport): Traefik ignores it", str(key))
            )
    file_provider = get(static, "providers", "file")
    named = _provider_files(path, file_provider) if isinstance(file_provider, dict) else []
    itself = path.resolve()
    if not static or any(n.resolve() == itself for n, _ in named):
        _merge_dynamic(tree, data, path)  # a dynamic file given alone, or a file the provider reads
    elif top & set(DYNAMIC_KEYS):
        tree.notes.append(
            Note.whole(
                f"{path}: its dynamic sections (http ...) are not read by Traefik: providers.file does not "
                "name this file"
            )
        )
    seen = {itself} | {n.resolve() for n, _ in named}
    for given in dynamic:
        text = _read_given(Path(given))
        if Path(given).resolve() in seen:
            continue  # the provider names it already
        seen.add(Path(given).resolve())
        named.append((Path(given), text))
        tree.notes.append(Note.whole(f"{given}: read as a dynamic file (--dynamic)"))
    for name, text in named:
        if name.resolve() == itself:
            continue
        more, more_lines = _load(name, text)
        tree.files.append(name)
        for keys, where in more_lines.items():
            tree.lines.setdefault(keys, where)
        _merge_dynamic(tree, more, name)
    return tree


_DYNAMIC_SUFFIXES = (".yml", ".yaml", ".toml")


def _read_given(path: Path) -> str:
    """The text of a dynamic file named with ``--dynamic``: a regular file with a YAML or TOML
    name, opened without following a link (a link may point anywhere on this host)."""
    if not path.name.lower().endswith(_DYNAMIC_SUFFIXES):
        raise ConfigError(f"--dynamic {path}: not a .yml, .yaml or .toml file (Traefik reads no other)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"--dynamic {path}: no such file") from None
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise ConfigError(
            f"--dynamic {path}: {why}; trustlab reads only the file itself, never through a link"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"--dynamic {path}: not a regular file")
    return read_named(path, fd, f"--dynamic {path}")


def _provider_files(path: Path, provider: dict[str, Any]) -> list[tuple[Path, str]]:
    """The dynamic files ``providers.file`` names, read as the user's own: only beside the
    static file (no absolute path, no ``..``, no link at any level; see
    :func:`harness.configs.base.named_file`), each as (its path, its text)."""
    out: list[tuple[Path, str]] = []
    base = path.parent
    if isinstance(fn := get(provider, "filename"), str):
        what = "providers.file.filename"
        rel = named_file(path, fn, what)
        out.append((base / rel, read_named(path, open_named(path, rel, fn, what), str(base / rel))))
    if isinstance(dn := get(provider, "directory"), str):
        what = "providers.file.directory"
        rel = named_file(path, dn, what)
        dfd = open_named(path, rel, dn, what, directory=True)
        try:
            for entry in sorted(os.listdir(dfd)):
                if not entry.lower().endswith(_DYNAMIC_SUFFIXES):
                    continue
                try:
                    fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
                except OSError as exc:
                    why = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
                    raise ConfigError(
                        f"{path}: {what} {dn}: {entry} {why}; trustlab reads only regular files beside the "
                        "config, never through a link: copy the file itself there"
                    ) from None
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    continue  # a subdirectory or a socket: Traefik reads files only
                shown = base / rel / entry
                out.append((shown, read_named(path, fd, str(shown))))
        finally:
            os.close(dfd)
    return out


def _merge_dynamic(tree: Tree, data: dict[str, Any], where: Path) -> None:
    for key, value in data.items():
        low = str(key).lower()
        if low not in DYNAMIC_KEYS or not isinstance(value, dict):
            continue
        section = tree.dynamic.setdefault(low, {})
        for kind, entries in value.items():
            if isinstance(entries, dict):
                section.setdefault(kind, {}).update(entries)
            else:
                section[kind] = entries


# -- check: adapt ---------------------------------------------------------------------------
def adapt(
    path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None, dynamic: tuple[Path, ...] = ()
) -> Adapted:
    """The configuration at *path* made runnable in the lab (see the module docstring); *dynamic*:
    dynamic files named on the command line (``check --dynamic``)."""
    tree = parse(path, dynamic)
    notes = list(tree.notes)
    run = str(lab.run_dir)
    entrypoints = _entrypoints(tree)
    out: dict[str, Any] = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {},
        "providers": {"providersThrottleDuration": "0s", "file": {"filename": f"{run}/traefik.yml", "watch": False}},
        "log": {"level": "INFO", "noColor": True, "filePath": f"{run}/error.log"},
    }
    listeners = _lab_entrypoints(tree, entrypoints, ports, out["entryPoints"], notes)
    out.update(_static(tree, lab, notes))
    out["http"] = _http(tree, lab, notes, focus)
    for key in ("tcp", "udp"):
        if key in tree.dynamic:
            notes.append(Note.whole(f"{key} routers and services dropped (the lab checks HTTP services)"))
    if "tls" in tree.dynamic or _any_tls(out):
        out["tls"] = {"certificates": [{"certFile": str(lab.cert), "keyFile": str(lab.key)}]}
        if "tls" in tree.dynamic:
            notes.append(
                Note.whole(
                    "tls section (certificates, options, stores) replaced by a lab-minted certificate "
                    "for the client side"
                )
            )
    upstreams = _upstreams(tree, entrypoints)
    notes.append(
        Note.whole(
            "the log is the lab's (INFO, error.log in the run directory): a refusal is logged as "
            "'500 Internal Server Error error=\"tls: failed to verify certificate: ...\"'"
        )
    )
    text = json.dumps(out, indent=2) + "\n"
    return Adapted(text=text, notes=ordered(notes), upstreams=upstreams, listeners=listeners)


def _lab_entrypoints(
    tree: Tree, entrypoints: dict[str, Any], ports: Ports, out: dict[str, Any], notes: list[Note]
) -> dict[str, int]:
    """The lab's readiness entry point, then each entry point on its lab port (into *out*), without
    ACME; the lab port of each."""
    listeners: dict[str, int] = {READY: ports(READY)}
    out[READY] = {"address": f"127.0.0.1:{listeners[READY]}"}
    for name, ep in entrypoints.items():
        listeners[name] = ports(name)
        new = {k: v for k, v in _map(ep).items() if str(k).lower() != "address"}
        tls = get(new, "http", "tls")
        if isinstance(tls, dict) and (get(tls, "certResolver") or get(tls, "domains")):
            for k in [k for k in tls if str(k).lower() in ("certresolver", "domains")]:
                del tls[k]
            notes.append(
                tree.note(
                    f"entry point {name}: ACME certResolver dropped (the lab's client side uses a "
                    "lab-minted certificate)",
                    "entryPoints",
                    name,
                )
            )
        new["address"] = f"127.0.0.1:{listeners[name]}"
        was = get(ep, "address") or "(default :80)"
        notes.append(tree.note(f"entry point {name} {was} -> 127.0.0.1:{listeners[name]}", "entryPoints", name))
        out[name] = new
    return listeners


def _keep_misplaced(tree: Tree, key: Any, value: Any, out: dict[str, Any], notes: list[Note]) -> None:
    """Traefik refuses an unknown key inside a known section (`field not found`): a trust setting
    written in a dropped section (traefik/traefik#4207) is kept, so the lab refuses it too."""
    if misplaced := _misplaced(value):
        out[key] = misplaced
        notes.append(
            tree.note(
                f"{key}: {', '.join(_leaves(misplaced))} kept (not a {key} setting: Traefik refuses to start on it)",
                str(key),
            )
        )


def _static(tree: Tree, lab: LabPaths, notes: list[Note]) -> dict[str, Any]:
    """What the lab keeps of the static configuration besides its entry points: the servers
    transport (trust files the lab's), and a trust setting written where Traefik refuses it."""
    out: dict[str, Any] = {}
    for key, value in tree.static.items():
        low = str(key).lower()
        if low == "serverstransport":
            out["serversTransport"] = _transport(value, ("serversTransport",), tree, lab, notes)
        elif low == "global":
            notes.append(
                tree.note(
                    "global -> checkNewVersion and sendAnonymousUsage false (nothing phones home from the lab)",
                    str(key),
                )
            )
        elif low in _STATIC_DROP and low not in ("log", "providers"):
            notes.append(tree.note(f"{key} dropped (it reaches out of the lab)", str(key)))
            _keep_misplaced(tree, key, value, out, notes)
        elif low == "providers":
            _providers(tree, key, value, notes)
    return out


def _providers(tree: Tree, key: str, value: Any, notes: list[Note]) -> None:
    if get(value, "file") is not None:
        notes.append(
            tree.note(
                "providers.file -> the adapted file itself (its dynamic part merged in), watch off, "
                "providersThrottleDuration 0s",
                str(key),
                "file",
            )
        )
    others = [k for k in _map(value) if str(k).lower() not in ("file", "providersthrottleduration")]
    if others:
        notes.append(
            tree.note(
                f"providers {', '.join(map(str, others))} dropped (the lab reads the file provider's "
                "configuration only)",
                str(key),
            )
        )


def _http(tree: Tree, lab: LabPaths, notes: list[Note], focus: str | None) -> dict[str, Any]:
    """The dynamic ``http`` section for the lab: routers (and the lab's readiness router), services,
    transports and the middlewares that only rewrite."""
    http = _map(tree.dynamic.get("http"))
    middlewares, dropped = _middlewares(tree, http, notes)
    routers = _routers(tree, http, dropped, notes)
    services = {sname: _service(sname, svc, tree, notes, focus) for sname, svc in _map(get(http, "services")).items()}
    transports = {
        name: _transport(t, ("http", "serversTransports", name), tree, lab, notes)
        for name, t in _map(get(http, "serversTransports")).items()
    }
    replaced = ("routers", "services", "serverstransports", "middlewares")
    new_http: dict[str, Any] = {k: v for k, v in http.items() if str(k).lower() not in replaced}
    new_http["routers"] = routers
    new_http["services"] = services
    if transports:
        new_http["serversTransports"] = transports
    if middlewares:
        new_http["middlewares"] = {n: m for n, m in middlewares.items() if n not in dropped}
    return new_http


def _middlewares(tree: Tree, http: dict[str, Any], notes: list[Note]) -> tuple[dict[str, Any], dict[str, str]]:
    """The middlewares (a copy: a kept chain loses its dropped links), and those dropped (name -> kinds)."""
    middlewares = copy.deepcopy(_map(get(http, "middlewares")))
    dropped = {
        n: ", ".join(str(k) for k in m) if isinstance(m, dict) else "?"
        for n, m in middlewares.items()
        if not isinstance(m, dict) or not m or any(str(k).lower() not in _MIDDLEWARE_KEEP for k in m)
    }
    for n, kinds in dropped.items():
        notes.append(
            tree.note(
                f"middleware {n} ({kinds}) dropped: only middlewares that rewrite the request or "
                "response are kept (it calls out, runs code, replays or delays requests, or asks for "
                "credentials)",
                "http",
                "middlewares",
                n,
            )
        )
    for n, m in middlewares.items():
        chain = get(m, "chain")
        links = get(chain, "middlewares")
        if n not in dropped and isinstance(chain, dict) and isinstance(links, list):
            key = next(k for k in chain if str(k).lower() == "middlewares")
            chain[key] = [x for x in links if str(x).removesuffix("@file") not in dropped]
    return middlewares, dropped


def _routers(tree: Tree, http: dict[str, Any], dropped: dict[str, str], notes: list[Note]) -> dict[str, Any]:
    """The routers without ACME and dropped middlewares, and the lab's readiness router."""
    routers = {k: dict(v) for k, v in _map(get(http, "routers")).items() if isinstance(v, dict)}
    for rname, router in routers.items():
        tls = get(router, "tls")
        if isinstance(tls, dict):
            for k in [k for k in tls if str(k).lower() in ("certresolver", "domains")]:
                del tls[k]
                notes.append(
                    tree.note(
                        f"router {rname}: tls.{k} dropped (the lab's client side uses a lab-minted certificate)",
                        "http",
                        "routers",
                        rname,
                        str(k),
                    )
                )
        mws = get(router, "middlewares")
        gone = sorted(dropped.keys() & {str(m).removesuffix("@file") for m in mws}) if isinstance(mws, list) else []
        if gone:
            key = next(k for k in router if str(k).lower() == "middlewares")
            router[key] = [m for m in mws if str(m).removesuffix("@file") not in dropped]
            notes.append(tree.note(f"router {rname}: middlewares {', '.join(gone)} dropped", "http", "routers", rname))
    routers[READY] = {
        "rule": "Path(`/trustlab-ready`)",
        "entryPoints": [READY],
        "service": "noop@internal",
        "priority": 1000000,
    }
    notes.append(
        Note.whole(
            f"router {READY} (noop@internal on its own entry point) added: the lab waits for it, "
            "since Traefik listens before it applies its routers"
        )
    )
    return routers


_TRUST_KEYS = ("insecureskipverify", "rootcas", "servername", "serverstransport")


def _misplaced(value: Any) -> dict[str, Any]:
    """The trust settings written inside a section that has no such setting (kept as they are)."""
    found: dict[str, Any] = {}
    for k, v in _map(value).items():
        if str(k).lower() in _TRUST_KEYS:
            found[k] = v
        elif isinstance(v, dict) and (inner := _misplaced(v)):
            found[k] = inner
    return found


def _leaves(node: dict[str, Any], prefix: str = "") -> list[str]:
    return [
        x for k, v in node.items() for x in (_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    ]


def _entrypoints(tree: Tree) -> dict[str, Any]:
    """The static entry points, or (a dynamic file alone) the ones its routers name (``web`` if none)."""
    eps = _map(get(tree.static, "entryPoints"))
    if eps:
        return {k: v for k, v in eps.items() if k != READY}
    named: dict[str, Any] = {}
    for router in tree.routers().values():
        for ep in _files(get(router, "entryPoints")):
            named.setdefault(ep, {})
    return named or {"web": {}}


def _transport(value: Any, keys: tuple[str, ...], tree: Tree, lab: LabPaths, notes: list[Note]) -> dict[str, Any]:
    new: dict[str, Any] = {}
    for k, v in _map(value).items():
        low = str(k).lower()
        if low == "rootcas":
            files = []
            for f in _files(v):
                said: list[Note] = []
                files.append(trust_file(f, lab, said))
                notes += [tree.note(f"{'.'.join(keys)}.rootCAs: {n}", *keys, str(k)) for n in said]
            new[k] = files
        elif low == "certificates":
            new[k] = [{"certFile": str(lab.cert), "keyFile": str(lab.key)}]
            notes.append(
                tree.note(f"{'.'.join(keys)}.certificates replaced by a lab-minted client certificate", *keys, str(k))
            )
        elif low == "spiffe":
            notes.append(
                tree.note(f"{'.'.join(keys)}.spiffe dropped (no SPIFFE workload API in the lab)", *keys, str(k))
            )
        else:
            new[k] = v
    return new


def _service(sname: str, svc: Any, tree: Tree, notes: list[Note], focus: str | None) -> Any:
    if not isinstance(svc, dict):
        return svc
    new = json.loads(json.dumps(svc, default=str))
    lb = get(new, "loadBalancer")
    if not isinstance(lb, dict):
        return new
    for k in [k for k in lb if str(k).lower() == "healthcheck"]:
        del lb[k]
        notes.append(
            tree.note(
                f"service {sname}: healthCheck dropped (health checks would reach the seat between cells)",
                "http",
                "services",
                sname,
                "loadBalancer",
                str(k),
            )
        )
    servers = get(lb, "servers")
    if focus and focus.startswith(f"{sname}|") and isinstance(servers, list) and len(servers) > 1:
        index = int(focus.split("|", 1)[1])
        key = next(k for k in lb if str(k).lower() == "servers")
        lb[key] = [servers[index]]
        notes.append(Note.whole(f"service {sname}: only server {index + 1} of {len(servers)} kept while it is probed"))
    return new


def _any_tls(out: dict[str, Any]) -> bool:
    routers = _map(get(out, "http", "routers"))
    return any(get(r, "tls") is not None for r in routers.values()) or any(
        get(ep, "http", "tls") is not None for ep in _map(out.get("entryPoints")).values()
    )


def _server_port(tree: Tree, sname: str, index: int, url: str) -> int:
    """The port of a service's server url (443 when it names none); a bad one is a ConfigError."""
    try:
        return urlsplit(url).port or 443
    except ValueError:
        raise ConfigError(
            f"{tree.where('http', 'services', sname)}: line "
            f"{tree.line('http', 'services', sname, 'loadBalancer', 'servers', str(index))}: "
            f"server url {url!r} has an invalid port"
        ) from None


def _upstreams(tree: Tree, entrypoints: dict[str, Any]) -> list[Upstream]:
    routers = tree.routers()
    ups: list[Upstream] = []
    for sname, index, url, svc in tree.https_servers():
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = _server_port(tree, sname, index, url)
        _, transport = tree.transport_of(svc)
        server_name = get(transport, "serverName")
        name = (
            host if not is_ip(host) else (server_name if isinstance(server_name, str) and server_name else BACKEND_NAME)
        )
        keys = ("http", "services", sname, "loadBalancer", "servers", str(index))
        line = tree.line(*keys)
        u = Upstream(
            label=f"service {sname} server {url} ({tree.at(*keys)})",
            host=host,
            port=port,
            line=line,
            name=name,
            pool=f"{sname}|{index}",
        )
        u.route, u.why_unroutable = _route(sname, routers, entrypoints)
        ups.append(u)
    return ups


def _routers_before(
    sname: str, rname: str, routers: dict[str, Any], entrypoints: dict[str, Any]
) -> list[tuple[str, str]]:
    """(name, rule) of the routers on router *rname*'s entry points that Traefik tries first
    (a higher priority) and that send requests elsewhere than service *sname*."""
    mine = _priority(routers[rname])
    eps_of = set(_files(get(routers[rname], "entryPoints")) or entrypoints)
    return [
        (name, str(get(r, "rule") or ""))
        for name, r in routers.items()
        if name != rname
        and _priority(r) > mine
        and str(get(r, "service") or "").removesuffix("@file") != sname
        and eps_of & set(_files(get(r, "entryPoints")) or entrypoints)
    ]


def _route(sname: str, routers: dict[str, Any], entrypoints: dict[str, Any]) -> tuple[Route | None, str]:
    """How a client request reaches service *sname*: the first router that names it whose rule
    the lab can build a matching request for."""
    why = f"no router sends requests to service {sname}"
    for rname, router in routers.items():
        target = get(router, "service")
        if not isinstance(target, str) or target.removesuffix("@file") != sname:
            continue
        rule = str(get(router, "rule") or "")
        built = rule_request(rule, _routers_before(sname, rname, routers, entrypoints))
        if isinstance(built, str):
            why = f"router {rname} rule {rule!r}: {built}"
            continue
        eps = _files(get(router, "entryPoints")) or list(entrypoints)
        eps = [e for e in eps if e in entrypoints]
        if not eps:
            why = f"router {rname} names entry points the configuration does not define"
            continue
        tls = get(router, "tls") is not None or get(entrypoints[eps[0]], "http", "tls") is not None
        return Route(eps[0], tls, built.host or PUBLIC_HOST, built.path, built.method, built.headers), ""
    return None, why


_TOKEN = re.compile(
    r"""\s*(?:(&&)|(\|\|)|(!)|(\()|(\))|([A-Za-z]+)\s*\(((?:\s*(?:`[^`]*`|"(?:[^"\\]|\\.)*")\s*,?)*)\s*\))"""
)
_ARG = re.compile(r'`([^`]*)`|"((?:[^"\\]|\\.)*)"')


def rule_request(rule: str, before: Sequence[tuple[str, str]] = ()) -> Built | str:
    """The request a router *rule* (Traefik v3 syntax; v2's ``Headers``/``Query(k=v)``/several
    values too) matches: ``&&``, ``||``, ``!`` and parentheses as Traefik reads them, and no router
    of *before* ((name, rule), tried first by Traefik) matches; or the reason the lab cannot send one."""
    alternatives = rule_alternatives(rule)
    if isinstance(alternatives, str):
        return alternatives
    taken = [(f"router {name}", rule_alternatives(other)) for name, other in before]
    return unshadowed_request(alternatives, taken, default_host=PUBLIC_HOST, none="no rule")


def _priority(router: Any) -> int:
    """Traefik's order: ``priority`` when set, else the rule's length (longest first)."""
    p = get(router, "priority")
    if isinstance(p, int) and p:
        return p
    return len(str(get(router, "rule") or ""))


def rule_alternatives(rule: str) -> list[list[Term]] | str:
    """*rule* as alternatives of terms (see :func:`rule_request`), or why it cannot be read."""
    if not rule.strip():
        return [[]]
    toks: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(rule):
        if not rule[pos:].strip():
            break
        m = _TOKEN.match(rule, pos)
        if not m or m.end() == pos:
            return f"cannot parse the rule at {rule[pos : pos + 30]!r}"
        pos = m.end()
        if m.group(6):
            args = [a or b.replace('\\"', '"') for a, b in _ARG.findall(m.group(7))]
            toks.append(("m", (m.group(6), args)))
        else:
            toks.append(("op", next(g for g in m.groups()[:5] if g)))
    try:
        dnf, rest = _or(toks, 0)
    except ValueError as exc:
        return str(exc)
    if rest != len(toks):
        return "cannot parse the rule (unbalanced parentheses)"
    alternatives: list[list[Term]] = []
    for conj in dnf:
        terms: list[Term] = []
        for negated, (fn, args) in conj:
            t = _term(fn, args, negated)
            if isinstance(t, str):
                terms = []
                alternatives.append([Term("unknown", "eq", text=t)])
                break
            terms += t
        else:
            alternatives.append(terms)
    return alternatives


_Conj = list[tuple[bool, tuple[str, list[str]]]]


def _or(toks: list[tuple[str, Any]], i: int) -> tuple[list[_Conj], int]:
    out, i = _and(toks, i)
    while i < len(toks) and toks[i] == ("op", "||"):
        more, i = _and(toks, i + 1)
        out += more
    return out, i


def _and(toks: list[tuple[str, Any]], i: int) -> tuple[list[_Conj], int]:
    out, i = _unary(toks, i)
    while i < len(toks) and toks[i] == ("op", "&&"):
        more, i = _unary(toks, i + 1)
        out = [a + b for a in out for b in more]
    return out, i


def _unary(toks: list[tuple[str, Any]], i: int) -> tuple[list[_Conj], int]:
    if i >= len(toks):
        raise ValueError("cannot parse the rule (it ends early)")
    kind, val = toks[i]
    if (kind, val) == ("op", "!"):
        inner, j = _unary(toks, i + 1)
        if len(inner) == 1 and len(inner[0]) == 1:
            neg, m = inner[0][0]
            return [[(not neg, m)]], j
        raise ValueError("a negated group of matchers is too complex to build a request for")
    if (kind, val) == ("op", "("):
        inner, j = _or(toks, i + 1)
        if j >= len(toks) or toks[j] != ("op", ")"):
            raise ValueError("cannot parse the rule (unbalanced parentheses)")
        return inner, j + 1
    if kind == "m":
        return [[(False, val)]], i + 1
    raise ValueError(f"cannot parse the rule at {val!r}")


def _term(fn: str, args: list[str], negated: bool) -> list[Term] | str:
    """The terms one Traefik matcher stands for (v2's several values: the first)."""
    text = f"{'!' if negated else ''}{fn}({', '.join(map(repr, args))})"
    low = fn.lower()

    def one(kind: str, op: str, value: str, key: str = "") -> list[Term]:
        return [Term(kind, op, value, key, negated=negated, text=text)]

    if not args:
        return f"{text}: no value"
    if low == "host":
        return one("host", "eq", args[0])
    if low == "hostregexp":
        # v2's `{name:regex}` placeholders: the regex part.
        return one("host", "reg", re.sub(r"\{\w+:([^}]*)\}", r"(\1)", args[0]))
    if low == "path":
        return one("path", "eq", args[0])
    if low == "pathprefix":
        return one("path", "beg", args[0])
    if low == "pathregexp":
        return one("path", "reg", args[0])
    if low == "method":
        return one("method", "eq", args[0])
    if low in ("header", "headers") and len(args) >= 2:
        return one("header", "eq", args[1], args[0])
    if low in ("headerregexp", "headersregexp") and len(args) >= 2:
        return one("header", "reg", args[1], args[0])
    if low == "query":
        if len(args) >= 2:
            return one("query", "eq", args[1], args[0])
        key, eq, value = args[0].partition("=")
        return one("query", "eq" if eq else "found", value, key)
    if low == "queryregexp" and len(args) >= 2:
        return one("query", "reg", args[1], args[0])
    if low in ("clientip",):
        return one("client", "eq", args[0])
    return f"{text}: a matcher the lab cannot build a request for"


# -- audit: one scope per configuration (its rules read the whole tree), on the registry ----------
_DOCS = "https://doc.traefik.io/traefik/routing/services/#serverstransport"
_STATIC_DOCS = "https://doc.traefik.io/traefik/routing/overview/#transport-configuration"


def scopes(path: Path, text: str = "") -> list[rules.Scope]:
    """The configuration as one scope (the same tree ``check`` adapts): its rules read the static
    transport, every dynamic transport and every HTTPS server, each finding in its own file."""
    tree = parse(path)
    ups = tuple(rules.Upstream(s.url, s.host, s.line) for s in _servers(tree))
    return [rules.Scope(ProxyKind.TRAEFIK, str(path), 1, ups, facts={"tree": tree})]


@dataclass(frozen=True)
class _Server:
    """One HTTPS server of a service and the transport it verifies with."""

    service: str
    url: str
    host: str
    line: int
    file: str
    #: The dynamic transport the service names (``None``: the static one).
    uses: str | None
    skip: bool
    cas: list[str]
    server_name: Any


def _servers(tree: Tree) -> Iterator[_Server]:
    for sname, index, url, svc in tree.https_servers():
        uses, t = tree.transport_of(svc)
        yield _Server(
            sname,
            url,
            urlsplit(url).hostname or "",
            tree.line("http", "services", sname, "loadBalancer", "servers", str(index)),
            tree.where("http", "services", sname),
            uses,
            _true(get(t, "insecureSkipVerify")),
            _files(get(t, "rootCAs")),
            get(t, "serverName"),
        )


def _unverified_services(tree: Tree) -> Iterator[_Server]:
    """The first server of each service whose transport verifies against no rootCAs of its own."""
    seen = set()
    for srv in _servers(tree):
        if not srv.skip and not srv.cas and srv.service not in seen:
            seen.add(srv.service)
            yield srv


def _static_cas(tree: Tree) -> list[str]:
    return _files(get(tree.static_transport(), "rootCAs"))


@rules.rule(
    "traefik-servertransport-typo",
    proxy="traefik",
    severity="high",
    scenario="reported/traefik-proxmox-tunnel-14",
    directives=("serverTransport",),
    help=_STATIC_DOCS,
    fix="the key is serversTransport (plural s): Traefik ignores serverTransport without a word",
)
def _typo(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    for key in tree.top:
        if key.lower() == "servertransport":
            yield rules.Hit(
                tree.line(key),
                f"`{key}:` is not a Traefik key: its settings are ignored and the default transport verifies "
                "against the system store",
            )


@rules.rule(
    "traefik-misplaced-trust-key",
    proxy="traefik",
    severity="medium",
    scenario="reported/traefik-4207",
    directives=("serversTransport.insecureSkipVerify", "serversTransport.rootCAs"),
    help=_STATIC_DOCS,
    fix="move it under serversTransport (Traefik 3 refuses to start on it where it is; 1.x ignored it)",
)
def _misplaced_key(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    for key, value in tree.static.items():
        if str(key).lower() in ("serverstransport", "entrypoints", "providers"):
            continue
        for leaf in _leaves(_misplaced(value)):
            yield rules.Hit(
                tree.line(str(key), *leaf.split(".")),
                f"{key}.{leaf} is not a setting of {key}: Traefik refuses to start (field not found)",
            )


@rules.rule(
    "traefik-insecure-skip-verify",
    proxy="traefik",
    severity="high",
    scenario="traefik/insecure-skip-verify",
    directives=("serversTransport.insecureSkipVerify",),
    help=_STATIC_DOCS,
    fix="remove insecureSkipVerify; trust the internal root with rootCAs",
)
def _skip_verify(scope: rules.Scope) -> rules.Hit | None:
    tree = scope.facts["tree"]
    if not _true(get(tree.static_transport(), "insecureSkipVerify")) or _static_cas(tree):
        return None
    return rules.Hit(
        tree.line("serversTransport", "insecureSkipVerify"),
        "serversTransport.insecureSkipVerify: true: any certificate is accepted by every service without its own "
        "transport",
    )


@rules.rule(
    "traefik-transport-insecure-skip-verify",
    proxy="traefik",
    severity="high",
    scenario="traefik/transport-insecure-skip-verify",
    directives=("http.serversTransports.<name>.insecureSkipVerify",),
    help=_DOCS,
    fix="remove insecureSkipVerify from the transport; give it rootCAs with the internal root",
)
def _transport_skip_verify(scope: rules.Scope) -> Iterator[rules.Hit]:
    yield from _transport_skips(scope.facts["tree"], with_cas=False)


@rules.rule(
    "traefik-ca-and-skip-verify",
    proxy="traefik",
    severity="high",
    scenario="traefik/ca-and-skip-verify",
    directives=("rootCAs", "insecureSkipVerify"),
    help=_STATIC_DOCS,
    fix="remove insecureSkipVerify: with it the rootCAs are never used",
)
def _ca_and_skip_verify(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    if _true(get(tree.static_transport(), "insecureSkipVerify")) and _static_cas(tree):
        yield rules.Hit(
            tree.line("serversTransport", "insecureSkipVerify"),
            "serversTransport has rootCAs and insecureSkipVerify: true: the "
            "CAs are never used, any certificate is accepted by every service without its own transport",
        )
    yield from _transport_skips(tree, with_cas=True)


def _transport_skips(tree: Tree, *, with_cas: bool) -> Iterator[rules.Hit]:
    """The dynamic transports with ``insecureSkipVerify: true`` (with rootCAs, or without)."""
    for tname, t in tree.transports().items():
        keys = ("http", "serversTransports", tname)
        if _true(get(t, "insecureSkipVerify")) and bool(_files(get(t, "rootCAs"))) == with_cas:
            yield rules.Hit(
                tree.line(*keys, "insecureSkipVerify"),
                f"serversTransports {tname}: insecureSkipVerify: true: any certificate is accepted by the services "
                "that name it",
                file=tree.where(*keys),
            )


@rules.rule(
    "traefik-system-bundle-root-cas",
    proxy="traefik",
    severity="medium",
    scenario="traefik/system-bundle",
    directives=("rootCAs",),
    help=_STATIC_DOCS,
    fix="trust the internal root only, not an OS bundle",
)
def _system_bundle(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    for f in _static_cas(tree):
        if is_system_bundle(f):
            yield rules.Hit(
                tree.line("serversTransport", "rootCAs"),
                f"serversTransport.rootCAs {f} is an OS bundle: any public CA can issue for the backend",
            )
    for tname, t in tree.transports().items():
        keys = ("http", "serversTransports", tname)
        for f in _files(get(t, "rootCAs")):
            if is_system_bundle(f):
                yield rules.Hit(
                    tree.line(*keys, "rootCAs"),
                    f"serversTransports {tname}: rootCAs {f} is an OS bundle",
                    file=tree.where(*keys),
                )


@rules.rule(
    "traefik-transport-drops-root-cas",
    proxy="traefik",
    severity="medium",
    scenario="reported/traefik-10612",
    directives=("http.serversTransports.<name>.rootCAs",),
    help=_DOCS,
    fix="repeat the internal root in the transport's own rootCAs (a dynamic "
    "transport does not inherit the static one's)",
)
def _drops_root_cas(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    if not _static_cas(tree):
        return
    for srv in _unverified_services(tree):
        if srv.uses:
            yield rules.Hit(
                tree.line("http", "serversTransports", srv.uses),
                f"service {srv.service} names serversTransports {srv.uses}, which has no rootCAs: it verifies "
                "against the system store, not the static serversTransport.rootCAs",
                file=tree.where("http", "serversTransports", srv.uses),
            )


@rules.rule(
    "traefik-system-store",
    proxy="traefik",
    severity="medium",
    scenario="traefik/system-store",
    directives=("serversTransport.rootCAs",),
    help=_STATIC_DOCS,
    fix="set rootCAs to the internal root (every CA of the OS store can otherwise issue a certificate for the backend)",
)
def _system_store(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    static_cas = _static_cas(tree)
    for srv in _unverified_services(tree):
        if srv.uses and static_cas:
            continue  # traefik-transport-drops-root-cas
        where = f"serversTransports {srv.uses}" if srv.uses else "the static serversTransport"
        yield rules.Hit(
            srv.line,
            f"service {srv.service} ({srv.url}): {where} has no rootCAs: any CA of "
            "the system trust store can issue a certificate Traefik accepts",
            file=srv.file,
        )


@rules.rule(
    "traefik-ip-target-no-server-name",
    proxy="traefik",
    severity="medium",
    scenario="traefik/ip-target",
    directives=("loadBalancer.servers.url", "serverName"),
    help=_DOCS,
    fix="give the service a serversTransport with serverName: <the backend's name>",
)
def _ip_target(scope: rules.Scope) -> Iterator[rules.Hit]:
    for srv in _servers(scope.facts["tree"]):
        if not srv.skip and is_ip(srv.host) and not (isinstance(srv.server_name, str) and srv.server_name):
            yield rules.Hit(
                srv.line,
                f"service {srv.service}: {srv.url} is an IP: Traefik checks the "
                "certificate's IP SANs and sends no SNI (the backend's name certificate is refused)",
                file=srv.file,
            )


@rules.rule(
    "traefik-server-name-other-host",
    proxy="traefik",
    severity="high",
    scenario="traefik/shared-transport-server-name",
    directives=("http.serversTransports.<name>.serverName",),
    help=_DOCS,
    fix="one transport per backend name: serverName must be the name this backend's certificate carries",
)
def _server_name_other_host(scope: rules.Scope) -> Iterator[rules.Hit]:
    tree = scope.facts["tree"]
    seen = set()
    for srv in _servers(tree):
        name = srv.server_name
        if srv.skip or not (isinstance(name, str) and name) or is_ip(srv.host) or srv.service in seen:
            continue
        if name.lower() != srv.host.lower():
            seen.add(srv.service)
            yield rules.Hit(
                tree.line("http", "serversTransports", str(srv.uses), "serverName"),
                f"service {srv.service} reaches {srv.host} but its transport {srv.uses} checks serverName {name}: "
                "that name's certificate passes for this backend, and this backend's own is refused",
                file=tree.where("http", "serversTransports", str(srv.uses)),
            )
