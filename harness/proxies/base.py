"""What every proxy driver provides: render a config, a command to start it, and evidence.

A driver is stateless. Runtimes call :meth:`Driver.render` to get a complete, self-contained
config for a scenario, start :meth:`Driver.command`, and after each request hand the new log
text to :meth:`Driver.block_reason`, which returns the proxy's own verification line (the
evidence a ``blocked`` outcome needs) or ``None``.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness._assets import asset_dir
from harness.errors import ScenarioError
from harness.scenarios import PKI_FILES, Scenario
from harness.vocab import BACKEND_NAME, BACKEND_PORT, PUBLIC_HOST, ProxyKind

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class RenderContext:
    """Where things are for one proxy instance (paths as the proxy will see them)."""

    run_dir: str
    listen: str
    ca: str
    bundle: str
    backend_ip: str
    backend_port: int = BACKEND_PORT


class Driver:
    """Base class; one subclass per proxy kind."""

    kind: ProxyKind
    binary: str
    template: str
    config_name: str
    #: Regular expressions matching the proxy's own verification-failure log lines.
    verify_patterns: tuple[re.Pattern[str], ...] = ()

    # -- config ------------------------------------------------------------------------
    def upstream_host(self, scenario: Scenario, ctx: RenderContext) -> str:
        return ctx.backend_ip if scenario.target == "ip" else BACKEND_NAME

    def expand(self, value: str, ctx: RenderContext) -> str:
        # PKI files next to the CA file (client material, CRLs): {client_pem} -> DIR/proxy-client.pem
        pki_dir = posixpath.dirname(ctx.ca)
        for name, (file, _) in PKI_FILES.items():
            value = value.replace("{" + name + "}", posixpath.join(pki_dir, file))
        return (
            value.replace("{ca}", ctx.ca)
            .replace("{bundle}", ctx.bundle)
            .replace("{backend}", BACKEND_NAME)
            .replace("{backend_ip}", ctx.backend_ip)
            .replace("{port}", str(ctx.backend_port))
            .replace("{upstream}", f"https://{BACKEND_NAME}:{ctx.backend_port}")
        )

    def body(self, scenario: Scenario, ctx: RenderContext) -> str:
        """The scenario's raw config snippet, expanded and indented (``""`` when it has none)."""
        lines = self.expand(scenario.config, ctx).splitlines()
        return "\n".join((self.indent + line if line.strip() else "") for line in lines)

    indent = "    "

    def directive_lines(self, scenario: Scenario, ctx: RenderContext) -> str:
        raise NotImplementedError

    def fields(self, scenario: Scenario, ctx: RenderContext) -> dict[str, str]:
        host = self.upstream_host(scenario, ctx)
        return {
            "scenario": scenario.id,
            "run_dir": ctx.run_dir,
            "listen": ctx.listen,
            "public_host": PUBLIC_HOST,
            "upstream": f"https://{host}:{ctx.backend_port}",
            "directives": self.directive_lines(scenario, ctx),
            "http_extra": "",
        }

    def render(self, scenario: Scenario, ctx: RenderContext) -> str:
        """The complete config text for *scenario*."""
        text = (asset_dir("labs") / self.kind.value / self.template).read_text()
        values = self.fields(scenario, ctx)

        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise ScenarioError(f"labs/{self.kind}/{self.template}: unknown placeholder {{{{{key}}}}}")
            return values[key]

        return _PLACEHOLDER.sub(sub, text)

    # -- process -----------------------------------------------------------------------
    def command(self, config: str, run_dir: str) -> list[str]:
        raise NotImplementedError

    def error_log(self, run_dir: Path) -> Path:
        """The file the proxy writes its per-request errors to."""
        return run_dir / "error.log"

    def startup_message(self, output: str) -> str:
        """The proxy's own reason for refusing to start, verbatim (its most telling line)."""
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        for line in lines:
            if self._is_fatal(line):
                return line
        return lines[-1] if lines else "exited without a message"

    def _is_fatal(self, line: str) -> bool:
        return False

    # -- evidence ----------------------------------------------------------------------
    def block_reason(self, log_text: str) -> str | None:
        """The first verification-failure line in *log_text*, trimmed, or ``None``."""
        for line in log_text.splitlines():
            for pattern in self.verify_patterns:
                m = pattern.search(line)
                if m:
                    return m.group(0).strip()
        return None

    def version(self) -> str:
        """The installed version (``1.22.1``), or ``""`` when the binary is missing."""
        path = shutil.which(self.binary) or shutil.which(f"/usr/sbin/{self.binary}")
        if not path:
            return ""
        proc = subprocess.run([path, *self.version_args], capture_output=True, text=True, timeout=10)
        m = re.search(self.version_regex, proc.stdout + proc.stderr)
        return m.group(1) if m else "unknown"

    version_args: tuple[str, ...] = ("-v",)
    version_regex: str = r"(\d+\.\d+\.\d+)"

    def find_binary(self) -> str | None:
        return shutil.which(self.binary) or (
            f"/usr/sbin/{self.binary}" if Path(f"/usr/sbin/{self.binary}").exists() else None
        )
