"""nginx as a reverse proxy to an HTTPS backend.

Defaults that matter (ngx_http_proxy_module docs): ``proxy_ssl_verify`` off,
``proxy_ssl_server_name`` off, ``proxy_ssl_name`` = the proxy_pass host,
``proxy_ssl_verify_depth`` 1. nginx completes the handshake and then checks the verify
result, so a refusal is logged as ``upstream SSL certificate verify error: (N:reason)`` or
``upstream SSL certificate does not match "name"`` (error level) and answered with 502.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind

if TYPE_CHECKING:  # no import back: scenarios asks the registry (see harness.proxies.base)
    from harness.proxies.base import ScenarioView


class NginxDriver(Driver):
    kind = ProxyKind.NGINX
    product = "nginx"
    binary = "nginx"
    template = "nginx.conf.tmpl"
    config_name = "nginx.conf"
    verify_patterns = (
        re.compile(r"upstream SSL certificate verify error: \([^)]*\)"),
        re.compile(r'upstream SSL certificate does not match "[^"]*"'),
        re.compile(r"SSL_do_handshake\(\) failed \(SSL: [^)]*certificate verify failed[^)]*\)"),
    )
    block_statuses = (502,)
    apt = ("nginx",)
    image_binary = "/usr/sbin/nginx"
    image_package = "nginx"
    start_order = 0
    directives = (
        "proxy_ssl_verify",
        "proxy_ssl_trusted_certificate",
        "proxy_ssl_server_name",
        "proxy_ssl_name",
        "proxy_ssl_verify_depth",
        "proxy_ssl_session_reuse",
        "proxy_ssl_protocols",
        "proxy_ssl_ciphers",
        "proxy_ssl_crl",
        "proxy_set_header",
        # mTLS (issue 14): the proxy's client certificate.
        "proxy_ssl_certificate",
        "proxy_ssl_certificate_key",
    )
    policy_line = "proxy_pass"
    http_block = True
    config_module = "harness.configs.nginx"
    check_hint = "looked for proxy_pass https://... in locations, with upstream blocks"
    guess_order = 20
    accounts = (("nginx", 101),)

    def looks_like(self, text: str) -> bool:
        return bool(re.search(r"proxy_pass\s|server\s*\{|http\s*\{", text) and re.search(r";\s*$", text, re.M))

    def tls_library(self, binary: str | None = None) -> str:
        return _built_with(binary or self.find_binary())

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        return "\n".join(f"            {key} {self.expand(str(value), ctx)};" for key, value in scenario.directives)

    indent = " " * 12

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        if scenario.config:
            values["body"] = self.body(scenario, ctx)
            http_lines = self.expand(scenario.config_http, ctx).splitlines()
            values["http_extra"] = "\n".join("    " + ln if ln.strip() else "" for ln in http_lines)
        else:
            values["body"] = f"            proxy_pass {values['upstream']};\n{values['directives']}"
        return values

    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # -e: the start-up error log goes to the run dir, not /var/log/nginx.
        argv = [self.executable(inst), "-p", run_dir, "-c", config, "-e", f"{run_dir}/error.log"]
        module = _stream_module(self.executable(inst), inst.root if inst else "") if _uses_stream(config) else ""
        if module:
            # A stream {} block (trustlab check) on a build whose stream module is dynamic (Debian's
            # libnginx-mod-stream): -g directives are read before the file, so the module is loaded
            # before the block, as the distribution's modules-enabled include would.
            argv += ["-g", f"load_module {module};"]
        return argv

    def _is_fatal(self, line: str) -> bool:
        return "[emerg]" in line or "[alert]" in line

    version_args = ("-v",)
    version_regex = r"nginx/(\d+\.\d+\.\d+)"


#: Where Debian's libnginx-mod-stream puts the stream module.
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def _uses_stream(config: str) -> bool:
    try:
        text = Path(config).read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"^\s*stream\s*\{", text, re.M) is not None


@functools.lru_cache(maxsize=8)
def _stream_module(binary: str, root: str = "") -> str:
    """The stream module to load for *binary*: ``""`` when stream is built in (or absent: nginx then
    says ``unknown directive "stream"``, shown as the proxy's own message)."""
    import subprocess

    if root:  # a Debian root file system's nginx: its stream module is dynamic when packaged at all
        return STREAM_MODULE if Path(root + STREAM_MODULE).exists() else ""
    try:
        proc = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=20)
    except OSError:
        return ""
    if "--with-stream=dynamic" not in proc.stdout + proc.stderr:
        return ""
    return STREAM_MODULE if Path(root + STREAM_MODULE).exists() else ""


def _built_with(binary: str | None) -> str:
    """``OpenSSL 3.0.11`` from ``nginx -V`` ("built with OpenSSL ... (running with ...)")."""
    import subprocess

    if not binary:
        return ""
    proc = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=20)
    out = proc.stdout + proc.stderr
    m = re.search(r"running with (\S+ [\w.]+)", out) or re.search(r"built with (\S+ [\w.]+)", out)
    return m.group(1) if m else ""


DRIVER = NginxDriver()
