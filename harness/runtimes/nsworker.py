"""The part of a local lab that runs *inside* its private network + mount namespace.

Started by :mod:`harness.runtimes.local` as
``unshare --net --mount --pid --mount-proc --propagation private [--user --map-root-user] --fork
--kill-child python -m harness.runtimes.nsworker`` with a JSON job on stdin (the worker is the
init of its pid namespace: nothing it starts outlives it). It brings up the namespace's
own loopback, gives it the lab IP, bind-mounts the lab's hosts file over ``/etc/hosts`` (inside
this mount namespace only: the host's file is never touched), starts the backend seat and
one proxy process per scenario (each in :mod:`harness.runtimes.sandbox`: bubblewrap, its own uid, no
capabilities, a clean environment, rlimits), runs the cells in the order given, and writes one JSON line
per event to stdout. Every process it starts dies with it (``PR_SET_PDEATHSIG``).

The worker is root (of the host, or of a user namespace) and trusts nothing a proxy can write
(issue 26): it runs with an explicit minimal environment (:func:`harness.runtimes.sandbox.worker_environment`),
reads a proxy's stdout through its own descriptor and its logs with
:func:`harness.runtimes.sandbox.read_planted` (no link followed, a regular file of the proxy's uid, a
bounded tail, never blocking), and survives a proxy deleting its own logs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.proxies import driver
from harness.runtimes import sandbox
from harness.runtimes.contract import (
    CellEvent,
    CellSpec,
    DoneEvent,
    Event,
    FatalEvent,
    HoldSpec,
    ProxyEvent,
    ProxySpec,
    WorkerJob,
    batches,
    dump_event,
    early_keys,
    load_job,
)
from harness.runtimes.limits import RUN_DIR_BYTES, RUN_DIR_FILES, Watch
from harness.runtimes.probe import Response, decide, request
from harness.runtimes.seat import Seat
from harness.vocab import PUBLIC_HOST, Outcome

_PR_SET_PDEATHSIG = 1
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def confined_child(overrides: tuple[tuple[int, int], ...] = ()) -> None:
    """preexec_fn of a sandboxed proxy: dies with the worker, rlimits on (incl. processes)."""
    die_with_parent()
    sandbox.limit(nproc=True, overrides=overrides)


def limited_child(overrides: tuple[tuple[int, int], ...] = ()) -> None:
    """preexec_fn of a proxy in a container: dies with the worker, rlimits on (the container's
    pids limit bounds its processes)."""
    die_with_parent()
    sandbox.limit(nproc=False, overrides=overrides)


#: The lab's limits (its cgroup's counters), set by each worker's main: an event after the lab
#: hit its memory or process limit says so (see :func:`explained`).
WATCH = Watch()


def explained(event: Event) -> Event:
    """*event*, its reason led by the limit the lab hit (an ``error`` cell, a proxy that never
    listened, the lab's fatal error), so exhaustion reads as such, not as a later symptom."""
    if isinstance(event, CellEvent) and event.outcome is Outcome.ERROR:
        return dataclasses.replace(event, reason=WATCH.explain(event.reason))
    if isinstance(event, ProxyEvent) and not event.started and (hit := WATCH.hit()):
        # Not the config's fault: the lab's limit ended it (its cells are errors).
        return dataclasses.replace(event, message=f"{hit} ({event.message})", died=True)
    if isinstance(event, FatalEvent):
        return FatalEvent(WATCH.explain(event.message))
    return event


def emit(event: Event) -> None:
    sys.stdout.write(dump_event(explained(event)) + "\n")
    sys.stdout.flush()


def setup_namespace(job: WorkerJob) -> None:
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True)  # noqa: E731
    run("ip", "link", "set", "lo", "up")
    run("ip", "addr", "add", f"{job.backend_ip}/32", "dev", "lo")
    # Extra addresses a user's config targets directly (``trustlab check``): each is put on
    # this namespace's own loopback, so the seat answers there and nothing leaves the lab.
    for addr in dict.fromkeys(job.addresses):
        if addr == job.backend_ip or addr.startswith("127.") or addr == "::1":
            continue  # already there (127.0.0.0/8 and ::1 come with lo)
        run("ip", "addr", "add", f"{addr}/{128 if ':' in addr else 32}", "dev", "lo")
    run("mount", "--bind", job.hosts_file, "/etc/hosts")
    if job.run_tmpfs:
        # Where each proxy's run-dir tmpfs is made before it moves into place: a tmpfs of this
        # namespace's own, so nothing of it is written into the lab directory the host removes
        # (a worker still starting proxies as the host removed the lab left a directory behind).
        global _SCRATCH
        _SCRATCH = Path(job.hosts_file).parent / ".scratch"
        _SCRATCH.mkdir(mode=0o700, exist_ok=True)
        _mount("trustlab-scratch", _SCRATCH, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0700")


#: The namespace's own tmpfs where run-dir tmpfs mounts are made (:func:`setup_namespace`).
_SCRATCH: Path | None = None


def bounded_run_dir(run_dir: Path) -> None:
    """Make *run_dir* a tmpfs of :data:`~harness.runtimes.limits.RUN_DIR_BYTES` and
    :data:`~harness.runtimes.limits.RUN_DIR_FILES` files, holding what the host put there
    (config, extra files), in this mount namespace only: what a proxy writes is bounded (and
    charged to the lab's memory limit), and gone with the lab.

    Mounted as the proxy starts and unmounted as it stops (:meth:`Proxy.close`): bubblewrap reads
    the mount table for each of its binds, and a worker that mounted every proxy's tmpfs up front
    (about 80 a shard) made each proxy's start cost twice the CPU."""
    scratch = Path(tempfile.mkdtemp(prefix=".tmpfs-", dir=_SCRATCH or run_dir.parent))
    # mount(2) itself: a mount(8) process per call cost ~1 s a worker on the full matrix.
    _mount(
        "trustlab-run",
        scratch,
        "tmpfs",
        _MS_NOSUID | _MS_NODEV,
        f"size={RUN_DIR_BYTES},nr_inodes={RUN_DIR_FILES},mode=0755",
    )
    shutil.copytree(run_dir, scratch, symlinks=True, dirs_exist_ok=True)
    _mount("", run_dir, "", _MS_MOVE, "", source=scratch)
    scratch.rmdir()


_MS_NOSUID, _MS_NODEV, _MS_MOVE = 0x2, 0x4, 0x2000  # <linux/mount.h>
_MNT_DETACH = 0x2


def _mount(what: str, target: Path, fstype: str, flags: int, data: str, *, source: Path | None = None) -> None:
    src = str(source) if source is not None else what
    if _libc.mount(src.encode(), str(target).encode(), fstype.encode() or None, flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'move'} on {target}: {os.strerror(err)}")


class Seats:
    """One backend seat per port, all presenting the same identity.

    The default (matrix) job has one seat at ``backend_ip:seat_port``. A job with ``seat_ports``
    (``trustlab check``) gets one seat per distinct upstream port, bound to ``seat_host``
    (``0.0.0.0``: every lab address, the backend IP, extra addresses and 127.0.0.1).
    """

    def __init__(self, job: WorkerJob) -> None:
        extra = {"backend_names": job.backend_names} if job.backend_names else {}
        if job.seat_ports:
            self.seats = [Seat(Path(job.pki_dir), host=job.seat_host, port=p, **extra) for p in job.seat_ports]
        else:
            self.seats = [Seat(Path(job.pki_dir), host=job.backend_ip, port=job.seat_port, **extra)]

    def __enter__(self) -> Seats:
        for seat in self.seats:
            seat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for seat in self.seats:
            seat.stop()

    def present(
        self,
        identity: str,
        *,
        sni_routing: bool = False,
        client_auth: bool = False,
        keepalive: bool = False,
        backend: str | None = None,
    ) -> None:
        for seat in self.seats:
            seat.present(
                identity, sni_routing=sni_routing, client_auth=client_auth, keepalive=keepalive, backend=backend
            )

    def mark(self) -> list[int]:
        return [seat.mark() for seat in self.seats]

    def since(self, marks: list[int]) -> list[Any]:
        return [c for seat, m in zip(self.seats, marks, strict=True) for c in seat.since(m)]

    def log(self) -> list[Any]:
        """Every connection since the seats started (a held lab's ``log``)."""
        return self.since([0] * len(self.seats))

    def wait_settled(self, marks: list[int], *, timeout: float) -> list[Any]:
        until = time.perf_counter() + timeout
        return [
            c
            for seat, m in zip(self.seats, marks, strict=True)
            for c in seat.wait_settled(m, timeout=max(0.0, until - time.perf_counter()))
        ]


class Proxy:
    """One proxy process of the lab."""

    def __init__(self, spec: ProxySpec) -> None:
        self.key = spec.key
        self.driver = driver(spec.kind)
        self.port = spec.listen_port
        #: Where the probe connects: loopback here; another container in the docker runtime.
        self.host = spec.host
        self.run_dir = Path(spec.run_dir)
        self.log = Path(spec.log)
        self.command = spec.argv()
        #: What the proxy needs beyond PATH/LANG/HOME (its driver's :meth:`~Driver.environment`).
        self.env = dict(spec.env)
        #: Another root file system the proxy runs on (its installation's ``root``), or "".
        self.root = spec.installation.root if spec.installation else ""
        #: The local sandbox (bubblewrap) with the lab files it reads and the key files among them
        #: it must own; ``None``: a container is the sandbox (clean environment and rlimits only).
        #: *unconfined*: the tests' opt-out, to show what a payload does unconfined.
        self.unconfined = spec.unconfined
        self.sandbox = spec.sandbox
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.spawn_s: float | None = None
        self.listen_s: float | None = None
        self.uid: int | None = None
        self.stdout_path = self.run_dir / "stdout.log"
        #: The worker's own descriptor of the proxy's stdout (``None``: read it by path, safely).
        self.out_fd: int | None = None
        #: Whether its run directory is a tmpfs this worker mounted (:func:`bounded_run_dir`).
        self.bounded = False
        #: The other ports its cells are sent to (a ``check`` config's other listeners).
        self.ports: tuple[int, ...] = ()

    def start(self, *, hosts_file: str = "/etc/hosts", etc_dir: str = "", bounded: bool = False) -> None:
        """Start the proxy; *bounded*: its run directory a tmpfs of its own first
        (:func:`bounded_run_dir`), unmounted when it is closed."""
        self.started_at = time.perf_counter()
        if bounded:
            bounded_run_dir(self.run_dir)
            self.bounded = True
        # The worker keeps its own descriptor of the proxy's stdout and reads it back through
        # that (pread), never by path: the proxy may replace the file with a link, a FIFO or a
        # device, and this worker is root.
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        self.out_fd = os.open(self.stdout_path, flags, 0o644)
        if self.log != self.stdout_path:
            sandbox.create_log(self.log)
        command, preexec = self.command, limited_child
        if self.sandbox is not None:
            self.uid = sandbox.new_uid() if sandbox.host_root() else None
            keys = [Path(k) for k in self.sandbox.keys]
            # Key directories are this proxy's alone (check); key files may be shared: copied.
            sandbox.hand_over([self.run_dir, *(k for k in keys if k.is_dir())], self.uid)
            private = sandbox.own_copies([k for k in keys if k.is_file()], self.run_dir, self.uid)
            command = sandbox.command(
                self.command,
                run_dir=str(self.run_dir),
                hosts_file=hosts_file,
                etc_dir=etc_dir,
                read_only=self.sandbox.read_only,
                private=private,
                uid=self.uid,
                env=self.env,
                root=self.root,
            )
            # Without host root the proxies keep the caller's own uid: a process limit there would
            # count every process of that user (a desktop session), so only the others apply.
            preexec = confined_child if self.uid is not None else limited_child
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self.out_fd,
            stderr=subprocess.STDOUT,
            cwd=self.run_dir,
            env=None if self.unconfined else {**sandbox.environment(str(self.run_dir)), **self.env},
            preexec_fn=die_with_parent if self.unconfined else functools.partial(preexec, self.driver.rlimits),
            # Its own process group: stopping the proxy stops what it forked too (a helper, a
            # worker process), not only its main process.
            start_new_session=True,
        )
        self.spawn_s = time.perf_counter() - self.started_at

    def _await_other_ports(self, until: float) -> None:
        """Wait (until *until* at most) for the other ports its cells use to accept: a proxy binds
        its listeners one after another, and a cell sent to the second the moment the first
        answered was refused (nginx with ``listen 80`` and ``listen 443 ssl``, under load: a
        ``check`` cell in error once in a few CI runs). One that never binds is the cell's to
        report."""
        waiting = [port for port in self.ports if port != self.port]
        while waiting and time.perf_counter() < until:
            waiting = [port for port in waiting if not _accepts(self.host, port)]
            if waiting:
                time.sleep(0.002)

    def wait_ready(self, deadline: float) -> ProxyEvent:
        assert self.proc is not None
        # Readiness is checked lazily, after the cells of the proxies before it: on a loaded
        # machine that can be past the deadline, so the proxy is always asked at least once
        # (a full matrix under load had its Envoys, started last, "not listening" while they were).
        while True:
            if self.proc.poll() is not None:
                text = self.output()
                message, died = self.how_it_ended(text)
                return ProxyEvent(self.key, False, message=message, output=text[-4000:], died=died)
            if not _accepts(self.host, self.port):
                if time.perf_counter() >= deadline:
                    break
                time.sleep(0.002)
                continue
            if self.listen_s is None:
                self.listen_s = time.perf_counter() - self.started_at
            # Listening is not always ready: Traefik applies its routers a moment later.
            ready = self.driver.ready(self.host, self.port, self.output)
            if ready is True:
                self._await_other_ports(time.perf_counter() + OTHER_PORTS_S)
                return ProxyEvent(
                    self.key,
                    True,
                    start_s=time.perf_counter() - self.started_at,
                    spawn_s=self.spawn_s,
                    listen_s=self.listen_s,
                )
            if ready:  # it listens, but refused its configuration
                return ProxyEvent(self.key, False, message=ready, output=self.output()[-4000:], died=False)
            if time.perf_counter() >= deadline:
                return ProxyEvent(
                    self.key,
                    False,
                    message=f"listened on port {self.port} but was not ready within the timeout",
                    output=self.output()[-4000:],
                    timeout=True,
                )
            time.sleep(0.005)
        return ProxyEvent(
            self.key,
            False,
            message=f"did not listen on port {self.port} within the timeout",
            output=self.output()[-4000:],
            timeout=True,
        )

    def how_it_ended(self, text: str) -> tuple[str, bool]:
        """What the proxy said as it exited, and how it ended; *died* is true when it did not
        refuse its config but was killed or could not write (so: ``error``, not config-rejected)."""
        assert self.proc is not None
        code = self.proc.returncode
        # Under bubblewrap a proxy killed by a signal shows as bwrap's exit status 128 + signal.
        sig = -code if code is not None and code < 0 else 0
        if self.sandbox is not None and code is not None and 128 < code < 128 + 65:
            sig = code - 128
        if sig:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            return f"the proxy was killed by {name} before it listened (not a config error)", True
        if "No space left on device" in text or _disk_full(self.run_dir):
            return (
                f"the proxy could not write to its lab directory {self.run_dir} (no space left on device: "
                f"its own limit of {RUN_DIR_BYTES >> 20} MiB and {RUN_DIR_FILES} files, or the disk; for the "
                "disk, free some space or set TRUSTLAB_TMPDIR to another directory)"
            ), True
        if text.startswith(("bwrap: ", "setpriv: ")):  # the sandbox could not start it: not the config's fault
            return f"the sandbox could not start the proxy: {text.strip().splitlines()[0]}", True
        message = self.driver.startup_message(text)
        return (f"{message} (exit status {code})" if code not in (None, 0, 1) else message), False

    def _read(self, path: Path, since: int = 0) -> tuple[bytes, str | None]:
        """What the proxy wrote to *path*: through the worker's own descriptor for stdout, else
        by :func:`harness.runtimes.sandbox.read_planted` (no link, regular file, the proxy's own, a tail)."""
        if path == self.stdout_path and self.out_fd is not None:
            return sandbox.tail(self.out_fd, since=since), None
        owners = None if self.uid is None else (self.uid,)  # hand_over gave it every file there
        return sandbox.read_planted(path, self.run_dir, since=since, owners=owners)

    def log_size(self) -> int:
        if self.log == self.stdout_path and self.out_fd is not None:
            return os.fstat(self.out_fd).st_size
        return sandbox.size_planted(self.log, self.run_dir)

    def read_log(self, since: int) -> str:
        """The proxy's error log after offset *since* (its last 64 KiB at most)."""
        return self._read(self.log, since)[0].decode("utf-8", "replace")

    def output(self) -> str:
        """The proxy's stdout and error log (the last 64 KiB of each), and a line for a file
        that was not read because the proxy replaced it."""
        texts = []
        for f in dict.fromkeys((self.stdout_path, self.log)):
            data, refused = self._read(f)
            texts.append(data.decode("utf-8", "replace"))
            if refused:
                texts.append(f"trustlab: {refused}")
        return "\n".join(t for t in texts if t)

    def stop(self) -> None:
        """Stop this proxy and what it forked (:func:`stop_all`)."""
        stop_all([self])

    def close(self) -> None:
        if self.out_fd is not None:
            os.close(self.out_fd)
            self.out_fd = None
        if self.bounded:
            self.bounded = False
            if _libc.umount2(str(self.run_dir).encode(), _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"umount {self.run_dir}: {os.strerror(err)}")


#: How long a ready proxy's other listeners get to accept before its cells run anyway.
OTHER_PORTS_S = 2.0


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64_000 or (st.f_files > 0 and st.f_favail == 0)


def _settled(seat: Seats, mark: Any) -> list[Any]:
    """The seat's connections after *mark*, once each has been served or has failed.

    The seat records a connection's TLS version and error on its own thread, a moment after
    the proxy has answered: waiting until each has settled keeps the evidence the same in every
    run and on every runtime."""
    waiter = getattr(seat, "wait_settled", None)
    if waiter is not None:
        return list(waiter(mark, timeout=0.5))
    conns = seat.since(mark)  # a remote seat (docker runtime): poll its log
    settle = time.perf_counter() + 0.5
    while any(not (c.served or c.error) for c in conns) and time.perf_counter() < settle:
        time.sleep(0.002)
        conns = seat.since(mark)
    return list(conns)


def _prime(seat: Seats, proxy: Proxy, cell: CellSpec, seq: int) -> str:
    """Multi-policy cells: one request under the loose policy first; what came of it."""
    mark = seat.mark()
    path = f"{cell.prime}trustlab-prime/{proxy.key}/{cell.identity}/{seq}"
    response = request(proxy.host, proxy.port, path, host_header=cell.host or PUBLIC_HOST)
    conns = _settled(seat, mark)
    got = f"marker {response.marker}" if response.marker else (response.error or "no marker")
    return f"prime {cell.prime}: status {response.status}, {got}, {len(conns)} new connection(s)"


def _reuse(conns: list[Any]) -> str | None:
    """The seat's reuse evidence for a request: no new handshake, or a resumed one."""
    if any(getattr(c, "reused", False) for c in conns):
        return "reused connection"
    if any(getattr(c, "resumed", False) for c in conns):
        return "resumed session"
    return None


def run_cell(seat: Seats, proxy: Proxy, cell: CellSpec, seq: int) -> CellEvent:
    identity = cell.identity
    seat.present(
        identity,
        sni_routing=cell.sni_routing,
        client_auth=cell.client_auth,
        keepalive=cell.keepalive,
        backend=cell.backend,
    )
    primed = _prime(seat, proxy, cell, seq) if cell.prime else None
    mark = seat.mark()
    # By descriptor or without following links, bounded: a proxy may have deleted or replaced its log.
    log_offset = proxy.log_size()
    # A cell may say where to send its request (``trustlab check``: the listener, Host and path
    # that reach one upstream of the user's config); a path ending in "/" gets a unique tail.
    # A query a route's matcher asks for (?debug=1) stays after the unique tail.
    path, q, query = cell.path.partition("?")
    if path.endswith("/"):
        path += f"trustlab-probe/{proxy.key}/{identity}/{seq}"
    # A request line is ASCII: a scenario named in another script (nginx/é) or a location
    # with non-ASCII text is sent percent-encoded, as a browser would (the proxy decodes it).
    path = urllib.parse.quote(path + q + query, safe=_PRINTABLE_ASCII)
    t0 = time.perf_counter()
    response = request(
        proxy.host,
        proxy.port if cell.port is None else cell.port,
        path,
        host_header=cell.host or PUBLIC_HOST,
        tls=cell.tls,
        method=cell.method,
        headers=cell.headers,
    )
    duration = time.perf_counter() - t0
    reason, log_text, warning = None, "", None
    if response.marker is not None and proxy.driver.serves_despite_failure:
        # A proxy that forwards despite a failed verification logs it during the handshake,
        # before the response: the line is there now (Traffic Server PERMISSIVE).
        warning = proxy.driver.block_reason(proxy.read_log(log_offset))
    if response.marker is None:
        # The verdict line may land a moment after the response (HAProxy logs at stream end).
        # A proxy refuses a backend with a 5xx (or by closing); any other status is its own
        # answer (403, a static 200): read the log once, without waiting for a line.
        wait = 1.0 if response.status is None or response.status >= 500 else 0.0
        until = time.perf_counter() + wait
        while True:
            log_text = proxy.read_log(log_offset)
            reason = proxy.driver.block_reason(log_text)
            # A proxy that has exited writes no more lines: its cells need not wait out the second.
            # Nor after the proxy's own error for this request (Traffic Server: no client session).
            if (
                reason
                or time.perf_counter() > until
                or proxy.driver.refused(log_text)
                or (proxy.proc is not None and proxy.proc.poll() is not None)
            ):
                break
            time.sleep(0.001)
    if response.error and proxy.proc is not None and proxy.proc.poll() is not None:
        # Started, then died (Apache binds its port before it reads mime.types, for one).
        text = proxy.output()
        response = Response(None, None, f"the proxy exited: {proxy.how_it_ended(text)[0]}")
    conns = _settled(seat, mark)
    # A proxy's bare TCP probe of its backend (Squid's, as it starts or when a request found the
    # peer down) can land among a cell's connections: a handshake's failure is the evidence, the
    # probe only when nothing else came (a 502 with only a probe: the peer was down).
    tls_conns = [c for c in conns if not getattr(c, "probe", False)]
    seat_error = next((c.error for c in tls_conns if c.error), None) or next((c.error for c in conns if c.error), None)
    outcome, why = decide(
        presented=identity,
        response=response,
        block_reason=reason,
        seat_error=seat_error,
        warning=warning,
        log_tail=log_text.strip().splitlines()[-1] if log_text.strip() else "",
    )
    reuse = _reuse(conns)
    if reuse and outcome in (Outcome.SERVED, Outcome.SPOOFED):
        why += f" ({reuse})"
    client = next((c for c in conns if getattr(c, "client_subject", None)), None)
    return CellEvent(
        key=proxy.key,
        identity=identity,
        outcome=outcome,
        status=response.status,
        reason=why,
        # The SNI of the first connection that sent one: Squid's own probe of its peer (a bare
        # TCP connect, no ClientHello) can land among a cell's connections first.
        sni=next((c.sni for c in conns if c.sni), None),
        tls=next((c.tls for c in conns if c.tls), None),
        duration_s=duration,
        connections=len(conns),
        dest=(tls_conns or conns)[0].dest if conns else None,
        label=cell.label,
        # Issue 14's evidence (null unless the scenario's seat mode or prime produces it).
        reuse=reuse,
        client_cert=f"{client.client_subject} (issuer {client.client_issuer})" if client else None,
        primed=primed,
    )


def deadline_cell(cell: CellSpec, seconds: float) -> CellEvent:
    """The cell a worker past its deadline does not run (see :attr:`WorkerJob.deadline_s`)."""
    return CellEvent(
        cell.key,
        cell.identity,
        Outcome.ERROR,
        None,
        f"deadline: not run, the lab's {seconds:g} s were used up (does the config slow every request?)",
        label=cell.label,
    )


def past(ends: float | None) -> bool:
    return ends is not None and time.perf_counter() > ends


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while chunk := a.recv(65536):
            b.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (a, b):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(path: str, port: int) -> None:
    """Serve a unix socket (visible on the host's file system) that relays into 127.0.0.1:port
    of this namespace, so a held lab is reachable with ``curl --unix-socket`` while nothing
    listens on a host TCP port."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(16)

    def serve() -> None:
        while True:
            cli, _ = srv.accept()
            try:
                up = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                cli.close()
                continue
            threading.Thread(target=_pipe, args=(cli, up), daemon=True).start()
            threading.Thread(target=_pipe, args=(up, cli), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def control(path: str, present: Callable[[str], None], log: Callable[[], list[Any]]) -> None:
    """A unix control socket: ``present ID`` switches the seat, ``log`` returns its connections."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(4)

    def serve() -> None:
        while True:
            cli, _ = srv.accept()
            with cli, cli.makefile("rwb") as fh:
                words = fh.readline().decode().split()
                try:
                    if words[:1] == ["present"]:
                        present(words[1])
                        reply: object = {"ok": True, "identity": words[1]}
                    elif words[:1] == ["log"]:
                        reply = [c.__dict__ for c in log()]
                    else:
                        reply = {"ok": False, "error": f"unknown command {' '.join(words)!r}"}
                except (KeyError, IndexError, OSError) as exc:
                    reply = {"ok": False, "error": f"unknown identity {exc}"}
                fh.write(json.dumps(reply).encode() + b"\n")
                fh.flush()

    threading.Thread(target=serve, daemon=True).start()


def hold_seat(seat: Any, hold: HoldSpec, log: Callable[[], list[Any]]) -> None:
    """A held lab's seat: present the held identity in the held modes, and serve the control
    socket that switches it (``present ID``) and reads what it saw (``log``)."""

    def present(identity: str) -> None:
        seat.present(
            identity,
            sni_routing=hold.sni_routing,
            client_auth=hold.modes.get("client_auth", False),
            keepalive=hold.modes.get("keepalive", False),
            backend=hold.backend,
        )

    present(hold.identity)
    control(hold.control, present=present, log=log)


def main() -> int:
    global WATCH
    started = time.perf_counter()
    job = load_job(sys.stdin.read())
    WATCH = Watch(job.cgroup)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        # Once: a second SIGTERM (the host signals the worker and unshare) must not cut the
        # clean-up below short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proxies = [Proxy(spec) for spec in job.proxies]
    try:
        setup_namespace(job)
        etc_dir = ""
        if any(p.sandbox is not None for p in proxies):
            lab = Path(job.hosts_file).parent
            confined = [p for p in proxies if p.sandbox is not None]
            mounts = [x for p in confined if p.sandbox for x in p.sandbox.read_only if x.startswith("/etc/")]
            where = Path(tempfile.mkdtemp(prefix="sandbox-etc-", dir=lab))
            etc_dir = str(sandbox.write_etc(where, [p.root for p in confined], mounts))

        def start(p: Proxy) -> None:
            p.start(hosts_file=job.hosts_file, etc_dir=etc_dir, bounded=job.run_tmpfs)

        with Seats(job) as seat:
            ready = run_batches(job, proxies, seat, started=started, start=start)
            hold = job.hold
            if hold:
                for p in proxies:
                    if p.key in ready and ready[p.key].started:
                        relay(hold.socket_dir + ("/proxy.sock" if len(proxies) == 1 else f"/{p.port}.sock"), p.port)
                hold_seat(seat, hold, log=seat.log)
            emit(DoneEvent())
            if hold:
                stop.wait()
    except KeyboardInterrupt:
        return 130
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        emit(FatalEvent(f"{exc}: {detail}".strip()))
        return 1
    finally:
        stop_all(proxies)
    return 0


def run_batches(
    job: WorkerJob, proxies: list[Proxy], seat: Any, *, started: float, start: Callable[[Proxy], None]
) -> dict[str, ProxyEvent]:
    """Start *proxies* in batches and run the job's cells against *seat*, emitting each proxy's
    ``proxy`` event and each cell's event; returns the ``proxy`` events by key.

    Batches of ``job.start_batch`` (0: all at once): the next batch starts while this one's cells
    run, and each batch stops after its cells. Proxies ready only after a timer (Traffic Server)
    are a last batch started first. Each proxy is waited for lazily, with ``job.start_timeout``
    from its own start (a deadline per proxy): the first proxies' cells run while slower ones
    (Apache) still start. Past the job's deadline (``started + job.deadline_s``) the remaining
    cells are reported as ``error`` (deadline), not run.
    """
    by_key = {p.key: p for p in proxies}
    ports: dict[str, set[int]] = {}
    for c in job.cells:
        if c.port is not None:
            ports.setdefault(c.key, set()).add(c.port)
    for p in proxies:
        p.ports = tuple(sorted(ports.get(p.key, ())))
    early = early_keys(proxies)
    groups = [[by_key[k] for k in keys] for keys in batches([p.key for p in proxies], job.start_batch, early=early)]
    for p in [*groups[0], *(groups[-1] if early and len(groups) > 1 else [])]:
        start(p)
    ready: dict[str, ProxyEvent] = {}

    def ensure_ready(p: Proxy) -> bool:
        if p.key not in ready:
            ready[p.key] = p.wait_ready(p.started_at + job.start_timeout)
            emit(ready[p.key])
        return ready[p.key].started

    ends = started + job.deadline_s if job.deadline_s else None
    for i, group in enumerate(groups):
        if i + 1 < len(groups) and not past(ends):
            for p in groups[i + 1]:
                if not p.started_at:  # the early batch is running already
                    start(p)
        mine = {p.key for p in group}
        for seq, cell in enumerate(job.cells):
            if cell.key not in mine:
                continue
            if past(ends):
                # Reported, not run. A proxy that refused to start has its cells reported by
                # the runtime already; one never asked is not asked now (its event would
                # make the runtime report its cells a second time).
                if cell.key not in ready or ready[cell.key].started:
                    emit(deadline_cell(cell, job.deadline_s))
                continue
            if not ensure_ready(by_key[cell.key]):
                continue  # the runtime reports config-rejected cells itself
            emit(run_cell(seat, by_key[cell.key], cell, seq))
        for p in group:
            if not past(ends):
                ensure_ready(p)
        if len(groups) > 1:
            stop_all(group)  # done with: its CPU and memory go to the next batches
    return ready


def _running(proc: subprocess.Popen[bytes]) -> bool:
    """Whether *proc* has not exited, without reaping it (its process group id stays its own)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """*sig* to the process group *proc* leads (its own: ``start_new_session``)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone (or, for a moment, holds a process of another uid)


def stop_all(proxies: list[Proxy], *, grace: float = 0.05) -> None:
    """Stop every proxy at once: SIGTERM to all, then SIGKILL whatever is left after *grace*.

    A lab's proxies hold nothing worth a graceful shutdown, and stopping them one by one cost
    seconds (Apache -X lingers on SIGTERM)."""
    running = [p.proc for p in proxies if p.proc is not None and p.proc.poll() is None]
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    until = time.perf_counter() + grace
    while time.perf_counter() < until and any(_running(proc) for proc in running):
        time.sleep(0.002)
    # Every group, whether its leader ended or not: what a proxy forked goes with it (a Squid
    # helper left behind outlived its lab worker in a docker lab). No leader is reaped yet, so
    # no group id can have been reused.
    for proc in running:
        _signal_group(proc, signal.SIGKILL)
    for proc in running:
        proc.wait()
    for p in proxies:
        p.close()


if __name__ == "__main__":
    sys.exit(main())
