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
    """The bytes of a file the user named, or *error* with one line saying what is wrong."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise error(f"{where}: is a directory; {directory_hint}") from None
    except FileNotFoundError:
        raise error(f"{where}: no such file") from None
    except PermissionError:
        raise error(f"{where}: not readable (permission denied)") from None
    except OSError as exc:
        raise error(f"{where}: cannot read ({exc.strerror})") from None
    if len(raw) > limit:
        raise error(f"{where}: {len(raw)} bytes is too large for {kind} (limit {limit // 1_000_000} MB)")
    return raw
