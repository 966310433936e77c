"""``python -m harness`` is ``trustlab``; the console script enters through :func:`entry` too."""

# _signal is CPython's built-in module: importing it runs no Python code, so the handlers below are
# in place before anything can be interrupted (``import signal`` imports enum, and a Ctrl-C inside
# it printed a traceback). os is loaded by the interpreter before any script.
import _signal
import os
import sys


def _leave(signum: int, frame: object) -> None:
    # Interrupted before anything started: nothing to clean up. os._exit, because an exception
    # raised here can land inside the import machinery and be printed as "ignored".
    os._exit(128 + signum)


def _quiet_until_the_cli_is_ready() -> None:
    # Until the CLI installs its own handlers, an interrupt during imports just leaves quietly.
    _signal.signal(_signal.SIGINT, _leave)
    _signal.signal(_signal.SIGTERM, _leave)


_quiet_until_the_cli_is_ready()


def entry() -> int:
    _quiet_until_the_cli_is_ready()
    from harness.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(entry())
