"""The part of a docker lab that runs *inside* the lab network: the worker container.

Started by :mod:`harness.runtimes.docker` as the lab image's default command,
``python3 -m harness.runtimes._dockerworker /lab/job.json``, with the lab volume at ``/lab``
(code, PKI, rendered configs, the job). Stdlib only: the image carries Debian's python3 and
nothing else.

It waits for the backend seat (its own container, reached over the seat's control port),
starts the proxies it owns (``"command"`` in a proxy spec: one process per variant, in this
container) or waits for the ones running in their own containers (``"exit_file"``: the proxy
container writes its exit status there when the proxy refuses to start), then runs the cells
one at a time with :func:`harness.runtimes._nsworker.run_cell`, exactly as the local runtime
does, and writes one JSON line per event to stdout, which the host follows.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.runtimes._nsworker import Proxy, control, emit, run_cell
from harness.seat import Connection
from harness.vocab import BACKEND_NAME


class SeatClient:
    """The seat's control port, with the same verbs as :class:`harness.seat.Seat`."""

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

    def present(self, identity: str, *, sni_routing: bool = False) -> None:
        self._call(f"present {identity}{' route' if sni_routing else ''}")

    def mark(self) -> int:
        return int(self._call("mark"))

    def since(self, mark: int) -> list[Connection]:
        return [Connection(**c) for c in self._call(f"since {mark}")]

    def close(self) -> None:
        self._sock.close()


class ContainerProxy(Proxy):
    """A proxy running in its own container; this worker only watches its files and port."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.exit_file = Path(spec["exit_file"])

    def start(self, *, hosts_file: str = "/etc/hosts", etc_dir: str = "") -> None:
        self.started_at = time.perf_counter()
        self.log.touch()

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        while time.perf_counter() < deadline:
            if self.exit_file.exists():
                text = self.output()
                return {
                    "started": False,
                    "message": self.driver.startup_message(text),
                    "output": text[-4000:],
                }
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return {"started": True, "start_s": time.perf_counter() - self.started_at}
            except OSError:
                time.sleep(0.005)
        return {
            "started": False,
            "message": f"did not listen on {self.host}:{self.port} within the timeout",
            "output": self.output()[-4000:],
            "timeout": True,
        }

    def stop(self) -> None:
        pass  # the host removes its container


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1] if len(argv) > 1 else "/lab/job.json").read_text())

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    proxies = [ContainerProxy(s) if s.get("exit_file") else Proxy(s) for s in job["proxies"]]
    seat: SeatClient | None = None
    try:
        deadline = time.perf_counter() + job.get("start_timeout", 30)
        # nginx and HAProxy resolve the backend name when they start: wait until the seat's
        # network alias is registered (the host starts this container and the seat's at once).
        wait_for_name(BACKEND_NAME, deadline)
        for p in proxies:
            p.start()
        seat = SeatClient(job["seat_host"], job["seat_control_port"], deadline=deadline)
        ready = {}
        for p in proxies:
            ready[p.key] = p.wait_ready(deadline)
            emit({"event": "proxy", "key": p.key, **ready[p.key]})
        by_key = {p.key: p for p in proxies}
        for seq, cell in enumerate(job["cells"]):
            if not ready[cell["key"]]["started"]:
                continue  # the runtime reports config-rejected cells itself
            emit(run_cell(seat, by_key[cell["key"]], cell, seq))  # type: ignore[arg-type]
        hold = job.get("hold")
        if hold:  # `trustlab up`: keep serving; the host stops this container with `trustlab down`
            held_seat, routed = seat, hold.get("sni_routing", False)
            held_seat.present(hold["identity"], sni_routing=routed)
            control(
                hold["control"],
                present=lambda ident: held_seat.present(ident, sni_routing=routed),
                log=lambda: held_seat.since(0),
            )
        emit({"event": "done"})
        while hold:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 130
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        emit({"event": "fatal", "message": str(exc)})
        return 1
    finally:
        if seat:
            seat.close()
        stop_all(proxies)
    return 0


def wait_for_name(name: str, deadline: float) -> None:
    while True:
        try:
            socket.getaddrinfo(name, None)
            return
        except OSError:
            if time.perf_counter() > deadline:
                raise OSError(
                    f"{name} does not resolve in the lab network (is the seat container up?)"
                ) from None
            time.sleep(0.01)


def stop_all(proxies: list[Proxy]) -> None:
    """Terminate every proxy first, then wait: shutdowns overlap instead of queueing."""
    for p in proxies:
        if p.proc and p.proc.poll() is None:
            p.proc.terminate()
    for p in proxies:
        p.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
