"""Apache Traffic Server (9.2, Debian 12 ``trafficserver``) as a reverse proxy to an HTTPS backend.

Defaults that matter (records.config reference, 9.2): ``proxy.config.ssl.client.verify.server.policy``
is ``PERMISSIVE``: a failed verification is logged (``WARNING: Core server certificate verification
failed ... Action=Continue``) and the response is forwarded anyway (apache/trafficserver#7474; PR
#7587 made ``ENFORCED`` the default from 10.0). ``verify.server.properties`` ``ALL`` checks the
signature and the name (the SNI the proxy sent, from the Host of the remapped request); ``SIGNATURE``
alone skips the name. With no ``CA.cert.filename`` the client context reads ``/etc/ssl/certs``
(which the lab's sandbox does not have).

A configuration is four files in one directory (records.config, remap.config, ip_allow.yaml,
storage.config), found through ``PROXY_CONFIG_CONFIG_DIR``. Evidence is ``diags.log``: the
WARNING line of each failed verification, for a block (502) and for a forwarded response alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from harness.proxies.base import Driver, Installation, RenderContext, ScenarioView
from harness.vocab import ProxyKind

#: The records a scenario may set, with their records.config types.
RECORD_TYPES: dict[str, str] = {
    "proxy.config.ssl.client.verify.server.policy": "STRING",
    "proxy.config.ssl.client.verify.server.properties": "STRING",
    "proxy.config.ssl.client.CA.cert.filename": "STRING",
    "proxy.config.ssl.client.CA.cert.path": "STRING",
    "proxy.config.ssl.client.sni_policy": "STRING",
    "proxy.config.url_remap.pristine_host_hdr": "INT",
    "proxy.config.ssl.client.TLSv1_3": "INT",
}


class TrafficServerDriver(Driver):
    kind = ProxyKind.TRAFFICSERVER
    product = "Traffic Server"
    binary = "traffic_server"
    template = "records.config.tmpl"
    config_name = "records.config"
    verify_patterns = (
        re.compile(r"WARNING: Core server certificate verification failed for .*"),
        re.compile(r"WARNING: SNI \(.*\) not in certificate\. Action=.*"),
    )
    # A client CA file it cannot load: every request fails before any handshake (502).
    refusal_patterns = (re.compile(r"ERROR: failed to create SSL client session"),)
    serves_despite_failure = True
    apt = ("trafficserver",)
    image_binary = "/usr/bin/traffic_server"
    image_package = "trafficserver"
    # About 1 s to serve (HostDB reads /etc/hosts on its first one-second tick): start it last.
    start_order = 9
    ready_delay_s = 1.0
    directives = tuple(RECORD_TYPES)
    policy_line = ""  # one remap rule, always the template's
    config_module = "harness.configs.trafficserver"
    check_hint = "looked for map rules to https:// targets in remap.config"
    guess_order = 40
    indent = ""

    def looks_like(self, text: str) -> bool:
        # records.config (9.x), or records.yaml (10.x: its tree under ``ts:``).
        return bool(re.search(r"^\s*CONFIG\s+proxy\.config\.", text, re.M) or re.search(r"^ts:\s*$", text, re.M))

    def tls_library(self, binary: str | None = None) -> str:
        from harness.proxies.base import linked_openssl

        return linked_openssl(binary or self.find_binary())

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        if scenario.config:
            return self.body(scenario, ctx)
        return "\n".join(
            f"CONFIG {key} {RECORD_TYPES[key]} {self.expand(str(value), ctx)}" for key, value in scenario.directives
        )

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        host, _, port = ctx.listen.rpartition(":")
        values["server_ports"] = port if host in ("", "0.0.0.0") else f"{port}:ip-in={host}"
        return values

    def extra_files(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        import dataclasses

        from harness.assets import asset_dir

        values = self.fields(scenario, dataclasses.replace(ctx, backend=scenario.backend))
        labs = asset_dir("labs") / self.kind.value
        remap = (labs / "remap.config.tmpl").read_text()
        remap = remap.replace("{{scenario}}", values["scenario"]).replace("{{upstream}}", values["upstream"])
        return {
            "remap.config": remap,
            "ip_allow.yaml": (labs / "ip_allow.yaml.tmpl").read_text(),
            # No cache disk: "unable to open cache disk(s): Cache Disabled", and it serves.
            "storage.config": "",
        }

    def sandbox_paths(self, inst: Installation | None = None) -> tuple[str, ...]:
        # Its error pages: records.config names them (template_sets_dir); it refuses to start without.
        return (*super().sandbox_paths(inst), "/etc/trafficserver/body_factory")

    def environment(self, run_dir: str, pki_dir: str = "", inst: Installation | None = None) -> dict[str, str]:
        return {**super().environment(run_dir, pki_dir, inst), "PROXY_CONFIG_CONFIG_DIR": run_dir}

    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # traffic_server alone runs in the foreground (traffic_manager is the daemon keeper);
        # its config directory comes from PROXY_CONFIG_CONFIG_DIR (environment()).
        return [self.executable(inst)]

    def error_log(self, run_dir: Path) -> Path:
        return run_dir / "diags.log"

    def ready(self, host: str, port: int, output: Callable[[], str]) -> bool | str:
        # The port is bound at once, but a request before HostDB has read /etc/hosts goes to
        # DNS (none in the lab) and hangs: ready once the host file is loaded.
        return "Loading host file" in output()

    def _is_fatal(self, line: str) -> bool:
        return "FATAL:" in line or line.startswith("Fatal:")

    version_args = ("-V",)
    version_regex = r"Traffic Server (\d+\.\d+\.\d+)"


DRIVER = TrafficServerDriver()
