"""The ``trustlab audit`` rules: one registry every proxy kind adds its rules to.

A config is parsed once (its kind's config module, :attr:`Driver.config_module
<harness.proxies.base.Driver.config_module>`) into :class:`Scope` objects: the HTTPS upstreams
of one place in the config with the directives in effect there (an nginx ``proxy_pass`` with
what it inherits; an Apache ``<VirtualHost>`` merged over the main server; an HAProxy ``server``
line merged with its ``default-server`` lines; a Caddy ``reverse_proxy``; an Envoy TLS cluster;
a Traefik configuration as a whole). ``check``'s adapter reads the same parse. Every kind's rules
are here; ``tests/test_rules.py`` proves each on its scenario and on a false-positive fixture.

A rule is a function of one scope, registered with :func:`rule`, which declares everything
about it: its id, the proxy it is for, its severity, a help link (the directive's documentation
or the report that showed it), the directives it reads, the scenario that proves it live
(``trustlab run <scenario>``) and the fix. It returns a :class:`Hit` (or several, or ``None``);
:func:`findings` turns hits into :class:`Finding` objects. A rule (Caddy's, shortened)::

    from harness.configs.rules import Hit, Scope, rule

    @rule("caddy-skip-verify", proxy="caddy", severity="high", scenario="caddy/verify-off",
          directives=("tls_insecure_skip_verify",), fix="remove tls_insecure_skip_verify",
          help="https://caddyserver.com/docs/caddyfile/directives/reverse_proxy#tls_insecure_skip_verify")
    def _skip_verify(scope: Scope) -> Hit | None:
        d = scope.get("tls_insecure_skip_verify")
        return Hit(d.line, "tls_insecure_skip_verify: any certificate is accepted") if d else None

and make ``scopes(path, text) -> list[Scope]`` the config module's function that parses a file
(the registry imports the config module the first time it is asked for that kind's rules).

Stdlib only, and nothing of trustlab above :mod:`harness.vocab`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.vocab import ProxyKind

SEVERITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class Finding:
    """One finding of ``trustlab audit``: where, how bad, what it means, the fix, the proof."""

    rule: str
    severity: str
    file: str
    line: int
    message: str
    fix: str
    scenario: str
    #: Where to read about it (the proxy's own documentation), when the rule names a page.
    help: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Directive:
    """One directive as written: its name (as the kind spells it; Apache's lower-cased), its
    arguments and its line."""

    name: str
    args: tuple[str, ...]
    line: int

    @property
    def value(self) -> str:
        """The first argument (``""`` when there is none)."""
        return self.args[0] if self.args else ""


@dataclass(frozen=True)
class Upstream:
    """One HTTPS upstream a scope sends requests to, as written."""

    url: str
    host: str
    line: int


@dataclass(frozen=True)
class Scope:
    """HTTPS upstreams and the directives in effect for them (inherited and merged)."""

    proxy: ProxyKind
    file: str
    #: Where the scope's first upstream is (a finding about a directive left unset points here).
    line: int
    upstreams: tuple[Upstream, ...]
    directives: Mapping[str, Directive] = field(default_factory=dict)
    #: What a kind's rules need beyond directives (nginx: the ``upstream`` block names; HAProxy:
    #: the server's name; Envoy: the TLS cluster; Traefik, whose scope is the whole configuration:
    #: the parsed tree).
    facts: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Directive | None:
        """The directive *name* in effect here, or ``None`` when it is unset."""
        return self.directives.get(name)


@dataclass(frozen=True)
class Hit:
    """What a rule found: the line, the message, and what differs from the rule's declaration
    (a fix that names the config's own values, a severity that depends on another directive)."""

    line: int
    message: str
    fix: str | None = None
    severity: str | None = None
    #: The file the line is in, when not the scope's (Traefik: a dynamic file beside the static one).
    file: str | None = None


Check = Callable[[Scope], "Hit | Iterable[Hit] | None"]


@dataclass(frozen=True)
class Rule:
    """One audit rule and everything it declares."""

    id: str
    proxy: ProxyKind
    severity: str
    #: The scenario that shows the finding live (``trustlab run <scenario>``).
    scenario: str
    #: The directives the rule reads, as the kind's documentation spells them.
    directives: tuple[str, ...]
    #: A link to the directive's documentation or the report that showed the problem.
    help: str
    fix: str
    check: Check

    def hits(self, scope: Scope) -> list[Hit]:
        found = self.check(scope)
        if found is None:
            return []
        return [found] if isinstance(found, Hit) else list(found)


_RULES: dict[ProxyKind, dict[str, Rule]] = {}


def rule(
    id: str, *, proxy: ProxyKind | str, severity: str, scenario: str, directives: tuple[str, ...], help: str, fix: str
) -> Callable[[Check], Check]:
    """Register the decorated function as the rule *id* (see the module docstring)."""
    kind = ProxyKind(proxy)
    if severity not in SEVERITIES:
        raise ValueError(f"rule {id}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")

    def register(check: Check) -> Check:
        known = _RULES.setdefault(kind, {})
        if id in known and known[id].check.__qualname__ != check.__qualname__:
            raise ValueError(f"rule {id} is registered twice ({known[id].check.__qualname__}, {check.__qualname__})")
        known[id] = Rule(id, kind, severity, scenario, tuple(directives), help, fix, check)
        return check

    return register


def config_module(kind: ProxyKind | str) -> Any:
    """The kind's config module (its parser, ``check`` adapter and rules), imported."""
    from harness.configs import config_module as module_name

    return importlib.import_module(module_name(kind, "audit"))


def rules(kind: ProxyKind | str) -> tuple[Rule, ...]:
    """Every rule registered for *kind* (its config module is imported first: it registers them)."""
    kind = ProxyKind(kind)
    config_module(kind)
    return tuple(_RULES.get(kind, {}).values())


def findings(scopes: Iterable[Scope], kind: ProxyKind | str) -> list[Finding]:
    """Every rule of *kind* on every scope, as findings sorted by line, then rule id."""
    out = []
    chosen = rules(kind)
    for scope in scopes:
        for r in chosen:
            for hit in r.hits(scope):
                out.append(
                    Finding(
                        r.id,
                        hit.severity or r.severity,
                        hit.file or scope.file,
                        hit.line,
                        hit.message,
                        hit.fix or r.fix,
                        r.scenario,
                        r.help,
                    )
                )
    return sorted(out, key=lambda f: (f.line, f.rule))
