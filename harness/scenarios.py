"""Scenario files: one proxy variant (or reported case) with its expected outcome per identity.

A scenario lives at ``scenarios/<group>/<name>.toml``; its id is that path without the suffix
(``nginx/verify-off``, ``reported/nginx-1363``). Files are validated strictly: an unknown key,
identity, proxy, directive or outcome is a :class:`~harness.errors.ScenarioError` whose message
names the file, the field and the allowed values.

Example::

    proxy = "nginx"
    title = "No proxy_ssl_* lines at all"
    description = "..."
    control = "nginx/good"
    sources = ["https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_ssl_verify"]
    target = "name"                 # "name" (default) or "ip"
    backend = "api.svc.internal"    # the backend's name (default backend-api.internal)

    [seat]
    sni_routing = false             # true: the backend routes by SNI like a multi-site server

    [directives]                    # trust-relevant lines, rendered in order
    proxy_ssl_server_name = "on"

    [expected]                      # one outcome per identity
    legit = "served"
    ...

An ``[expected]`` table may leave identities out: they still run, and their outcome is reported
with no expectation (``expected`` is ``None``). Built-in scenarios list every identity.
"""

from __future__ import annotations

import re
import tomllib  # stdlib only here: the docker lab's worker imports this module without trustme
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from harness.assets import asset_dir
from harness.errors import ScenarioError, read_input, shown
from harness.versions import VersionRule, parse_rules, rule_for
from harness.versions import parse as parse_version
from harness.vocab import (
    ALL_IDENTITY_IDS,
    BACKEND_NAME,
    DEFAULT_SITE_NAME,
    IDENTITY_IDS,
    OPTIONAL_IDENTITY_IDS,
    PKI_FILES,
    SIBLING_NAME,
    Outcome,
    ProxyKind,
    wildcard_parent,
)

SUFFIX = ".toml"


def _driver(proxy: ProxyKind) -> Any:
    # The proxy registry imports this module (a driver renders a Scenario): import it lazily.
    from harness.proxies import driver

    return driver(proxy)


def _registered() -> tuple[str, ...]:
    from harness.proxies import names

    return names()


def directives_for(proxy: ProxyKind) -> tuple[str, ...]:
    """The directives a scenario may set for *proxy* (its driver's :attr:`~Driver.directives`)."""
    return tuple(_driver(proxy).directives)


TARGETS = ("name", "ip")
#: Placeholders a raw ``config`` snippet may use.
PLACEHOLDERS: tuple[str, ...] = ("ca", "bundle", "backend", "backend_ip", "port", "upstream")
_TOP_KEYS: tuple[str, ...] = (
    "proxy",
    "title",
    "description",
    "control",
    "sources",
    "target",
    "backend",
    "seat",
    "directives",
    "expected",
    "reporter_goal",
    "config",
    "config_http",
)
_SEAT_KEYS: tuple[str, ...] = ("sni_routing",)

PLACEHOLDERS += tuple(PKI_FILES)
#: Multi-policy scenarios (issue 14): two policies in one proxy on purpose. Each cell first
#: requests ``prime`` (the loose policy), then ``/`` (the strict one) with the same identity.
_TOP_KEYS += ("multi_policy", "prime")
#: Versions as an axis (issue 15): expectations by version range, and a reported case's version.
_TOP_KEYS += ("versions", "reported_on")
#: ``client_auth``: the seat asks for a client certificate; ``keepalive``: it keeps connections open.
_SEAT_KEYS += ("client_auth", "keepalive")
#: The placeholders a directive value may hold (files), removed before the brace check.
_FILE_PLACEHOLDER = re.compile(r"\{(?:ca|bundle|backend|" + "|".join(PKI_FILES) + r")\}")
#: A multi-policy scenario's id says what it tests.
MULTI_POLICY_WORDS = ("reuse", "resume", "keepalive")
#: A backend name: lower-case DNS labels, at least two (the lab resolves it to the seat).
BACKEND_PATTERN = r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
#: Control characters (CR, NUL, ESC ...): a proxy's config parser reads them as text.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Scenario:
    """One validated scenario."""

    id: str
    proxy: ProxyKind
    title: str
    description: str
    control: str | None
    sources: tuple[str, ...]
    target: str
    sni_routing: bool
    directives: tuple[tuple[str, str | bool], ...]
    expected: dict[str, Outcome]
    path: Path | None = None
    reporter_goal: str = ""
    #: A raw config snippet (a reported case as written): the body of nginx's ``location /``,
    #: Apache's ``<VirtualHost>`` or HAProxy's ``backend be``, replacing the rendered target +
    #: directives. Placeholders: {ca} {bundle} {backend} {backend_ip} {port} {upstream}.
    config: str = ""
    #: nginx only: raw text at http level (``upstream`` blocks).
    config_http: str = ""
    #: The name the proxy reaches and the legitimate certificate carries.
    backend: str = BACKEND_NAME
    #: Two policies in one proxy on purpose (reuse scenarios); never part of the isolation rule.
    multi_policy: bool = False
    #: The path each cell requests first, under the loose policy (multi-policy scenarios).
    prime: str = ""
    #: Seat modes: ask for a client certificate; keep connections open for more requests.
    client_auth: bool = False
    keepalive: bool = False
    #: ``[[versions]]``: outcomes that differ on a version range, each with its source.
    versions: tuple[VersionRule, ...] = ()
    #: A reported case's proxy version as reported; it runs on the installed version nearest to it.
    reported_on: str = ""

    def expected_for(self, version: str | None) -> dict[str, Outcome]:
        """``[expected]``, overridden inside the ``[[versions]]`` range that holds *version*."""
        rule = rule_for(self.versions, version)
        if rule is None:
            return self.expected
        return {**self.expected, **{i: Outcome(o) for i, o in rule.expected.items()}}

    def cell_options(self) -> dict[str, object]:
        """What a lab job's cell carries besides key and identity (the seat's modes, the prime)."""
        opts: dict[str, object] = {"sni_routing": self.sni_routing}
        if self.client_auth:
            opts["client_auth"] = True
        if self.keepalive:
            opts["keepalive"] = True
        if self.prime:
            opts["prime"] = self.prime
        if self.backend != BACKEND_NAME:
            opts["backend"] = self.backend  # whose identity set the seat presents
        return opts

    @property
    def variant(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    @property
    def identities(self) -> tuple[str, ...]:
        return tuple(self.expected)

    @property
    def unlisted(self) -> tuple[str, ...]:
        """Built-in identities the ``[expected]`` table leaves out (run, reported, not judged)."""
        return tuple(i for i in IDENTITY_IDS if i not in self.expected)

    @property
    def optional_identities(self) -> tuple[str, ...]:
        """Optional identities (``legit-deep``) this scenario runs in addition to the built-ins."""
        return tuple(i for i in self.expected if i in OPTIONAL_IDENTITY_IDS)


def scenarios_root() -> Path:
    """The built-in scenario directory (in the checkout, or shipped inside the package)."""
    return asset_dir("scenarios")


def load_file(path: Path, *, scenario_id: str | None = None) -> Scenario:
    """Load and validate one scenario file."""
    path = Path(path)
    where = str(path)
    raw = read_input(
        path,
        error=ScenarioError,
        kind="a scenario file",
        limit=1_000_000,
        directory_hint="pass a scenario file or an id like nginx/good",
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{where}: not UTF-8 text (byte {exc.start}); scenario files are TOML") from None
    if not text.strip():
        raise ScenarioError(f"{where}: empty file; a scenario needs proxy, title, directives and expected")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level: [[[[... 3000 deep
        raise ScenarioError(f"{where}: invalid TOML: nested too deeply; a scenario is a flat table") from None
    if scenario_id is None:
        proxy = data.get("proxy")
        scenario_id = f"{proxy}/{path.stem}" if isinstance(proxy, str) else path.stem
    return parse(data, scenario_id=scenario_id, where=where, path=path)


def _allowed(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


@dataclass(frozen=True)
class _Raw:
    """A decoded scenario mapping and where it came from, as the steps of :func:`parse` read it."""

    data: dict[str, Any]
    where: str

    def fail(self, fld: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.where}: {fld}: {msg}")

    def string(self, key: str, default: str = "") -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        return value


def _proxy(raw: _Raw) -> ProxyKind:
    """The top-level keys are known, the required ones present, and the proxy kind registered."""
    for key in raw.data:
        if key not in _TOP_KEYS:
            raise raw.fail(key, f"unknown key; allowed: {_allowed(_TOP_KEYS)}")
    for key in ("proxy", "title", "expected"):
        if key not in raw.data:
            raise raw.fail(key, "missing; every scenario needs proxy, title and expected")
    proxies = _registered()
    if raw.data["proxy"] not in proxies:
        raise raw.fail("proxy", f"{raw.data['proxy']!r} is unknown; known: {_allowed(proxies)}")
    return ProxyKind(raw.data["proxy"])


def _header(raw: _Raw) -> tuple[str, str, str | None, list[str], str]:
    """Title, description, control, sources and target."""
    title = raw.string("title")
    if not title.strip():
        raise raw.fail("title", "must not be empty")
    description = raw.string("description")
    control = raw.data.get("control")
    if control is not None and (not isinstance(control, str) or "/" not in control):
        raise raw.fail("control", "must be a scenario id like 'nginx/good'")
    sources = raw.data.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise raw.fail("sources", "must be a list of strings (documentation or thread URLs)")
    target = raw.string("target", "name")
    if target not in TARGETS:
        raise raw.fail("target", f"{target!r} is unknown; allowed: {_allowed(TARGETS)}")
    return title, description, control, sources, target


def _backend(raw: _Raw) -> str:
    """The backend's name: DNS labels, not one of the lab's own names."""
    backend = raw.string("backend", BACKEND_NAME)
    if not re.match(BACKEND_PATTERN, backend) or re.fullmatch(r"[0-9.]+", backend):
        raise raw.fail("backend", f"{backend!r} is not a host name; give lower-case DNS labels like 'api.svc.internal'")
    if backend in (SIBLING_NAME, DEFAULT_SITE_NAME):
        role = "sibling" if backend == SIBLING_NAME else "default site"
        raise raw.fail("backend", f"{backend!r} is the lab's own {role} name; choose another, like 'api.svc.internal'")
    return backend


def _seat(raw: _Raw) -> tuple[dict[str, Any], bool]:
    """The [seat] table and its sni_routing."""
    seat = raw.data.get("seat", {})
    if not isinstance(seat, dict):
        raise raw.fail("seat", "must be a table, e.g. [seat] sni_routing = true")
    for key in seat:
        if key not in _SEAT_KEYS:
            raise raw.fail(f"seat.{key}", f"unknown key; allowed: {_allowed(_SEAT_KEYS)}")
    sni_routing = seat.get("sni_routing", False)
    if not isinstance(sni_routing, bool):
        raise raw.fail("seat.sni_routing", "must be true or false")
    return seat, sni_routing


def _directives(raw: _Raw, proxy: ProxyKind) -> list[tuple[str, str | bool]]:
    """The [directives] table: known directives of this proxy, each one plain value."""
    directives_raw = raw.data.get("directives", {})
    if not isinstance(directives_raw, dict):
        raise raw.fail("directives", "must be a table of directive = value")
    known = directives_for(proxy)
    directives: list[tuple[str, str | bool]] = []
    for key, value in directives_raw.items():
        if key not in known:
            raise raw.fail(f"directives.{key}", f"unknown {proxy} directive; allowed: {_allowed(known)}")
        if isinstance(value, bool):
            if not _driver(proxy).flag_directives or value is not True:
                raise raw.fail(f"directives.{key}", "must be a string (true is only for bare HAProxy keywords)")
        elif not isinstance(value, str):
            raise raw.fail(f"directives.{key}", f"must be a string, got {type(value).__name__}")
        elif "\n" in value or ";" in value or "{" in _FILE_PLACEHOLDER.sub("", value):
            raise raw.fail(f"directives.{key}", "must be one value without newlines, ';' or braces")
        elif _CONTROL.search(value):
            ch = _CONTROL.search(value).group(0)  # type: ignore[union-attr]
            raise raw.fail(
                f"directives.{key}", f"holds the control character {ch!r}; write the value on one plain line"
            )
        directives.append((key, value))
    return directives


def _snippets(raw: _Raw, proxy: ProxyKind, directives: list[tuple[str, str | bool]]) -> tuple[str, str]:
    """The raw config snippets (config, config_http): plain text with known placeholders."""
    config = raw.string("config")
    config_http = raw.string("config_http")
    if config and directives:
        raise raw.fail("config", "give either directives or a raw config snippet, not both")
    if config_http and not _driver(proxy).http_block:
        raise raw.fail("config_http", "only nginx scenarios have an http-level snippet")
    if config_http and not config:
        raise raw.fail("config_http", "needs a config snippet (the location body) too")
    for key, text in (("config", config), ("config_http", config_http)):
        if bad := _CONTROL.search(text.replace("\n", "").replace("\t", "")):
            raise raw.fail(key, f"holds the control character {bad.group(0)!r}; save the file with plain LF line ends")
        unknown = set(re.findall(r"\{(\w+)\}", text)) - set(PLACEHOLDERS)
        if unknown:
            raise raw.fail(
                key,
                f"unknown placeholder {{{sorted(unknown)[0]}}}; allowed: "
                f"{_allowed(tuple('{' + p + '}' for p in PLACEHOLDERS))}",
            )
    return config, config_http


def _expected(raw: _Raw, backend: str, outcomes: tuple[str, ...]) -> dict[str, Outcome]:
    """The [expected] table, built-in identities in their order, then the optional ones."""
    expected_raw = raw.data["expected"]
    if not isinstance(expected_raw, dict) or not expected_raw:
        raise raw.fail("expected", "must be a table of identity = outcome")
    expected: dict[str, Outcome] = {}
    for ident, outcome in expected_raw.items():
        if ident not in ALL_IDENTITY_IDS:
            known_ids = _allowed(ALL_IDENTITY_IDS)
            raise raw.fail(f"expected.{ident}", f"identity {ident!r} is unknown; known: {known_ids}")
        if outcome not in outcomes:
            raise raw.fail(f"expected.{ident}", f"outcome {outcome!r} is unknown; allowed: {_allowed(outcomes)}")
        expected[ident] = Outcome(outcome)
    if "wildcard-parent" in expected and wildcard_parent(backend) is None:
        raise raw.fail(
            "expected.wildcard-parent",
            f"needs a backend name with at least two labels under its "
            f'parent; {backend!r} has one (set backend = "api.svc.internal")',
        )
    # Built-in identities in their order, then the optional ones this scenario opts into.
    return {i: expected[i] for i in ALL_IDENTITY_IDS if i in expected}


def _opted_in(raw: _Raw, seat: dict[str, Any], expected: dict[str, Outcome], texts: list[str]) -> None:
    """The PKI files and seat options that need an optional identity find it in [expected]."""
    for name, (file, needs) in PKI_FILES.items():
        if any("{" + name + "}" in t for t in texts) and needs not in expected:
            raise raw.fail(
                f"expected.{needs}",
                f"{{{name}}} ({file}) is minted with the optional identity {needs}; list it in [expected]",
            )
    for key in ("client_auth", "keepalive"):
        if not isinstance(seat.get(key, False), bool):
            raise raw.fail(f"seat.{key}", "must be true or false")
    if seat.get("client_auth") and "client-ca-signed" not in expected:
        raise raw.fail("seat.client_auth", "needs the client CA: list client-ca-signed in [expected]")


def _policies(raw: _Raw, proxy: ProxyKind, scenario_id: str, config: str) -> tuple[bool, str]:
    """multi_policy and prime; every other scenario runs one policy per proxy process."""
    multi_policy = raw.data.get("multi_policy", False)
    if not isinstance(multi_policy, bool):
        raise raw.fail("multi_policy", "must be true or false")
    prime = raw.string("prime")
    variant = scenario_id.rsplit("/", 1)[-1]
    if multi_policy:
        if not prime.startswith("/") or not prime.endswith("/"):
            raise raw.fail("prime", "a multi-policy scenario needs prime = a path like '/loose/' (the loose policy)")
        if not any(w in variant for w in MULTI_POLICY_WORDS):
            raise raw.fail(
                "multi_policy",
                f"the id {scenario_id!r} must say what it tests: contain {', '.join(MULTI_POLICY_WORDS)}",
            )
    elif prime:
        raise raw.fail("prime", "only a multi-policy scenario (multi_policy = true) primes a loose policy")
    else:
        # The isolation rule (one policy per proxy process) holds for every other scenario.
        word = _driver(proxy).policy_line
        count = len(re.findall(rf"(?m)^\s*{re.escape(word)}\b", config)) if word else 0
        if count > 1:
            raise raw.fail(
                "config",
                f"{count} {word} lines run two policies in one proxy process; mark it "
                "multi_policy = true (with prime) or split it",
            )
    return multi_policy, prime


def _versions(
    raw: _Raw, proxy: ProxyKind, expected: dict[str, Outcome], outcomes: tuple[str, ...]
) -> tuple[tuple[VersionRule, ...], str]:
    """The per-version rules and the version a reported case names."""
    try:
        rules = parse_rules(raw.data.get("versions", []), expected=expected, outcomes=outcomes)
    except ValueError as exc:
        raise ScenarioError(f"{raw.where}: {exc}") from None
    reported_on = raw.string("reported_on")
    if reported_on:
        try:
            parse_version(reported_on)
        except ValueError as exc:
            raise raw.fail("reported_on", f"{exc}; give the {proxy} version the report names") from None
    return rules, reported_on


def parse(data: dict[str, Any], *, scenario_id: str, where: str, path: Path | None = None) -> Scenario:
    """Validate a decoded scenario mapping."""
    raw = _Raw(data, where)
    proxy = _proxy(raw)
    title, description, control, sources, target = _header(raw)
    backend = _backend(raw)
    seat, sni_routing = _seat(raw)
    directives = _directives(raw, proxy)
    config, config_http = _snippets(raw, proxy, directives)
    outcomes = tuple(o.value for o in Outcome)
    expected = _expected(raw, backend, outcomes)
    _opted_in(raw, seat, expected, [config, config_http, *(str(v) for _, v in directives)])
    multi_policy, prime = _policies(raw, proxy, scenario_id, config)
    rules, reported_on = _versions(raw, proxy, expected, outcomes)
    return Scenario(
        id=scenario_id,
        proxy=proxy,
        title=title,
        description=description,
        control=control,
        sources=tuple(sources),
        target=target,
        sni_routing=sni_routing,
        directives=tuple(directives),
        expected=expected,
        path=path,
        reporter_goal=raw.string("reporter_goal"),
        config=config,
        config_http=config_http,
        backend=backend,
        multi_policy=multi_policy,
        prime=prime,
        client_auth=bool(seat.get("client_auth", False)),
        keepalive=bool(seat.get("keepalive", False)),
        versions=rules,
        reported_on=reported_on,
    )


@cache
def builtin() -> dict[str, Scenario]:
    """Every built-in scenario, by id, sorted."""
    root = scenarios_root()
    found: dict[str, Scenario] = {}
    for path in sorted(root.rglob(f"*{SUFFIX}")):
        sid = path.relative_to(root).with_suffix("").as_posix()
        found[sid] = load_file(path, scenario_id=sid)
    for sc in found.values():
        if sc.control and sc.control not in found:
            raise ScenarioError(f"{sc.path}: control: {sc.control!r} is not a known scenario id")
    return found


def resolve(ref: str) -> Scenario:
    """A scenario id (``nginx/verify-off``) or a path to a scenario file."""
    known = builtin()
    if not ref.strip():
        raise ScenarioError("an empty scenario id is neither a scenario id nor a file; try nginx/good")
    if ref in known:
        return known[ref]
    path = Path(ref)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or one with a NUL
        exists = False
    if ref.endswith(SUFFIX) or exists:
        scenario = load_file(path)
        if scenario.control and scenario.control not in known and scenario.control != scenario.id:
            raise ScenarioError(
                f"{path}: control: {scenario.control!r} is not a known scenario id; "
                "name a built-in one (trustlab matrix --list) or remove the line"
            )
        return scenario
    close = [k for k in known if ref.split("/")[-1] in k] or list(known)[:6]
    raise ScenarioError(
        f"{shown(ref)!r} is neither a scenario id nor a file; try one of: {', '.join(close[:6])} "
        "(trustlab matrix --list shows all)"
    )


def select(refs: list[str] | None = None, *, proxies: list[str] | None = None) -> list[Scenario]:
    """Scenarios by id/path (all built-ins when *refs* is empty), filtered by proxy kind."""
    chosen = [resolve(r) for r in refs] if refs else list(builtin().values())
    if proxies:
        valid = set(_registered())
        for p in proxies:
            if p not in valid:
                raise ScenarioError(f"--proxy: {p!r} is unknown; known: {', '.join(sorted(valid))}")
        chosen = [s for s in chosen if s.proxy.value in proxies]
    seen: set[str] = set()
    unique = []
    for sc in chosen:
        if sc.id in seen:
            raise ScenarioError(f"scenario {sc.id!r} given twice")
        seen.add(sc.id)
        unique.append(sc)
    return unique


#: A ``[[versions]]`` range: ``>=A``, ``<B`` or ``>=A,<B``.
_RANGE_PATTERN = r"^(>=\s*\d+(\.\d+)*|<\s*\d+(\.\d+)*|>=\s*\d+(\.\d+)*\s*,\s*<\s*\d+(\.\d+)*)$"


def json_schema() -> dict[str, Any]:
    """A JSON Schema of scenario files, for editors (scenarios/scenario.schema.json).

    Generated from the same constants the validator uses; a test fails when the committed file
    drifts. The validator stays the authority (it also checks placeholders and cross-field rules).
    """
    outcome = {"enum": [o.value for o in Outcome]}
    directive_value = {"type": ["string", "boolean"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "trustlab scenario",
        "type": "object",
        "additionalProperties": False,
        "required": ["proxy", "title", "expected"],
        "properties": {
            "proxy": {"enum": list(_registered())},
            "title": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "control": {"type": "string", "pattern": "^[^/]+/.+$"},
            "sources": {"type": "array", "items": {"type": "string"}},
            "target": {"enum": list(TARGETS)},
            "backend": {"type": "string", "pattern": BACKEND_PATTERN},
            "reporter_goal": {"type": "string"},
            "config": {"type": "string"},
            "config_http": {"type": "string"},
            "multi_policy": {"type": "boolean"},
            "prime": {"type": "string", "pattern": "^/(.*/)?$"},
            "reported_on": {"type": "string", "pattern": r"^\d+(\.\d+)*"},
            "versions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["range", "source", "expected"],
                    "properties": {
                        "range": {"type": "string", "pattern": _RANGE_PATTERN},
                        "source": {"type": "string", "minLength": 1},
                        "why": {"type": "string"},
                        "expected": {
                            "type": "object",
                            "additionalProperties": False,
                            "minProperties": 1,
                            "properties": {i: outcome for i in ALL_IDENTITY_IDS},
                        },
                    },
                },
            },
            "seat": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k: {"type": "boolean"} for k in _SEAT_KEYS},
            },
            "directives": {
                "type": "object",
                "propertyNames": {"enum": sorted({d for p in _registered() for d in directives_for(ProxyKind(p))})},
                "additionalProperties": directive_value,
            },
            "expected": {
                "type": "object",
                "additionalProperties": False,
                "properties": {i: outcome for i in ALL_IDENTITY_IDS},
            },
        },
    }


def backends_of(scenarios: list[Scenario]) -> tuple[str, ...]:
    """The backend names scenarios set besides the default (each gets its own identities)."""
    return tuple(dict.fromkeys(s.backend for s in scenarios))
