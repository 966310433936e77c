"""nginx as a reverse proxy to an HTTPS backend.

Defaults that matter (ngx_http_proxy_module docs): ``proxy_ssl_verify`` off,
``proxy_ssl_server_name`` off, ``proxy_ssl_name`` = the proxy_pass host,
``proxy_ssl_verify_depth`` 1. nginx completes the handshake and then checks the verify
result, so a refusal is logged as ``upstream SSL certificate verify error: (N:reason)`` or
``upstream SSL certificate does not match "name"`` (error level) and answered with 502.
"""

from __future__ import annotations

import re

from harness.proxies.base import Driver, RenderContext
from harness.scenarios import Scenario
from harness.vocab import ProxyKind


class NginxDriver(Driver):
    kind = ProxyKind.NGINX
    binary = "nginx"
    template = "nginx.conf.tmpl"
    config_name = "nginx.conf"
    verify_patterns = (
        re.compile(r"upstream SSL certificate verify error: \([^)]*\)"),
        re.compile(r'upstream SSL certificate does not match "[^"]*"'),
        re.compile(r"SSL_do_handshake\(\) failed \(SSL: [^)]*certificate verify failed[^)]*\)"),
    )

    def directive_lines(self, scenario: Scenario, ctx: RenderContext) -> str:
        return "\n".join(
            f"            {key} {self.expand(str(value), ctx)};" for key, value in scenario.directives
        )

    indent = " " * 12

    def fields(self, scenario: Scenario, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        if scenario.config:
            values["body"] = self.body(scenario, ctx)
            http_lines = self.expand(scenario.config_http, ctx).splitlines()
            values["http_extra"] = "\n".join("    " + ln if ln.strip() else "" for ln in http_lines)
        else:
            values["body"] = f"            proxy_pass {values['upstream']};\n{values['directives']}"
        return values

    def command(self, config: str, run_dir: str) -> list[str]:
        # -e: the start-up error log goes to the run dir, not /var/log/nginx.
        return [self.find_binary() or self.binary, "-p", run_dir, "-c", config, "-e", f"{run_dir}/error.log"]

    def _is_fatal(self, line: str) -> bool:
        return "[emerg]" in line or "[alert]" in line

    version_args = ("-v",)
    version_regex = r"nginx/(\d+\.\d+\.\d+)"
