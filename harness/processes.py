"""Process facts that differ by platform: is a pid alive, when did it start, is this root.

The docker path must run on a Windows or macOS laptop. ``os.kill(pid, 0)`` is a liveness probe on
POSIX but *terminates* the process on Windows (any signal other than the two console events is
``TerminateProcess``), ``/proc`` exists on Linux only, and ``os.geteuid`` and
``signal.pthread_sigmask`` are POSIX only. Everything that needs one of them asks here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

WINDOWS = sys.platform.startswith("win")


def alive(pid: int) -> bool:
    """True when a process with this pid exists (also one we may not signal)."""
    if pid <= 0:
        return False
    if WINDOWS:
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_alive(pid: int) -> bool:  # pragma: no cover - exercised on Windows only
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    process_query_limited_information, still_active = 0x1000, 259
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), else ``?``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def is_root() -> bool:
    """Root on POSIX; never on Windows (which has no euid)."""
    geteuid = getattr(os, "geteuid", None)
    return bool(geteuid and geteuid() == 0)


def pid_namespace() -> str:
    """This process's pid namespace (``4026531836``), or ``-`` where there is none to read."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return "-"
    return link.partition("[")[2].rstrip("]") or "-"
