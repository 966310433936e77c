"""Apache httpd (mod_proxy + mod_ssl) as a reverse proxy to an HTTPS backend.

Defaults that matter (mod_ssl docs): ``SSLProxyVerify none``; ``SSLProxyCheckPeerName``,
``SSLProxyCheckPeerCN`` and ``SSLProxyCheckPeerExpire`` on (2.4.5+); ``SSLProxyVerifyDepth 1``.
Verification failures are logged by mod_ssl at info level (``AH02276: Certificate
Verification: Error (N): ...``, ``AH02411: SSL Proxy: Peer certificate does not match for
hostname ...``) and answered with 500 or 502.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind

if TYPE_CHECKING:  # no import back: scenarios asks the registry (see harness.proxies.base)
    from harness.proxies.base import ScenarioView

MODULES = "/usr/lib/apache2/modules"


class ApacheDriver(Driver):
    kind = ProxyKind.APACHE
    product = "Apache httpd"
    binary = "apache2"
    template = "httpd.conf.tmpl"
    config_name = "httpd.conf"
    verify_patterns = (
        re.compile(r"AH\d+: Certificate Verification: [^\[]*"),
        re.compile(r"AH\d+: SSL Proxy: Peer certificate [^\[]*"),
        re.compile(r"AH\d+: SSL Proxy: [^\[]*(?:verif|expired|does not match|CN)[^\[]*"),
    )
    block_statuses = (500, 502)
    apt = ("apache2",)
    image_binary = "/usr/sbin/apache2"
    image_package = "apache2-bin"
    start_order = 2
    directives = (
        "SSLProxyEngine",
        "SSLProxyVerify",
        "SSLProxyVerifyDepth",
        "SSLProxyCheckPeerName",
        "SSLProxyCheckPeerCN",
        "SSLProxyCheckPeerExpire",
        "SSLProxyCACertificateFile",
        "SSLProxyCACertificatePath",
        "SSLProxyProtocol",
        "SSLProxyCipherSuite",
        "ProxyPreserveHost",
        "RequestHeader",
        # mTLS and revocation (issue 14): the proxy's client certificate and CRLs.
        "SSLProxyMachineCertificateFile",
        "SSLProxyMachineCertificateChainFile",
        "SSLProxyCARevocationFile",
        "SSLProxyCARevocationCheck",
    )
    policy_line = "ProxyPass"
    config_module = "harness.configs.apache"
    check_hint = "looked for ProxyPass/ProxyPassMatch/BalancerMember https://..."
    guess_order = 10
    accounts = (("www-data", 33),)

    def looks_like(self, text: str) -> bool:
        return bool(re.search(r"^\s*<VirtualHost|^\s*ProxyPass\b|^\s*SSLProxy", text, re.M | re.I))

    def tls_library(self, binary: str | None = None) -> str:
        from harness.proxies.base import linked_openssl

        return linked_openssl(binary or self.find_binary(), "/usr/lib/apache2/modules/mod_ssl.so")

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        return "\n".join(f"    {key} {self.expand(str(value), ctx)}" for key, value in scenario.directives)

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        values["modules"] = MODULES if Path(MODULES).is_dir() else "/usr/lib/apache2/modules"
        if scenario.config:
            values["body"] = self.body(scenario, ctx)
        else:
            up = values["upstream"]
            values["body"] = f"{values['directives']}\n    ProxyPass / {up}/\n    ProxyPassReverse / {up}/"
        return values

    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # -X: one process in the foreground (no children to outlive the lab).
        return [self.executable(inst), "-f", config, "-X"]

    def _is_fatal(self, line: str) -> bool:
        return "Syntax error" in line or "AH00526" in line or "[emerg]" in line or "Invalid command" in line

    version_args = ("-v",)
    version_regex = r"Apache/(\d+\.\d+\.\d+)"


DRIVER = ApacheDriver()
