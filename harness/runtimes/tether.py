"""Ties a docker lab container's life to the trustlab process that owns it (issue 26 item 6).

Every lab container runs ``python3 -m harness.runtimes.tether CMD...`` (under docker's init):
it starts CMD and reads its own stdin, which the owner holds open (the container is created
with ``stdin_open`` and ``stdin_once``, and the owner attaches a socket to it before it starts:
:meth:`harness.runtimes.docker.Lab.create`). When the owner ends, by any signal including
SIGKILL, the kernel closes that socket, the daemon closes the container's stdin, and this
process kills CMD and exits: the container stops by itself within moments, not at a later sweep
(which still removes what is left: the stopped container, the network, the volume).

Why a held stdin and not a reaper with a deadline: no polling and no timer to tune (a deadline
long enough for the longest lab leaves a killed lab running that long), no extra container, and
no docker socket anywhere in the lab; the owner's death is the signal itself.

Stdlib only: it runs in the lab image's python3.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from harness.runtimes.sandbox import CONTAINER_USER


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 -m harness.runtimes.tether CMD [ARG...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    if os.geteuid() == 0:
        # It holds a pipe and nothing else: root (check's container starts as root) is not kept.
        # When it exits the container ends, and every process in it, whoever it runs as.
        uid, gid = (int(x) for x in CONTAINER_USER.split(":"))
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    def owner_gone() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        # EOF: the owner closed its end (it exited, or was killed): the lab ends now.
        try:
            child.kill()  # when it is the lab user's; else the container's end takes it along
        except OSError:
            pass
        os._exit(137)

    threading.Thread(target=owner_gone, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: _quietly(child.terminate))
    code = child.wait()
    return 128 - code if code < 0 else code


def _quietly(call: Callable[[], None]) -> None:
    try:
        call()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
