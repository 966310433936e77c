"""One request through the proxy, and the verdict on it, decided by evidence.

* ``served`` / ``spoofed``: the response carries the seat's identity marker, and that
  identity is the one the seat was presenting (legitimate or not).
* ``blocked``: no marker reached the client *and* the proxy's own log holds a
  verification-failure line (kept as the reason).
* ``config-rejected``: the proxy refused to start (its message kept verbatim).
* ``error``: anything else (timeout, no log reason, a marker from the wrong identity ...),
  with detail. Never folded into ``blocked``.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
from dataclasses import dataclass

from harness.vocab import ALL_IDENTITY_IDS, LEGITIMATE_IDS, PUBLIC_HOST, Outcome

MARKER = "X-Trustlab-Identity"


@dataclass(frozen=True)
class Response:
    status: int | None
    marker: str | None
    error: str | None = None


def request(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float = 10.0,
    host_header: str = PUBLIC_HOST,
    tls: bool = False,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """*method* (GET) *path* through the proxy as a client of the public site would, with *headers*.

    With *tls* the client side is HTTPS (a user's own ``listen 443 ssl`` kept as such), sending
    *host_header* as SNI; the proxy's client-side certificate is not what the lab tests, so it
    is not verified.
    """
    conn: http.client.HTTPConnection
    if tls:
        conn = _SNIConnection(host, port, timeout=timeout, sni=host_header.split(":")[0])
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        # *headers* first: Host stays the lab's; a matcher's Connection (Upgrade) keeps "close" with it.
        asked = dict(headers)
        closing = ", ".join(filter(None, [asked.pop("Connection", ""), "close"]))  # Upgrade, close
        conn.request(method, path, headers={**asked, "Host": host_header, "Connection": closing})
        resp = conn.getresponse()
        resp.read()
        return Response(resp.status, resp.getheader(MARKER))
    except (OSError, http.client.HTTPException) as exc:
        kind = "timeout" if isinstance(exc, socket.timeout | TimeoutError) else type(exc).__name__
        return Response(None, None, f"{kind}: {exc}")
    finally:
        conn.close()


@functools.cache
def _client_context() -> ssl.SSLContext:
    """The client side's TLS context, made once: it verifies nothing, so it loads no trust store
    (``ssl.create_default_context()`` read the system's for every cell: a third of a lab
    worker's CPU). OpenSSL keeps no client sessions by itself: no cell resumes another's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with the public name as SNI; no verification (client side)."""

    def __init__(self, host: str, port: int, *, timeout: float, sni: str) -> None:
        ctx = _client_context()
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._ctx, self._sni = ctx, sni

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni)


def decide(
    *,
    presented: str,
    response: Response,
    block_reason: str | None,
    seat_error: str | None = None,
    log_tail: str = "",
    warning: str | None = None,
) -> tuple[Outcome, str]:
    """The outcome of one request and the evidence for it.

    *warning* is a verification-failure line the proxy logged for a request it still answered
    (Traffic Server's ``PERMISSIVE`` policy): an impostor's response is then ``spoofed`` with
    that line as its reason, a legitimate one ``served`` with the line noted.
    """
    if response.marker is not None:
        served_by, _, site = response.marker.partition("@")
        if response.status != 200:
            return Outcome.ERROR, f"marker {response.marker!r} with unexpected status {response.status}"
        if site:
            return Outcome.ERROR, f"the backend answered from its {site} (the proxy sent no usable SNI)"
        # A case identity (harness.conformance) is known when it is the one presented.
        if served_by not in ALL_IDENTITY_IDS and served_by != presented:
            return Outcome.ERROR, f"unknown identity marker {response.marker!r}"
        if served_by != presented:
            return Outcome.ERROR, (
                f"seat presented {presented} but the response came from {served_by} (stale connection)"
            )
        if served_by in LEGITIMATE_IDS:
            if warning:
                return Outcome.SERVED, f"response from {served_by} (the proxy logged: {warning})"
            return Outcome.SERVED, f"response from {served_by}"
        if warning:
            return Outcome.SPOOFED, f"{warning} (forwarded anyway: response from impostor {served_by})"
        return Outcome.SPOOFED, f"response from impostor {served_by}"
    if block_reason:
        extra = f" (seat saw: {seat_error})" if seat_error else ""
        return Outcome.BLOCKED, block_reason + extra
    if response.error:
        return Outcome.ERROR, f"no response: {response.error}"
    detail = f"status {response.status} without identity marker and no verification line in the proxy log"
    if seat_error:
        detail += f"; seat saw: {seat_error}"
    if log_tail:
        detail += f"; log: {log_tail[-300:]}"
    return Outcome.ERROR, detail
