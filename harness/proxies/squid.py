"""Squid (5.7, Debian 12 ``squid-openssl``) as a reverse proxy to an HTTPS backend.

``http_port ... accel`` plus one ``cache_peer ... originserver tls``. Defaults that matter
(squid.conf.documented, 5.7): a TLS peer is verified, against ``tls-cafile=`` *and* the system
trust store (``tls-default-ca`` is on for peers: OpenSSL's default paths, which the lab points at
its system bundle through ``SSL_CERT_FILE``); the name checked is ``tls-domain=``, else the
peer's host name, by Squid's own matcher (it accepts ``*.internal`` for ``backend-api.internal``
and no IP SAN). ``tls-flags=DONT_VERIFY_PEER`` turns verification off; ``DONT_VERIFY_DOMAIN``
is parsed for peers but has no effect in 5.7 (only ports' server contexts read it).

Evidence is ``cache.log`` with ``debug_options 83,5``: ``ssl_verify_cb: <reason>: <subject>``
(or ``VerifyConnCertificates: verification failure: ...`` after Squid looked for a missing
intermediate itself). The client gets 503 (``ERR_SECURE_CONNECT_FAIL``).

Readiness is Squid's own start probe, not its port (:meth:`SquidDriver.ready`): a peer is down
until a throw-away TCP connection to it has come back (``CachePeer::tcp_up`` starts at 0, 5.7
``neighbors.cc``), and Squid listens before it has even resolved the peer's name. A request in
between gets 502 at once (no destination), and the probe lands at the seat during that cell.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from harness.proxies.base import Driver, Installation, RenderContext, ScenarioView
from harness.vocab import ProxyKind

#: Added to every cache_peer line (also a reported one): Squid marks a peer DEAD after 10
#: failed connections (the default ``connect-fail-limit``) and then refuses every request for
#: it, so refused impostors would turn the next cells' outcome into an availability artefact.
#: TLS 1.2 only: on the docker runtime (seat in another container) Squid 5.7 lost 4-9 of 100
#: TLS 1.3 responses the seat had sent (502 ERR_READ_ERROR WITH_SERVER); never with TLS 1.2,
#: never on loopback. Verification does not depend on the version; the cause is not found yet.
PEER_PLUMBING = "connect-fail-limit=1000000 tls-options=NO_TLSv1_3"

#: The lab's cache.log levels: 83,5 (TLS) for why a certificate was refused, 15,2 (neighbors)
#: for each peer's start probe coming back (what :meth:`SquidDriver.ready` waits for).
DEBUG_OPTIONS = "ALL,1 83,5 15,2"

# Squid's start, per cache_peer (5.7 neighbors.cc; 6 and later name the peer by its name=):
# "Configuring Parent HOST/PORT/ICP" once its name lookup ended (found or not), then the probe's
# end, "TCP connection to HOST/PORT succeeded" or "... dead" (6: "connection to NAME succeeded",
# "ERROR: Connection to NAME failed"); a name that did not resolve is never probed.
_CONFIGURING = re.compile(r"Configuring (?:Parent|Sibling|Multicast Group) (\S+?)(?:/\d+)?$", re.M)
_PROBED = re.compile(r"[Cc]onnection to (\S+?) (?:succeeded|dead|failed)$", re.M)
_UNRESOLVED = re.compile(r"WARNING: (?:DNS lookup for|No IP address found for) '([^']+)'", re.M)


class SquidDriver(Driver):
    kind = ProxyKind.SQUID
    product = "Squid"
    binary = "squid"
    template = "squid.conf.tmpl"
    config_name = "squid.conf"
    block_statuses = (503,)
    verify_patterns = (
        re.compile(r"ssl_verify_cb: (?!SSL Certificate signature OK|hiding |SQUID_X509_)[A-Z][^:]*: .*"),
        re.compile(r"VerifyConnCertificates: verification failure: .*"),
    )
    apt = ("squid-openssl",)
    image_binary = "/usr/sbin/squid"
    image_package = "squid-openssl"
    start_order = 3
    directives = (
        "tls",
        "tls-cafile",
        "tls-capath",
        "tls-default-ca",
        "tls-flags",
        "tls-domain",
        "tls-min-version",
        "tls-options",
        "tls-cert",
        "tls-key",
        # The pre-4 spellings Squid 5 still reads (reported configs use them).
        "ssl",
        "sslcafile",
        "sslcapath",
        "sslflags",
        "ssldomain",
    )
    policy_line = "cache_peer"
    flag_directives = True
    config_module = "harness.configs.squid"
    check_hint = "looked for cache_peer lines with tls (or ssl)"
    # Before Apache: its SSLProxy* guess (case-insensitive) also matches squid.conf's sslproxy_cert_error.
    guess_order = 8
    # cache_effective_user (Debian: proxy) applies only when Squid starts as root.
    accounts = (("proxy", 13),)
    indent = ""

    def ready(self, host: str, port: int, output: Callable[[], str]) -> bool | str:
        """True once every peer Squid configured has had its start probe come back (or has no
        address to probe): until then the peer is down and a request gets 502 at once.

        A lab's Squid has one cache_peer (``trustlab check`` runs one peer at a time). Squid
        logs the peers when their lookups end, so one whose lookup was still out when another
        had been probed would be missed: not a lab's case."""
        return peers_probed(output())

    def looks_like(self, text: str) -> bool:
        return bool(re.search(r"^\s*(cache_peer|http_port)\s", text, re.M))

    def tls_library(self, binary: str | None = None) -> str:
        from harness.proxies.base import linked_openssl

        return linked_openssl(binary or self.find_binary())

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        words = []
        for key, value in scenario.directives:
            words.append(key if value is True else f"{key}={self.expand(str(value), ctx)}")
        return "".join(f" {w}" for w in words)

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        values = super().fields(scenario, ctx)
        values["debug_options"] = DEBUG_OPTIONS
        if scenario.config:
            lines = self.body(scenario, ctx).splitlines()
            values["body"] = "\n".join(
                f"{ln} {PEER_PLUMBING}"
                if ln.lstrip().startswith("cache_peer") and "connect-fail-limit" not in ln
                else ln
                for ln in lines
            )
        else:
            host = self.upstream_host(scenario, ctx)
            values["body"] = (
                f"cache_peer {host} parent {ctx.backend_port} 0 no-query no-digest originserver name=be"
                f"{values['directives']} {PEER_PLUMBING}"
            )
        return values

    def environment(self, run_dir: str, pki_dir: str = "", inst: Installation | None = None) -> dict[str, str]:
        env = super().environment(run_dir, pki_dir, inst)
        if pki_dir:
            # tls-default-ca: OpenSSL's default store is the lab's system bundle, never the host's.
            env["SSL_CERT_FILE"] = f"{pki_dir}/system-bundle.pem"
        return env

    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        # -N: no daemon, no master/kid processes; the cache.log and access.log are in run_dir.
        # -n: a service name of its own, which names its shared memory segments: the Squids of
        # a docker lab share the container's /dev/shm (the local sandbox gives each its own), and
        # one that exits removed segments another still used (a later cell's 502, issue 27).
        import hashlib

        service = "sq" + hashlib.sha256(run_dir.encode()).hexdigest()[:16]
        return [self.executable(inst), "-N", "-n", service, "-f", config]

    def error_log(self, run_dir: Path) -> Path:
        return run_dir / "cache.log"

    def _is_fatal(self, line: str) -> bool:
        return "FATAL:" in line or "Bungled" in line

    version_args = ("-v",)
    version_regex = r"Squid Cache: Version (\d+\.\d+(?:\.\d+)?)"


def peers_probed(log: str) -> bool:
    """Whether *log* (a cache.log at :data:`DEBUG_OPTIONS`) shows every configured peer's start
    probe ended, and at least one peer configured."""
    peers = _CONFIGURING.findall(log)
    if not peers:
        return False
    probed = set(_PROBED.findall(log))
    unresolved = set(_UNRESOLVED.findall(log))
    return all(p in probed or p.split("/")[0] in unresolved or p in unresolved for p in peers)


DRIVER = SquidDriver()
