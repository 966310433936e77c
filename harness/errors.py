"""Exceptions raised by trustlab.

::

    LabError                     anything the user can fix; the CLI prints it as one line, exit 2
    ├── ScenarioError            a scenario file or id is wrong
    ├── ConfigError              a user's proxy config cannot be used
    └── PrerequisiteError        a binary, a kernel feature or a daemon is missing
"""

from __future__ import annotations

from pathlib import Path


class LabError(Exception):
    """An error the user can act on. ``str(err)`` is one line naming what and how to fix it."""


class ScenarioError(LabError):
    """A scenario file, field or id is invalid."""


class ConfigError(LabError):
    """A user-supplied proxy configuration cannot be run in the lab."""


class PrerequisiteError(LabError):
    """Something the lab needs (a proxy binary, namespaces, Docker) is missing."""


def read_input(path: Path, *, error: type[LabError], kind: str, directory_hint: str, limit: int) -> bytes:
    """The bytes of a file the user named, or *error* with one line saying what is wrong.

    Only a regular file is read (a FIFO would block forever, ``/dev/zero`` never ends), and
    never more than *limit* + 1 bytes, whatever the file claims to be."""
    import os
    import stat

    where = shown(str(path))
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise error(f"{where}: is a directory; {directory_hint}") from None
    except FileNotFoundError:
        raise error(f"{where}: no such file") from None
    except PermissionError:
        raise error(f"{where}: not readable (permission denied)") from None
    except OSError as exc:
        raise error(f"{where}: cannot read ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise error(f"{where}: is a directory; {directory_hint}")
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(mode):
            what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise error(f"{where}: is {what}, not a regular file; pass {kind} saved as a file")
        try:
            raw = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"{where}: cannot read ({exc.strerror})") from None
    if len(raw) > limit:
        raise error(f"{where}: larger than {limit // 1_000_000} MB: too large for {kind}")
    return raw


def shown(value: str, width: int = 200) -> str:
    """*value* for an error message: bounded, so a 5000-character argument stays one line."""
    value = value.encode("unicode_escape").decode("ascii") if not value.isprintable() else value
    return value if len(value) <= width else f"{value[: width - 30]}...({len(value)} characters)"
