"""The probe's client side over TLS (a user's ``listen 443 ssl`` kept as such): one context for
every request, which loads no trust store and resumes no session of an earlier cell."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import trustme

from harness.runtimes import probe


def test_tls_requests_share_a_context_and_resume_nothing(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("www.trustlab.test").configure_cert(server_ctx)
    seen: list[tuple[str | None, bool]] = []
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            raw, _ = srv.accept()
            names: list[str | None] = []
            server_ctx.sni_callback = lambda sock, name, ctx, names=names: names.append(name)  # type: ignore[misc]
            with server_ctx.wrap_socket(raw, server_side=True) as tls:
                tls.recv(4096)
                seen.append((names[0] if names else None, tls.session_reused))
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nX-Trustlab-Identity: legit\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    got = [probe.request("127.0.0.1", port, "/", tls=True, timeout=5) for _ in range(2)]
    thread.join(5)
    srv.close()
    assert [(r.status, r.marker) for r in got] == [(200, "legit"), (200, "legit")]
    assert seen == [("www.trustlab.test", False), ("www.trustlab.test", False)]  # SNI sent, no resumption
    ctx = probe._client_context()
    assert ctx is probe._client_context() and ctx.verify_mode is ssl.CERT_NONE
    assert ctx.cert_store_stats()["x509_ca"] == 0  # no trust store read
