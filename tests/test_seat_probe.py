"""The backend seat tells a proxy's bare TCP probe from a TLS client whose handshake failed.

Squid probes each cache_peer with a throw-away TCP connection (as it starts, and when a request
finds the peer down). Such a probe landing among a cell's connections must not stand in for the
handshake's evidence; the image's Python reported its EOF as 'TLS/SSL connection has been
closed (EOF)', the host's as an unexpected EOF, so the seat now says what it was.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from harness.pki import LabPKI
from harness.runtimes.seat import PROBE_NOTE, Connection, Seat
from harness.vocab import BACKEND_NAME


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return LabPKI.mint().write_to(tmp_path_factory.mktemp("seat") / "pki")


def _one(seat: Seat) -> Connection:
    """The one connection the seat accepted, once it has settled (accepting is the seat's thread)."""
    until = time.perf_counter() + 5
    while not seat.since(0) and time.perf_counter() < until:
        time.sleep(0.005)
    (conn,) = seat.wait_settled(0, timeout=5)
    return conn


def test_a_bare_connection_is_a_probe(pki_dir: Path) -> None:
    with Seat(pki_dir) as seat:
        seat.present("legit")
        socket.create_connection(("127.0.0.1", seat.port)).close()
        conn = _one(seat)
        assert conn.probe and conn.error == PROBE_NOTE and conn.tls is None


def test_a_refused_handshake_is_not_a_probe(pki_dir: Path) -> None:
    """The control: a client that sent its ClientHello and refused the certificate."""
    with Seat(pki_dir) as seat:
        seat.present("rogue-ca")
        ctx = ssl.create_default_context(cafile=str(pki_dir / "internal-pki.pem"))
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection(("127.0.0.1", seat.port)) as raw,
            ctx.wrap_socket(raw, server_hostname=BACKEND_NAME),
        ):
            pass
        conn = _one(seat)
        assert not conn.probe and conn.error and "unknown ca" in conn.error
        assert conn.sni == BACKEND_NAME


def test_a_served_request_is_not_a_probe(pki_dir: Path) -> None:
    with Seat(pki_dir) as seat:
        seat.present("legit")
        ctx = ssl.create_default_context(cafile=str(pki_dir / "internal-pki.pem"))
        with (
            socket.create_connection(("127.0.0.1", seat.port)) as raw,
            ctx.wrap_socket(raw, server_hostname=BACKEND_NAME) as tls,
        ):
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {BACKEND_NAME}\r\n\r\n".encode())
            assert b"X-Trustlab-Identity: legit" in tls.recv(4096)
        conn = _one(seat)
        assert conn.served and not conn.probe and conn.error is None
