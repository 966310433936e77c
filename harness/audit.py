"""``trustlab audit FILE``: static findings on backend trust, each linked to the scenario that shows
it live (``trustlab run <scenario>``), and with ``--prove`` confirmed by ``trustlab check``.

Severities: ``high`` lets an impostor through (or hands the name check to the client);
``medium`` breaks the legitimate backend or widens trust (the pressure that leads to turning
verification off); ``low`` matters only for some backends (SNI-routed ones, deep chains).

The rules live with their proxy kind, in a registry (:mod:`harness.configs.rules`): each kind's config
module parses a file once into scopes (the same parse ``check`` adapts) and registers its rules
(``harness.configs.rules.rules(kind)`` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.configs import guess_proxy, rules
from harness.configs.base import read_config
from harness.configs.rules import SEVERITIES, Finding
from harness.errors import ConfigError
from harness.proxies import driver
from harness.vocab import ProxyKind

__all__ = ["SEVERITIES", "AuditReport", "Finding", "audit", "guess_proxy", "render"]


@dataclass
class AuditReport:
    proxy: str
    config: str
    findings: list[Finding] = field(default_factory=list)
    proof: Any = None  # a CheckResult with --prove

    @property
    def high(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "high"]

    def rules(self) -> list[str]:
        return [f.rule for f in self.findings]


def audit(config: str | Path, *, proxy: str | None = None, prove: bool = False, runtime: str = "local") -> AuditReport:
    """Static findings on *config*; with *prove*, also the live ``check`` result (on *runtime*)."""
    path = Path(config)
    text = read_config(path)
    kind = ProxyKind(proxy) if proxy else guess_proxy(text)
    if proxy:
        try:
            looks = guess_proxy(text)
        except ConfigError:
            looks = kind
        # Two kinds may read one config language (a fork: Driver.language): the guess names one.
        if looks is not kind and driver(kind).language != looks.value:
            # Auditing with another proxy's rules finds nothing and says "0 findings": wrong.
            raise ConfigError(
                f"{path}: --proxy {kind.value}, but this looks like a config for {looks.value}"
                f"; run: trustlab audit --proxy {looks.value} {path}"
            )
    report = AuditReport(kind.value, str(path), _findings(kind, path, text))
    if prove:
        from harness.check import check

        report.proof = check(kind.value, path, runtime=runtime)
    return report


def _findings(kind: ProxyKind, path: Path, text: str) -> list[Finding]:
    """The registered rules of *kind* on its config module's scopes of *path*."""
    return rules.findings(rules.config_module(kind).scopes(path, text), kind)


def render(report: AuditReport) -> str:
    lines = [f"trustlab audit ({report.proxy}) {report.config}: {len(report.findings)} finding(s)"]
    for fnd in report.findings:
        lines.append(f"{fnd.file}:{fnd.line}: {fnd.severity.upper()} {fnd.rule}: {fnd.message}")
        lines.append(f"    fix: {fnd.fix}")
        if fnd.help:
            lines.append(f"    read: {fnd.help}")
        lines.append(f"    see it live: trustlab run {fnd.scenario}")
    if report.proof is not None:
        from harness.check import render as render_check

        lines += ["", "--prove: trustlab check", render_check(report.proof)]
    if not report.findings:
        lines.append("no findings (static rules only; `trustlab check` runs it live)")
    return "\n".join(lines)
