"""A user's Traffic Server config: ``records.config`` (9.x) or ``records.yaml`` (10.x), with the
``remap.config`` and (if there) ``sni.yaml`` beside it, read once for ``trustlab check``
(:func:`adapt`) and ``trustlab audit`` (:func:`scopes` and the rules below).

By allow-list (issue 26). Kept exactly: the records that decide backend trust or what is sent
(:data:`RECORDS`: ``ssl.client.verify.server.policy``/``.properties``, the 8.x
``ssl.client.verify.server``, ``ssl.client.sni_policy``, ``url_remap.pristine_host_hdr``, the client
TLS versions and ciphers), every ``map``/``reverse_map`` rule of remap.config (its ``@action``/
``@src_ip``/``@method`` filters too), and sni.yaml's outbound keys per ``fqdn``
(``verify_server_policy``, ``verify_server_properties``, ``client_sni_policy``). Changed:
``ssl.client.CA.cert.filename`` stands for the lab's internal root (or its system bundle for an
OS bundle path), ``CA.cert.path`` for the lab's hashed directory, client certificates are
lab-minted; listeners (``http.server_ports``) are one plain HTTP port on 127.0.0.1 (the client side
is not what the lab tests); the lab's own plumbing (run directory, threads, no cache, one attempt
per request, HostDB from the lab's hosts file: ``labs/trafficserver/records.config.tmpl``),
``ip_allow.yaml`` and ``storage.config``. Dropped: every other record, remap plugins
(``@plugin=``/``@pparam=``: code and files), ``.include``, ``regex_map`` and redirects, sni.yaml's
tunnels (``tunnel_route``, ``forward_route``, ``partial_blind_route``: a TCP tunnel elsewhere) and
anything else not listed; each dropped item is one note.

``records.yaml`` is Traffic Server 10's format, whose ``verify.server.policy`` default is
``ENFORCED`` (apache/trafficserver#7587); the lab runs 9.2 (default ``PERMISSIVE``), so a
records.yaml that leaves the policy unset gets ``ENFORCED`` written out, with a note: it is
judged as 10.x would run it.
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
    Upstream,
    check_yaml,
    is_ip,
    is_system_bundle,
    named_file,
    open_named,
    ordered,
    read_config,
    read_named,
    split_hostport,
    trust_file,
)
from harness.errors import ConfigError
from harness.vocab import BACKEND_NAME, PUBLIC_HOST, ProxyKind

POLICY = "proxy.config.ssl.client.verify.server.policy"
PROPERTIES = "proxy.config.ssl.client.verify.server.properties"
LEGACY = "proxy.config.ssl.client.verify.server"
CA_FILE = "proxy.config.ssl.client.CA.cert.filename"
CA_PATH = "proxy.config.ssl.client.CA.cert.path"
#: Records kept as written (with their records.config type).
RECORDS: dict[str, str] = {
    POLICY: "STRING",
    PROPERTIES: "STRING",
    LEGACY: "INT",
    "proxy.config.ssl.client.sni_policy": "STRING",
    "proxy.config.url_remap.pristine_host_hdr": "INT",
    "proxy.config.ssl.client.TLSv1": "INT",
    "proxy.config.ssl.client.TLSv1_1": "INT",
    "proxy.config.ssl.client.TLSv1_2": "INT",
    "proxy.config.ssl.client.TLSv1_3": "INT",
    "proxy.config.ssl.client.cipher_suite": "STRING",
    "proxy.config.ssl.client.TLSv1_3.cipher_suites": "STRING",
    "proxy.config.url_remap.remap_required": "INT",
    "proxy.config.reverse_proxy.enabled": "INT",
}
#: Records naming a file, and what each stands for in the lab.
FILES = {
    CA_FILE: "ca",
    CA_PATH: "ca_dir",
    "proxy.config.ssl.client.cert.filename": "cert",
    "proxy.config.ssl.client.private_key.filename": "key",
    "proxy.config.ssl.client.cert.path": "dir",
    "proxy.config.ssl.client.private_key.path": "dir",
}
#: Records the lab sets itself (the user's are dropped without a note of their own).
PLUMBING = ("proxy.config.http.server_ports",)
_SNI_KEEP = frozenset(
    {
        "fqdn",
        "verify_server_policy",
        "verify_server_properties",
        "client_sni_policy",
        "verify_client",
        "host_sni_policy",
        "valid_tls_versions_in",
        "http2",
    }
)
_REMAP_KEEP = ("map", "reverse_map", "map_with_recv_port")
_REMAP_FILTERS = ("@action=", "@src_ip=", "@method=", "@in_ip=", "@src_ip_category=")
_DOCS = "https://docs.trafficserver.apache.org/en/9.2.x/admin-guide/files/"


@dataclass
class Record:
    name: str
    type: str
    value: str
    line: int


@dataclass
class MapRule:
    line: int
    kind: str
    source: str
    target: str
    filters: list[str] = field(default_factory=list)


@dataclass
class SniEntry:
    fqdn: str
    line: int
    keys: dict[str, Any]


@dataclass
class Config:
    """The three files, parsed: records by name, remap rules, sni.yaml entries, and notes."""

    path: Path
    records: dict[str, Record]
    maps: list[MapRule]
    sni: list[SniEntry]
    yaml_format: bool
    remap_name: str
    notes: list[Note] = field(default_factory=list)
    other_lines: list[tuple[int, str]] = field(default_factory=list)


def _record_value(raw: str) -> str:
    return raw.strip().strip('"')


def parse_records(text: str, where: str) -> tuple[dict[str, Record], list[tuple[int, str]]]:
    """records.config: ``CONFIG|LOCAL name TYPE value`` lines (others are reported back)."""
    out: dict[str, Record] = {}
    other: list[tuple[int, str]] = []
    for no, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        w = s.split(None, 3)
        if len(w) < 3 or w[0] not in ("CONFIG", "LOCAL"):
            other.append((no, s))
            continue
        out[w[1]] = Record(w[1], w[2], _record_value(w[3]) if len(w) > 3 else "", no)
    return out, other


def parse_records_yaml(text: str, where: str) -> dict[str, Record]:
    """records.yaml (10.x): its tree flattened to ``proxy.config.*`` names (line of each leaf)."""
    import yaml

    try:
        check_yaml(text, where, yaml)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{where}: invalid YAML{at}") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{where}: not a records.yaml (a mapping under ts:)")
    out: dict[str, Record] = {}
    todo: list[tuple[Any, str]] = []
    for k, v in root.value:
        if k.value == "ts":
            todo.append((v, "proxy.config"))
    while todo:
        node, prefix = todo.pop()
        if isinstance(node, yaml.MappingNode):
            todo += [(v, f"{prefix}.{k.value}") for k, v in node.value]
        elif isinstance(node, yaml.ScalarNode):
            t = "INT" if re.fullmatch(r"-?\d+", node.value) else "STRING"
            out[prefix] = Record(prefix, t, node.value, node.start_mark.line + 1)
    if not out:
        raise ConfigError(f"{where}: no records under ts: (is this a Traffic Server records.yaml?)")
    return out


def parse_remap(text: str) -> list[MapRule]:
    out = []
    for no, raw in enumerate(text.splitlines(), 1):
        s = raw.split("#", 1)[0].strip()
        if not s:
            continue
        w = s.split()
        out.append(MapRule(no, w[0], w[1] if len(w) > 1 else "", w[2] if len(w) > 2 else "", w[3:]))
    return out


def parse_sni(text: str, where: str) -> list[SniEntry]:
    import yaml

    try:
        check_yaml(text, where, yaml)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{where}: invalid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
    entries: list[SniEntry] = []
    if root is None:
        return entries
    top = dict((k.value, v) for k, v in root.value) if isinstance(root, yaml.MappingNode) else {}
    seq = top.get("sni")
    if not isinstance(seq, yaml.SequenceNode):
        raise ConfigError(f"{where}: no sni: list (is this a Traffic Server sni.yaml?)")
    for item in seq.value:
        if not isinstance(item, yaml.MappingNode):
            continue
        keys = {k.value: (v.value if isinstance(v, yaml.ScalarNode) else v) for k, v in item.value}
        entries.append(SniEntry(str(keys.get("fqdn", "")), item.start_mark.line + 1, keys))
    return entries


def _beside(path: Path, name: str, *, required: bool) -> str | None:
    """The text of *name* beside *path* (never through a link), or None when absent and optional."""
    rel = named_file(path, name, name)
    if not (path.parent / rel).exists() and not (path.parent / rel).is_symlink():
        if required:
            raise ConfigError(
                f"{path}: {name} not found beside it; put the remap.config that goes with {path.name} next to it"
            )
        return None
    fd = open_named(path, rel, name, name)
    return read_named(path, fd, str(path.parent / rel))


def load(path: Path) -> Config:
    """Parse *path* (records.config or records.yaml) and the files beside it."""
    text = read_config(path)
    is_yaml = path.suffix in (".yaml", ".yml") or bool(re.match(r"\s*ts\s*:", text))
    other: list[tuple[int, str]] = []
    if is_yaml:
        records = parse_records_yaml(text, str(path))
    else:
        records, other = parse_records(text, str(path))
        if not records:
            raise ConfigError(f"{path}: no CONFIG lines: is this a Traffic Server records.config?")
    remap = _beside(path, "remap.config", required=True)
    assert remap is not None
    sni_text = _beside(path, "sni.yaml", required=False)
    sni = parse_sni(sni_text, str(path.parent / "sni.yaml")) if sni_text is not None else []
    return Config(path, records, parse_remap(remap), sni, is_yaml, "remap.config", other_lines=other)


def _url(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port or None, path) of a remap URL (``/`` alone: no host)."""
    m = re.match(r"^(?:(\w+)://)?([^/]*)(/.*)?$", url)
    if not m:
        return "", "", None, "/"
    scheme, hostport, rest = m.group(1) or "", m.group(2) or "", m.group(3) or "/"
    if not hostport:
        return scheme, "", None, rest
    host, port = split_hostport(hostport, 0)
    return scheme, host, port or None, rest


def adapt(path: Path, lab: LabPaths, *, ports: Ports, focus: str | None = None) -> Adapted:
    """The records.config (or records.yaml) at *path*, with its remap.config and sni.yaml, made
    runnable in the lab (see the module docstring)."""
    from harness.assets import asset_dir

    cfg = load(path)
    notes = list(cfg.notes)
    for no, s in cfg.other_lines:
        notes.append(Note("", no, f"{s[:60]} dropped (not a CONFIG line)"))
    lines = [line for rec in cfg.records.values() if (line := _record(path, rec, lab, notes)) is not None]
    if cfg.yaml_format and POLICY not in cfg.records:
        lines.append(f"CONFIG {POLICY} STRING ENFORCED")
        notes.append(
            Note.whole(
                "records.yaml (Traffic Server 10): verify.server.policy unset is 10's default, ENFORCED; "
                "written out for the lab's 9.2 (whose default is PERMISSIVE)"
            )
        )
    # Listeners: one plain HTTP port.
    sp = cfg.records.get("proxy.config.http.server_ports")
    first = re.match(r"\d+", sp.value).group(0) if sp and re.match(r"\d+", sp.value) else "8080"  # type: ignore[union-attr]
    lab_port = ports(first)
    if sp:
        notes.append(Note("", sp.line, f"server_ports {sp.value} -> {lab_port} on 127.0.0.1 (plain HTTP)"))
    template = (asset_dir("labs") / "trafficserver" / "records.config.tmpl").read_text()
    text = (
        template.replace("{{scenario}}", f"adapted from {path.name}")
        .replace("{{server_ports}}", f"{lab_port}:ip-in=127.0.0.1")
        .replace("{{run_dir}}", str(lab.run_dir))
        .replace("{{directives}}", "\n".join(lines))
    )
    remap_out, upstreams = _remap(cfg, notes, first)
    files = {
        "remap.config": remap_out,
        "ip_allow.yaml": (asset_dir("labs") / "trafficserver" / "ip_allow.yaml.tmpl").read_text(),
        "storage.config": "",
    }
    if cfg.sni:
        files["sni.yaml"] = _sni(cfg, lab, notes)
    notes.append(
        Note.whole(
            "the lab's plumbing records (run directory, one thread, no cache, one connect attempt, "
            "HostDB from the lab's hosts file), ip_allow.yaml and storage.config"
        )
    )
    return Adapted(
        text,
        ordered(notes, unnumbered_last=True, files=("remap.config", "sni.yaml")),
        upstreams,
        {first: lab_port},
        extra_files=files,
    )


def _record(path: Path, rec: Record, lab: LabPaths, notes: list[Note]) -> str | None:
    """The CONFIG line the lab writes for *rec* (a file it names becomes the lab's), or None: the
    lab's own plumbing, or off the allow-list."""
    if rec.name in PLUMBING:
        return None
    what = FILES.get(rec.name)
    if what in ("ca", "ca_dir"):
        return f"CONFIG {rec.name} STRING {trust_file(rec.value, lab, notes, directory=what == 'ca_dir')}"
    if what == "dir":
        notes.append(Note("", rec.line, f"{rec.name} -> the lab's directory (the lab-minted client certificate's)"))
        return f"CONFIG {rec.name} STRING {lab.run_dir}"
    if what is not None:
        notes.append(Note("", rec.line, f"{rec.name} replaced by a lab-minted client {what}"))
        return f"CONFIG {rec.name} STRING {lab.cert if what == 'cert' else lab.key}"
    if rec.name in RECORDS:
        if "\n" in rec.value or len(rec.value) > 200:
            raise ConfigError(f"{path}: line {rec.line}: {rec.name}: value too long for a record")
        return f"CONFIG {rec.name} {RECORDS[rec.name]} {rec.value}"
    notes.append(Note("", rec.line, f"{rec.name} dropped (not on trustlab's allow-list for Traffic Server)"))
    return None


def _remap(cfg: Config, notes: list[Note], listener: str) -> tuple[str, list[Upstream]]:
    out = [f"# trustlab check: adapted from {cfg.path.parent / cfg.remap_name}"]
    ups: list[Upstream] = []
    for r in cfg.maps:
        if r.kind not in _REMAP_KEEP:
            notes.append(
                Note("remap.config", r.line, f"{r.kind} dropped (not on trustlab's allow-list for remap.config)")
            )
            continue
        kept = _filters(r, notes)
        if not r.source or not r.target:
            notes.append(Note("remap.config", r.line, f"{r.kind} without a target dropped"))
            continue
        out.append(" ".join([r.kind, r.source, r.target, *kept]))
        scheme, host, port, tpath = _url(r.target)
        if r.kind != "map" or scheme != "https" or not host:
            continue
        _, shost, _, spath = _url(r.source)
        u = Upstream(
            label=f"map {r.source} -> {r.target} (remap.config line {r.line})",
            host=host,
            port=port or 443,
            line=r.line,
            name=host if not is_ip(host) else BACKEND_NAME,
            file=cfg.remap_name,
        )
        u.route = Route(listener, False, shost or PUBLIC_HOST, spath or "/")
        ups.append(u)
    return "\n".join(out) + "\n", ups


def _filters(r: MapRule, notes: list[Note]) -> list[str]:
    """A map rule's options as kept: ACL filters, and ``conf_remap.so`` with only the allow-listed
    records among its ``@pparam=NAME=VALUE`` (a per-rule override of the global records: Traffic
    Server's ``ssl.client.verify.server.policy``/``.properties`` are overridable, so a rule may turn
    verification off for its route alone). Every other plugin and parameter is dropped: plugins run
    code, and a ``@pparam`` may name a host file."""
    kept: list[str] = []
    plugin: str | None = None
    for f in r.filters:
        if f.startswith("@plugin="):
            plugin = f.split("=", 1)[1].rsplit("/", 1)[-1]
            if plugin == "conf_remap.so":
                kept.append("@plugin=conf_remap.so")
            else:
                notes.append(
                    Note("remap.config", r.line, f"@plugin={plugin} dropped (plugins run code and read files)")
                )
        elif f.startswith("@pparam="):
            name, eq, value = f.split("=", 1)[1].partition("=")
            if plugin == "conf_remap.so" and eq and name in RECORDS and "/" not in value:
                kept.append(f)
            else:
                what = "not an allow-listed record" if eq else "a file"
                notes.append(Note("remap.config", r.line, f"@pparam={name} dropped ({what})"))
        elif f.startswith(_REMAP_FILTERS):
            kept.append(f)
        else:
            notes.append(
                Note(
                    "remap.config",
                    r.line,
                    f"{f.split('=', 1)[0]} dropped (not on trustlab's allow-list for remap.config)",
                )
            )
    if kept and kept[-1] == "@plugin=conf_remap.so":
        kept.pop()  # nothing left for it to set
    return kept


def _sni(cfg: Config, lab: LabPaths, notes: list[Note]) -> str:
    import yaml

    entries: list[dict[str, Any]] = []
    for e in cfg.sni:
        kept: dict[str, Any] = {}
        for k, v in e.keys.items():
            if k in ("client_cert", "client_key"):
                kept[k] = str(lab.cert if k == "client_cert" else lab.key)
                notes.append(Note("sni.yaml", e.line, f"{k} replaced by a lab-minted client certificate"))
            elif k in _SNI_KEEP and isinstance(v, str):
                kept[k] = v
            else:
                notes.append(Note("sni.yaml", e.line, f"{k} dropped (not on trustlab's allow-list for sni.yaml)"))
        entries.append(kept)
    return yaml.safe_dump({"sni": entries}, sort_keys=False)


# -- audit: one scope per HTTPS map rule, with the records and sni.yaml entry in effect ----------


def _effective(cfg: Config, host: str) -> dict[str, rules.Directive]:
    found: dict[str, rules.Directive] = {}
    for name in (POLICY, PROPERTIES, LEGACY, CA_FILE, CA_PATH, "proxy.config.url_remap.pristine_host_hdr"):
        rec = cfg.records.get(name)
        if rec:
            found[name.rsplit("proxy.config.", 1)[-1]] = rules.Directive(name, (rec.value,), rec.line)
    for e in cfg.sni:
        if _fqdn_matches(e.fqdn, host):
            for k in ("verify_server_policy", "verify_server_properties"):
                if isinstance(e.keys.get(k), str):
                    found[k] = rules.Directive(f"sni.yaml line {e.line}: {k}", (e.keys[k],), e.line)
            break
    return found


def _overrides(r: MapRule) -> dict[str, rules.Directive]:
    """The records a map rule's ``conf_remap.so`` sets for its route alone."""
    found = {}
    plugin = ""
    for f in r.filters:
        if f.startswith("@plugin="):
            plugin = f.rsplit("/", 1)[-1].split("=", 1)[-1]
        elif f.startswith("@pparam=") and plugin == "conf_remap.so":
            name, eq, value = f.split("=", 1)[1].partition("=")
            if eq and name.startswith("proxy.config."):
                key = name.split("proxy.config.", 1)[1]
                found[key] = rules.Directive(f"remap.config line {r.line}: conf_remap {name}", (value,), r.line)
    return found


def _fqdn_matches(fqdn: str, host: str) -> bool:
    if fqdn.startswith("*."):
        return host.endswith(fqdn[1:]) and host.count(".") == fqdn.count(".")
    return fqdn.lower() == host.lower()


def scopes(path: Path, text: str) -> list[rules.Scope]:
    cfg = load(path)
    out = []
    for r in cfg.maps:
        scheme, host, port, _ = _url(r.target)
        if r.kind != "map" or scheme != "https" or not host:
            continue
        # Findings point into the file given (records): a map rule or an sni.yaml entry is named
        # in the message with its own file and line.
        pol = cfg.records.get(POLICY)
        out.append(
            rules.Scope(
                ProxyKind.TRAFFICSERVER,
                str(path),
                pol.line if pol else 1,
                (rules.Upstream(r.target, host, r.line),),
                {**_effective(cfg, host), **_overrides(r)},
                {
                    "map": f"remap.config line {r.line} (map {r.source} {r.target})",
                    "yaml": cfg.yaml_format,
                    "host": host,
                },
            )
        )
    return out


def _line(scope: rules.Scope, d: rules.Directive | None) -> int:
    """A directive's line when it is in the records file, else the scope's."""
    return d.line if d and d.name.startswith("proxy.config.") else scope.line


def policy_of(scope: rules.Scope) -> tuple[str, rules.Directive | None]:
    """The verification policy in effect: sni.yaml's, else the record, else the 8.x record, else
    the version's default (9.x PERMISSIVE, 10.x ENFORCED)."""
    for key in ("verify_server_policy", "ssl.client.verify.server.policy"):
        d = scope.get(key)
        if d:
            return d.value.upper(), d
    # The 8.x record proxy.config.ssl.client.verify.server (0/1/2) is not read by 9.2: measured
    # with 9.2 (tests/test_check_squid_trafficserver.py), `INT 2` alone leaves PERMISSIVE.
    return ("ENFORCED" if scope.facts["yaml"] else "PERMISSIVE"), None


def _properties(scope: rules.Scope) -> tuple[str, rules.Directive | None]:
    for key in ("verify_server_properties", "ssl.client.verify.server.properties"):
        d = scope.get(key)
        if d:
            return d.value.upper(), d
    return "ALL", None


@rules.rule(
    "trafficserver-permissive",
    proxy="trafficserver",
    severity="high",
    scenario="trafficserver/permissive-default",
    directives=(POLICY, "verify_server_policy"),
    help=_DOCS + "records.config.en.html#proxy-config-ssl-client-verify-server-policy",
    fix="CONFIG proxy.config.ssl.client.verify.server.policy STRING ENFORCED",
)
def _permissive(scope: rules.Scope) -> rules.Hit | None:
    policy, d = policy_of(scope)
    if policy != "PERMISSIVE":
        return None
    legacy = scope.get("ssl.client.verify.server")
    if d:
        why = f"{d.name} {d.value}"
    elif legacy:
        why = (
            f"verify.server.policy unset ({legacy.name} {legacy.value} is the 8.x record, which 9.2 no longer "
            "reads): 9.x's default is PERMISSIVE"
        )
    else:
        why = "verify.server.policy unset: 9.x's default is PERMISSIVE"
    return rules.Hit(
        _line(scope, d or legacy),
        f"{scope.facts['map']}: {why}: a failed verification is logged and the response forwarded",
    )


@rules.rule(
    "trafficserver-disabled",
    proxy="trafficserver",
    severity="high",
    scenario="trafficserver/policy-disabled",
    directives=(POLICY, "verify_server_policy"),
    help=_DOCS + "records.config.en.html#proxy-config-ssl-client-verify-server-policy",
    fix="CONFIG proxy.config.ssl.client.verify.server.policy STRING ENFORCED",
)
def _disabled(scope: rules.Scope) -> rules.Hit | None:
    policy, d = policy_of(scope)
    if policy != "DISABLED":
        return None
    return rules.Hit(
        _line(scope, d), f"{scope.facts['map']}: {d.name if d else 'policy'} DISABLED: nothing is verified"
    )


@rules.rule(
    "trafficserver-signature-only",
    proxy="trafficserver",
    severity="high",
    scenario="trafficserver/properties-signature",
    directives=(PROPERTIES, "verify_server_properties"),
    help=_DOCS + "records.config.en.html#proxy-config-ssl-client-verify-server-properties",
    fix="CONFIG proxy.config.ssl.client.verify.server.properties STRING ALL",
)
def _signature(scope: rules.Scope) -> rules.Hit | None:
    policy, _ = policy_of(scope)
    props, d = _properties(scope)
    if policy == "DISABLED" or props not in ("SIGNATURE", "NONE"):
        return None
    return rules.Hit(
        _line(scope, d),
        f"{scope.facts['map']}: properties {props}: the name is never "
        "checked, so a sibling service's certificate from the same CA is accepted",
    )


@rules.rule(
    "trafficserver-system-bundle",
    proxy="trafficserver",
    severity="medium",
    scenario="trafficserver/system-bundle",
    directives=(CA_FILE,),
    help=_DOCS + "records.config.en.html#proxy-config-ssl-client-ca-cert-filename",
    fix="trust the internal root only",
)
def _bundle(scope: rules.Scope) -> rules.Hit | None:
    ca = scope.get("ssl.client.CA.cert.filename")
    policy, _ = policy_of(scope)
    if policy == "DISABLED":
        return None
    if ca and is_system_bundle(ca.value):
        return rules.Hit(
            _line(scope, ca),
            f"{scope.facts['map']}: CA.cert.filename {ca.value} is a system bundle: any "
            "public CA can issue a certificate for the backend",
        )
    return None


@rules.rule(
    "trafficserver-pristine-host",
    proxy="trafficserver",
    severity="low",
    scenario="trafficserver/pristine-host",
    directives=("proxy.config.url_remap.pristine_host_hdr",),
    help=_DOCS + "records.config.en.html#proxy-config-url-remap-pristine-host-hdr",
    fix="set pristine_host_hdr 0, or proxy.config.ssl.client.sni_policy remap",
)
def _pristine(scope: rules.Scope) -> rules.Hit | None:
    d = scope.get("url_remap.pristine_host_hdr")
    if not d or d.value != "1":
        return None
    return rules.Hit(
        _line(scope, d),
        f"{scope.facts['map']}: pristine_host_hdr 1: the SNI (and the name checked) is the "
        "client's Host, not the backend's name",
    )
