"""HAProxy as a reverse proxy to an HTTPS backend.

Defaults that matter (configuration manual): server-side verification is required by
default (``ssl-server-verify required``), so ``ssl`` without ``ca-file`` refuses to start;
the host name is checked only with ``verifyhost`` or ``sni``. The lab's log-format records
``ssl_bc_err_str`` per request: the evidence for a block (503).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.proxies.base import Driver, RenderContext
from harness.scenarios import Scenario
from harness.vocab import ProxyKind


class HAProxyDriver(Driver):
    kind = ProxyKind.HAPROXY
    binary = "haproxy"
    template = "haproxy.cfg.tmpl"
    config_name = "haproxy.cfg"
    verify_patterns = (re.compile(r'ssl_bc_err_str="[^"]*verify[^"]*"'),)

    def directive_lines(self, scenario: Scenario, ctx: RenderContext) -> str:
        words = []
        for key, value in scenario.directives:
            words.append(key if value is True else f"{key} {self.expand(str(value), ctx)}")
        return "".join(f" {w}" for w in words)

    def fields(self, scenario: Scenario, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        values["server"] = f"{self.upstream_host(scenario, ctx)}:{ctx.backend_port}"
        return values

    def command(self, config: str, run_dir: str) -> list[str]:
        # -db: foreground, no daemon; the log goes to stdout, which the runtime sends to error.log.
        return [self.find_binary() or self.binary, "-db", "-f", config]

    def error_log(self, run_dir: Path) -> Path:
        # `log stdout`: the runtime captures the process's stdout here.
        return run_dir / "stdout.log"

    def _is_fatal(self, line: str) -> bool:
        return "[ALERT]" in line

    version_args = ("-v",)
    version_regex = r"HAProxy version (\d+\.\d+\.\d+)"
