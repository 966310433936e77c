"""``python -m harness`` is ``trustlab``; the console script enters through :func:`entry` too."""

import os
import signal
import sys


def _leave(signum: int, frame: object) -> None:
    # Interrupted before anything started: nothing to clean up. os._exit, because an exception
    # raised here can land inside the import machinery and be printed as "ignored".
    os._exit(128 + signum)


def entry() -> int:
    # Until the CLI installs its own handlers, an interrupt during imports just leaves quietly.
    signal.signal(signal.SIGINT, _leave)
    signal.signal(signal.SIGTERM, _leave)
    from harness.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(entry())
