"""The backend seat: whoever the lab network routes ``backend-api.internal`` to.

One TLS server at the backend's address. The harness selects the identity it presents;
each identity has its own ``SSLContext`` (so no session resumes across identities, as with a
real impostor). Every response is marked with the identity that served it
(``X-Trustlab-Identity``) and closes the connection, so a proxy can never carry a connection
from one identity into the next cell. Per connection the seat records the SNI it saw, the TLS
version, the request line and, when the handshake fails, the alert the proxy sent.

With ``sni_routing`` the legitimate backend behaves like a multi-site server: only an SNI
naming the backend gets the backend's certificate; no SNI (or another name) gets the default
site's certificate. Impostors answer with their own certificate whatever the SNI.

Run standalone (Docker runtime)::

    python -m harness.runtimes.seat --pki DIR --listen 0.0.0.0:8443 --control 0.0.0.0:9000

The control port speaks one line per command: ``present ID [route] [mtls] [keepalive] [backend=NAME]``,
``mark``, ``since N`` (JSON list of connections), ``ping``.

Two modes exist for the mTLS and reuse scenarios only (off by default, so every other cell
keeps one fresh handshake per response):

* ``client_auth`` (``mtls``): the seat asks for a client certificate, advertising the client
  CA as its acceptable CA; the legitimate backend requires one, impostors take what they
  get. The subject and issuer it received are recorded as evidence.
* ``keepalive``: a connection serves more than one request. A request on a connection that
  is already open is recorded as its own entry with ``reused`` (no new handshake); a new
  connection whose handshake resumed a TLS session is recorded with ``resumed``. Idle
  connections are closed when the next cell presents an identity, so nothing carries from
  one cell into another.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
import ssl
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.vocab import BACKEND_NAME, IDENTITY_IDS, LEGITIMATE_IDS, OPTIONAL_IDENTITY_IDS

IDENTITY_HEADER = "X-Trustlab-Identity"
#: What the seat records for a connection closed before its first byte (:attr:`Connection.probe`).
PROBE_NOTE = "a bare TCP connection, closed before any TLS byte (the proxy probing its backend)"
_HEAD_LIMIT = 65536


@dataclass
class Connection:
    """What the seat saw on one accepted connection."""

    seq: int
    identity: str
    sni: str | None = None
    tls: str | None = None
    request: str | None = None
    host: str | None = None
    site: str | None = None
    error: str | None = None
    served: bool = False
    #: The address:port the proxy connected to (which upstream target it meant).
    dest: str | None = None
    #: mTLS: the client certificate the proxy sent (RFC 4514 subject and issuer), if any.
    client_subject: str | None = None
    client_issuer: str | None = None
    #: Reuse evidence: this entry is a further request on connection ``conn`` (no handshake) ...
    reused: bool = False
    conn: int | None = None
    #: ... or this connection's handshake resumed an earlier TLS session.
    resumed: bool = False
    #: A bare TCP connection, closed before its first byte: a proxy probing its backend (Squid
    #: probes each cache_peer as it starts and when a request finds it down), no TLS client.
    probe: bool = False


@dataclass
class _State:
    identity: str = "legit"
    sni_routing: bool = False
    #: The backend name whose identity set answers (``None``: the default backend's).
    backend: str | None = None
    client_auth: bool = False
    keepalive: bool = False
    #: Bumped by every present(): a kept-alive connection never outlives its cell.
    generation: int = 0
    connections: list[Connection] = field(default_factory=list)


def _shut(socks: set[socket.socket]) -> None:
    """Shut down idle keep-alive connections (one already gone is fine)."""
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Seat:
    """A TLS server presenting one selectable identity at a time.

    Use as a context manager; ``port=0`` binds a free port (read it back from ``.port``).
    """

    def __init__(
        self,
        pki_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        identities: tuple[str, ...] = IDENTITY_IDS,
        backend_names: tuple[str, ...] = (BACKEND_NAME,),
    ) -> None:
        self._pki = Path(pki_dir)
        self._host = host
        self._requested_port = port
        self._backend_names = {n.lower() for n in backend_names}
        self._contexts = {i: self._context(self._pki / "identities" / i) for i in identities}
        # Optional identities (legit-deep) when the PKI directory has them.
        for i in OPTIONAL_IDENTITY_IDS:
            if i not in self._contexts and (self._pki / "identities" / f"{i}.pem").exists():
                self._contexts[i] = self._context(self._pki / "identities" / i)
        # Further backend names (a scenario's ``backend = "api.svc.internal"``): their own
        # identity sets, under backends/<name>/identities/.
        self._backend_contexts: dict[str, dict[str, ssl.SSLContext]] = {}
        for sub in sorted((self._pki / "backends").glob("*/identities")):
            name = sub.parent.name
            self._backend_names.add(name.lower())
            self._backend_contexts[name] = {
                pem.stem: self._context(pem.with_suffix("")) for pem in sorted(sub.glob("*.pem"))
            }
        self._default_ctx = self._context(self._pki / "default-site")
        #: Client-auth contexts, made on first use (only mTLS scenarios need them).
        self._mtls_contexts: dict[str, ssl.SSLContext] = {}
        #: Keep-alive connections waiting for their next request (closed on the next present()).
        self._idle: set[socket.socket] = set()
        self._state = _State()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Seat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" answers on IPv4 too (an upstream may be either)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((self._host, self._requested_port))
        sock.listen(128)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="seat-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            idle, self._idle = self._idle, set()
        _shut(idle)
        if self._sock:
            try:  # wakes the accept() below at once on Linux
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            self._sock.close()

    @property
    def port(self) -> int:
        assert self._sock is not None, "seat not started"
        return int(self._sock.getsockname()[1])

    # -- control ---------------------------------------------------------------------
    def present(
        self,
        identity: str,
        *,
        sni_routing: bool = False,
        client_auth: bool = False,
        keepalive: bool = False,
        backend: str | None = None,
    ) -> None:
        """Answer every new connection as *identity* from now on.

        *backend* picks the identity set of another backend name (``api.svc.internal``); the
        default is the PKI's own backend name. Closes the keep-alive connections left idle by
        the previous cell first.
        """
        if backend is not None and backend not in self._backend_contexts:
            backend = None if backend.lower() in self._own_names() else backend
        contexts = self._contexts if backend is None else self._backend_contexts.get(backend, {})
        if identity not in contexts:
            raise KeyError(identity if backend is None else f"{identity} for {backend}")
        if client_auth:
            self._mtls_context(identity)  # fail here, not in a handshake, when the PKI lacks the CA
        with self._lock:
            self._state.identity = identity
            self._state.sni_routing = sni_routing
            self._state.client_auth = client_auth
            self._state.keepalive = keepalive
            self._state.backend = backend
            self._state.generation += 1
            idle, self._idle = self._idle, set()
        _shut(idle)

    def _own_names(self) -> set[str]:
        return self._backend_names - {n.lower() for n in self._backend_contexts}

    def mark(self) -> int:
        """A position in the connection log; pass it to :meth:`since`."""
        with self._lock:
            return len(self._state.connections)

    def since(self, mark: int) -> list[Connection]:
        """Connections accepted after *mark*."""
        with self._lock:
            return list(self._state.connections[mark:])

    def wait_settled(self, mark: int, *, timeout: float) -> list[Connection]:
        """Connections after *mark*, once each has been served or has failed (or at *timeout*)."""
        with self._settled:
            self._settled.wait_for(lambda: all(c.served or c.error for c in self._state.connections[mark:]), timeout)
            return list(self._state.connections[mark:])

    # -- serving -----------------------------------------------------------------------
    def _context(self, stem: Path) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(f"{stem}.pem", f"{stem}.key")
        except ssl.SSLError:
            # A deliberately weak certificate (an RSA-1024 key: harness.conformance) that this
            # OpenSSL's security level refuses to serve: an impostor or a legacy backend would
            # serve it anyway, so the seat does, and the proxy decides.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.load_cert_chain(f"{stem}.pem", f"{stem}.key")
        ctx.sni_callback = self._on_sni
        return ctx

    def _mtls_context(self, identity: str) -> ssl.SSLContext:
        """*identity*'s context asking for a client certificate from the client CA.

        The legitimate backend requires one; an impostor only asks (it takes what it gets)."""
        with self._lock:
            ctx = self._mtls_contexts.get(identity)
            if ctx is None:
                ca = self._pki / "client-ca.pem"
                if not ca.exists():
                    raise KeyError(f"{identity} (client auth needs {ca.name}: mint with client-ca-signed)")
                stem = self._pki / "identities" / identity
                if not (stem.parent / f"{identity}.pem").exists():
                    stem = self._pki / "identities" / "legit"  # pragma: no cover - guarded by present()
                ctx = self._context(stem)
                ctx.verify_mode = ssl.CERT_REQUIRED if identity in LEGITIMATE_IDS else ssl.CERT_OPTIONAL
                ctx.load_verify_locations(ca)
                _advertise_client_ca(ctx, ca)
                self._mtls_contexts[identity] = ctx
            return ctx

    def _on_sni(self, sslsock: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        conn: Connection = sslsock._trustlab_conn  # type: ignore[attr-defined]
        conn.sni = server_name
        routed = sslsock._trustlab_routing  # type: ignore[attr-defined]
        wrong_site = (server_name or "").lower() not in self._backend_names
        if routed and conn.identity in LEGITIMATE_IDS and wrong_site:
            sslsock.context = self._default_ctx
            conn.site = "default"

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                conn = Connection(seq=len(self._state.connections), identity=self._state.identity)
                routing = self._state.sni_routing
                mode = (self._state.client_auth, self._state.keepalive, self._state.generation, self._state.backend)
                self._state.connections.append(conn)
            threading.Thread(target=self._handle, args=(raw, conn, routing, *mode), daemon=True).start()

    def _handle(
        self,
        raw: socket.socket,
        conn: Connection,
        routing: bool,
        client_auth: bool = False,
        keepalive: bool = False,
        generation: int = 0,
        backend: str | None = None,
    ) -> None:
        raw.settimeout(5)
        # No Nagle: the response must not wait for the ACK of the session tickets.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.site = conn.site or "backend"
        try:
            addr = raw.getsockname()
            host = addr[0].removeprefix("::ffff:") if "." in addr[0] else addr[0]  # IPv4 on a dual-stack seat
            conn.dest = f"{host}:{addr[1]}"
        except OSError:
            pass
        tls: ssl.SSLSocket | None = None
        try:
            # Told apart from a handshake that failed: a probe says nothing about this identity
            # (OpenSSL reports its EOF as an unexpected EOF or a clean close, by build).
            if not raw.recv(1, socket.MSG_PEEK):
                conn.probe = True
                conn.error = PROBE_NOTE
                return
            if client_auth:
                ctx = self._mtls_context(conn.identity)
            else:
                ctx = (self._contexts if backend is None else self._backend_contexts[backend])[conn.identity]
            # SSLContext.wrap_socket gives an SSLSocket; stash per-connection state on it so
            # the SNI callback (which only receives the socket) can record and route.
            tls = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls._trustlab_conn = conn  # type: ignore[attr-defined]
            tls._trustlab_routing = routing  # type: ignore[attr-defined]
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                conn.error = _short(exc)
                raw.close()
                return
            conn.tls = tls.version()
            conn.resumed = bool(tls.session_reused)
            if client_auth:
                conn.client_subject, conn.client_issuer = _peer_names(tls)
            first, pending, served = conn, b"", 0
            while True:
                head, pending = _read_head(tls, pending)
                lines = head.split(b"\r\n")
                request = lines[0].decode("latin-1") if lines and lines[0] else None
                if request is None:
                    if not served:
                        # The proxy completed the handshake, then hung up: nginx checks the
                        # verify result only after the handshake, and closes here when it fails.
                        conn.error = "closed after the handshake without a request"
                    return
                if served:  # keep-alive: a further request on this connection, its own entry
                    conn = self._reused(first)
                conn.request = request
                for line in lines[1:]:
                    if line.lower().startswith(b"host:"):
                        conn.host = line[5:].strip().decode("latin-1")
                self._respond(tls, conn, keepalive=keepalive)
                served += 1
                if not keepalive:
                    break
                with self._lock:
                    if self._stop.is_set() or self._state.generation != generation:
                        return  # the next cell already began: never carry a connection into it
                    self._idle.add(tls)  # wrap_socket detached *raw*: shut the TLS socket down
                tls.settimeout(30)
                try:
                    pending += tls.recv(4096)
                except (ssl.SSLError, OSError):
                    return
                finally:
                    with self._lock:
                        self._idle.discard(tls)
                if not pending:
                    return
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
        except (ssl.SSLError, OSError) as exc:
            conn.error = conn.error or _short(exc)
        finally:
            if tls is not None:
                tls.close()  # wrap_socket detached *raw*: the TLS socket owns the descriptor
            raw.close()
            with self._settled:
                self._settled.notify_all()

    def _reused(self, first: Connection) -> Connection:
        """A log entry for a further request on *first*'s connection (no new handshake)."""
        with self._lock:
            conn = Connection(
                seq=len(self._state.connections),
                identity=first.identity,
                sni=first.sni,
                tls=first.tls,
                site=first.site,
                dest=first.dest,
                client_subject=first.client_subject,
                client_issuer=first.client_issuer,
                reused=True,
                conn=first.seq,
            )
            self._state.connections.append(conn)
        return conn

    def _respond(self, tls: ssl.SSLSocket, conn: Connection, *, keepalive: bool) -> None:
        served_by = conn.identity if conn.site == "backend" else f"{conn.identity}@default-site"
        body = json.dumps({"identity": served_by, "sni": conn.sni, "tls": conn.tls, "request": conn.request}).encode()
        tls.sendall(
            b"HTTP/1.1 200 OK\r\n"
            + f"{IDENTITY_HEADER}: {served_by}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + (b"Connection: keep-alive\r\n" if keepalive else b"Connection: close\r\n")
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with self._settled:
            conn.served = True
            self._settled.notify_all()


def _read_head(tls: ssl.SSLSocket, pending: bytes) -> tuple[bytes, bytes]:
    """One request head (up to the blank line) and what followed it; ``b""`` on hang-up."""
    head = pending
    while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
        try:
            chunk = tls.recv(4096)
        except (ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            return (head if b"\r\n" in head else b""), b""
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    return head, rest


def _peer_names(tls: ssl.SSLSocket) -> tuple[str | None, str | None]:
    """The client certificate's subject and issuer, ``None`` when the proxy sent none."""
    cert = tls.getpeercert()
    if not cert:
        return None, None

    def name(rdns: object) -> str:
        # CN and O only: trustme adds a random OU per certificate, which would differ per run.
        short = {"commonName": "CN", "organizationName": "O"}
        parts = [f"{short[k]}={v}" for rdn in rdns for k, v in rdn if k in short]  # type: ignore[attr-defined]
        return ",".join(parts)

    return name(cert.get("subject", ())), name(cert.get("issuer", ()))


def _advertise_client_ca(ctx: ssl.SSLContext, ca_file: Path) -> None:
    """Send *ca_file*'s subject as the acceptable client CA (CertificateRequest's CA list).

    Python's ssl module has no call for ``SSL_CTX_set_client_CA_list``; without it the list is
    empty and a proxy holding several client certificates (Apache) just sends its first. The
    call goes to the libssl this interpreter's ``_ssl`` is linked with; the context pointer is
    the first field after the object header of CPython's ``PySSLContext``. Where that is not
    available the seat still works, without a list (and says so in the evidence: the
    certificate the proxy picked is recorded either way).
    """
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        lib.SSL_load_client_CA_file.restype = ctypes.c_void_p
        lib.SSL_load_client_CA_file.argtypes = [ctypes.c_char_p]
        lib.SSL_CTX_set_client_CA_list.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        names = lib.SSL_load_client_CA_file(str(ca_file).encode())
        if not names:
            return
        ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        lib.SSL_CTX_set_client_CA_list(ssl_ctx, names)
    except (OSError, AttributeError):  # pragma: no cover - a non-CPython or a static build
        pass


def _short(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.library or 'SSL'}: {exc.reason}".replace("_", " ").lower()
    return str(exc) or type(exc).__name__


# -- standalone seat with a control port (Docker runtime) ----------------------------------
def _control(seat: Seat, host: str, port: int) -> None:
    srv = socket.create_server((host, port), reuse_port=False)
    while True:
        cli, _ = srv.accept()
        with cli, cli.makefile("rwb") as fh:
            for raw_line in fh:
                words = raw_line.decode().split()
                reply: object
                try:
                    if not words:
                        continue
                    if words[0] == "present":
                        # present ID [route] [mtls] [keepalive] [backend=NAME]
                        flags = set(words[2:])
                        backend = next((w.split("=", 1)[1] for w in words[2:] if w.startswith("backend=")), None)
                        seat.present(
                            words[1],
                            sni_routing="route" in flags,
                            client_auth="mtls" in flags,
                            keepalive="keepalive" in flags,
                            backend=backend,
                        )
                        reply = "ok"
                    elif words[0] == "mark":
                        reply = seat.mark()
                    elif words[0] == "since":
                        reply = [asdict(c) for c in seat.since(int(words[1]))]
                    elif words[0] == "ping":
                        reply = "pong"
                    else:
                        reply = {"error": f"unknown command {words[0]!r}"}
                except (KeyError, IndexError, ValueError) as exc:
                    reply = {"error": repr(exc)}
                fh.write(json.dumps(reply).encode() + b"\n")
                fh.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.runtimes.seat")
    parser.add_argument("--pki", required=True, type=Path)
    parser.add_argument("--listen", default="0.0.0.0:8443")
    parser.add_argument("--control", default="0.0.0.0:9000")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    chost, _, cport = args.control.rpartition(":")
    with Seat(args.pki, host=host, port=int(port)) as seat:
        print("seat ready", flush=True)
        _control(seat, chost, int(cport))


if __name__ == "__main__":  # pragma: no cover
    main()
