"""The part of a docker lab that runs *inside* the lab network: the worker container.

Started by :mod:`harness.runtimes.docker` as the lab image's default command,
``python3 -m harness.runtimes.dockerworker /lab/job.json``, with the lab volume at ``/lab``
(code, PKI, rendered configs, the job). Stdlib only: the image carries Debian's python3 and
nothing else.

In the default (``shared``) layout this container holds the lab's address and the backend's
names, and runs the backend seat in this process, as a local lab's namespace worker does; in
the ``per-variant`` layout the seat is its own container, driven over its control port. It
starts the proxies it owns (``"command"`` in a proxy spec: one process per variant, in this
container) or waits for the ones running in their own containers (``"exit_file"``: the proxy
container writes its exit status there when the proxy refuses to start), then runs the cells
with :func:`harness.runtimes.nsworker.run_batches`, the local runtime's own loop, and writes one
JSON line per event to stdout, which the host follows.

A job with ``"mode": "prepared"`` (``trustlab check``, :meth:`DockerRuntime.run_prepared
<harness.runtimes.docker.DockerRuntime.run_prepared>`) is a whole lab in this one container
with no network: :func:`main_prepared` puts the lab addresses on its own loopback, writes its
hosts file and runs the seats here, like the local runtime's namespace worker.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.runtimes import nsworker as _nsworker
from harness.runtimes import sandbox
from harness.runtimes.contract import DoneEvent, FatalEvent, ProxyEvent, ProxySpec, WorkerJob, load_job
from harness.runtimes.limits import Watch
from harness.runtimes.nsworker import Proxy, Seats, emit, hold_seat, run_batches, stop_all
from harness.runtimes.sandbox import CONTAINER_USER
from harness.runtimes.seat import Connection
from harness.vocab import BACKEND_NAME


class SeatClient:
    """The seat's control port, with the same verbs as :class:`harness.runtimes.seat.Seat`."""

    def __init__(self, host: str, port: int, *, deadline: float) -> None:
        last: Exception | None = None
        while time.perf_counter() < deadline:
            try:
                self._sock = socket.create_connection((host, port), timeout=10)
                self._fh = self._sock.makefile("rwb")
                if self._call("ping") == "pong":
                    return
            except OSError as exc:
                last = exc
                time.sleep(0.01)
        raise OSError(f"the backend seat did not answer on {host}:{port} ({last})")

    def _call(self, line: str) -> Any:
        self._fh.write(line.encode() + b"\n")
        self._fh.flush()
        reply = json.loads(self._fh.readline())
        if isinstance(reply, dict) and "error" in reply:
            raise OSError(f"seat: {line!r}: {reply['error']}")
        return reply

    def present(
        self,
        identity: str,
        *,
        sni_routing: bool = False,
        client_auth: bool = False,
        keepalive: bool = False,
        backend: str | None = None,
    ) -> None:
        flags = [f for f, on in (("route", sni_routing), ("mtls", client_auth), ("keepalive", keepalive)) if on]
        self._call(" ".join(["present", identity, *flags, *([f"backend={backend}"] if backend else [])]))

    def mark(self) -> int:
        return int(self._call("mark"))

    def since(self, mark: int) -> list[Connection]:
        return [Connection(**c) for c in self._call(f"since {mark}")]

    def log(self) -> list[Connection]:
        """Every connection since the seat started (a held lab's ``log``)."""
        return self.since(0)

    def close(self) -> None:
        self._sock.close()


class ContainerProxy(Proxy):
    """A proxy running in its own container; this worker only watches its files and port."""

    def __init__(self, spec: ProxySpec) -> None:
        super().__init__(spec)
        assert spec.exit_file is not None
        self.exit_file = Path(spec.exit_file)

    def start(self, *, hosts_file: str = "/etc/hosts", etc_dir: str = "", bounded: bool = False) -> None:
        self.started_at = time.perf_counter()
        sandbox.create_log(self.log)

    def wait_ready(self, deadline: float) -> ProxyEvent:
        first = True  # asked at least once (see _nsworker.Proxy.wait_ready)
        while first or time.perf_counter() < deadline:
            first = False
            if self.exit_file.exists():
                text = self.output()
                return ProxyEvent(self.key, False, message=self.driver.startup_message(text), output=text[-4000:])
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.005)
                continue
            ready = self.driver.ready(self.host, self.port, self.output)  # see _nsworker.Proxy.wait_ready
            if ready is True:
                return ProxyEvent(self.key, True, start_s=time.perf_counter() - self.started_at)
            if ready:
                return ProxyEvent(self.key, False, message=ready, output=self.output()[-4000:])
            time.sleep(0.005)
        return ProxyEvent(
            self.key,
            False,
            message=f"did not listen (or was not ready) on {self.host}:{self.port} within the timeout",
            output=self.output()[-4000:],
            timeout=True,
        )


def main(argv: list[str]) -> int:
    job = load_job(Path(argv[1] if len(argv) > 1 else "/lab/job.json").read_text())
    # The container is the lab's cgroup (its memory and pids limits): its counters say when the
    # lab hit them.
    _nsworker.WATCH = Watch.container()

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    if job.mode == "prepared":
        return main_prepared(job)
    started = time.perf_counter()
    proxies = [ContainerProxy(s) if s.exit_file else Proxy(s) for s in job.proxies]

    def lab() -> None:
        # nginx and HAProxy resolve the backend name when they start: wait until the lab's
        # name resolves (its hosts file, or docker's DNS once this container's network is up).
        wait_for_name(BACKEND_NAME, started + job.start_timeout)
        with seat_of(job, deadline=started + job.start_timeout) as seat:
            run_batches(job, proxies, seat, started=started, start=lambda p: p.start())
            hold = job.hold
            if hold:  # `trustlab up`: keep serving; the host stops this container with `trustlab down`
                hold_seat(seat, hold, log=seat.log)
            emit(DoneEvent())
            while hold:
                time.sleep(3600)

    return run_lab(lab, proxies)


def run_lab(lab: Callable[[], None], proxies: list[Proxy]) -> int:
    """Run *lab*; the worker's exit status (130 on an interrupt, 1 after a fatal event), its
    proxies stopped whatever happened."""
    try:
        lab()
    except KeyboardInterrupt:
        return 130
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        emit(FatalEvent(str(exc)))
        return 1
    finally:
        stop_all(proxies)
    return 0


def seat_of(job: WorkerJob, *, deadline: float) -> contextlib.AbstractContextManager[Any]:
    """The lab's backend seat: in this process, at this container's own address (the ``shared``
    layout: the worker holds the lab's address and names, as a local lab's namespace worker), or
    the seat's own container, reached over its control port (``per-variant``: the proxies' own
    containers reach it over the network). Either way it answers before any proxy starts:
    Squid probes each peer as it starts, and a refused probe left the peer down (502 "found all
    0 destinations") until a later probe, at most one a second."""
    if job.seat_control_port:
        return contextlib.closing(SeatClient(job.seat_host, job.seat_control_port, deadline=deadline))
    return Seats(job)


def main_prepared(job: WorkerJob) -> int:
    """A prepared lab (``trustlab check``): seats, proxies and client all in this container.

    The same steps as a local lab's namespace worker (:func:`harness.runtimes.nsworker.main`):
    the lab addresses on this container's own loopback, the lab's hosts file, one seat per
    upstream port on ``0.0.0.0``, one process per proxy config, the cells in order.
    """
    proxies = [Proxy(s) for s in job.proxies]

    def lab() -> None:
        for addr in dict.fromkeys([job.backend_ip, *job.addresses]):
            if not addr.startswith("127.") and addr != "::1":
                add_address(addr)
        # The container's own hosts file (docker writes one per container); the host's is untouched.
        Path("/etc/hosts").write_text(job.hosts)
        if not job.unconfined:
            drop_to_lab_user(Path("/lab"))
        with Seats(job) as seat:
            run_batches(job, proxies, seat, started=time.perf_counter(), start=lambda p: p.start())
            emit(DoneEvent())

    return run_lab(lab, proxies)


def drop_to_lab_user(lab: Path) -> None:
    """Give up root for good before any seat or proxy starts (a ``check`` config is untrusted).

    Only the two steps above need root (the loopback addresses, the hosts file). The lab's files
    become the lab user's, then this process takes that uid and gid: setuid from root to another
    uid clears every capability, and ``no_new_privs`` keeps any exec from getting one back, so the
    proxies run as the lab containers' user (:data:`harness.runtimes.sandbox.CONTAINER_USER`) with none.
    Ports below 1024 stay bindable through the container's own
    ``net.ipv4.ip_unprivileged_port_start`` (set where the container is created).
    """
    if os.geteuid() != 0:
        return
    uid, gid = (int(x) for x in CONTAINER_USER.split(":"))
    for root, dirs, files in os.walk(lab):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(lab, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def add_address(addr: str) -> None:
    """``ip addr add ADDR dev lo`` over rtnetlink (the lab image carries no iproute2)."""
    ip = ipaddress.ip_address(addr.strip("[]"))
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    packed = ip.packed

    def attr(kind: int, payload: bytes) -> bytes:
        size = 4 + len(payload)
        return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)

    # struct ifaddrmsg (family, prefix length, flags, scope, interface) + IFA_LOCAL + IFA_ADDRESS
    body = struct.pack("=BBBBI", family, 8 * len(packed), 0, 0, socket.if_nametoindex("lo"))
    body += attr(_IFA_LOCAL, packed) + attr(_IFA_ADDRESS, packed)
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL
    message = struct.pack("=IHHII", 16 + len(body), _RTM_NEWADDR, flags, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as nl:  # NETLINK_ROUTE
        nl.bind((0, 0))
        nl.send(message)
        reply = nl.recv(65536)
    error = -struct.unpack_from("=i", reply, 16)[0]  # struct nlmsgerr after the reply's header
    if error and error != errno.EEXIST:
        raise OSError(error, f"cannot put the lab address {addr} on the loopback: {os.strerror(error)}")


_RTM_NEWADDR = 20
_PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400


def wait_for_name(name: str, deadline: float) -> None:
    while True:
        try:
            socket.getaddrinfo(name, None)
            return
        except OSError:
            if time.perf_counter() > deadline:
                raise OSError(f"{name} does not resolve in the lab network (is the lab network up?)") from None
            time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
