"""HAProxy as a reverse proxy to an HTTPS backend.

Defaults that matter (configuration manual): server-side verification is required by
default (``ssl-server-verify required``), so ``ssl`` without ``ca-file`` refuses to start;
the host name is checked only with ``verifyhost`` or ``sni``. The lab's log-format records
``ssl_bc_err_str`` per request: the evidence for a block (503).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind

if TYPE_CHECKING:  # no import back: scenarios asks the registry (see harness.proxies.base)
    from harness.proxies.base import ScenarioView


class HAProxyDriver(Driver):
    kind = ProxyKind.HAPROXY
    product = "HAProxy"
    binary = "haproxy"
    template = "haproxy.cfg.tmpl"
    config_name = "haproxy.cfg"
    verify_patterns = (re.compile(r'ssl_bc_err_str="[^"]*verify[^"]*"'),)
    apt = ("haproxy",)
    image_binary = "/usr/sbin/haproxy"
    image_package = "haproxy"
    start_order = 1
    directives = (
        "ssl",
        "verify",
        "ca-file",
        "sni",
        "verifyhost",
        "no-verifyhost",
        "ssl-min-ver",
        "ssl-max-ver",
        "alpn",
        "crl-file",
        "check-sni",
        # mTLS (issue 14): the proxy's client certificate.
        "crt",
    )
    block_statuses = (503,)
    policy_line = "server"
    flag_directives = True
    config_module = "harness.configs.haproxy"
    check_hint = "looked for server lines with ssl in backend/listen sections"
    guess_order = 30
    accounts = (("haproxy", 102),)

    def looks_like(self, text: str) -> bool:
        return bool(re.search(r"^\s*(backend|frontend|listen)\s+\S+\s*$", text, re.M))

    def tls_library(self, binary: str | None = None) -> str:
        import subprocess

        if not binary and not (binary := self.find_binary()):
            return ""
        out = subprocess.run([binary, "-vv"], capture_output=True, text=True, timeout=20).stdout
        m = re.search(r"Running on OpenSSL version : (OpenSSL [\w.]+)", out) or re.search(
            r"Built with OpenSSL version : (OpenSSL [\w.]+)", out
        )
        return m.group(1) if m else ""

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        words = []
        for key, value in scenario.directives:
            words.append(key if value is True else f"{key} {self.expand(str(value), ctx)}")
        return "".join(f" {w}" for w in words)

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        values["server"] = f"{self.upstream_host(scenario, ctx)}:{ctx.backend_port}"
        if scenario.config:
            values["body"] = self.body(scenario, ctx)
        else:
            values["body"] = f"    server be {values['server']}{values['directives']}"
        return values

    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # -db: foreground, no daemon; the log goes to stdout, which the runtime sends to error.log.
        return [self.executable(inst), "-db", "-f", config]

    def error_log(self, run_dir: Path) -> Path:
        # `log stdout`: the runtime captures the process's stdout here.
        return run_dir / "stdout.log"

    def _is_fatal(self, line: str) -> bool:
        return "[ALERT]" in line

    version_args = ("-v",)
    version_regex = r"HAProxy version (\d+\.\d+\.\d+)"


DRIVER = HAProxyDriver()
