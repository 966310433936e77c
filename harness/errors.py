"""Exceptions raised by trustlab.

::

    LabError                     anything the user can fix; the CLI prints it as one line, exit 2
    ├── ScenarioError            a scenario file or id is wrong
    ├── ConfigError              a user's proxy config cannot be used
    └── PrerequisiteError        a binary, a kernel feature or a daemon is missing
"""

from __future__ import annotations


class LabError(Exception):
    """An error the user can act on. ``str(err)`` is one line naming what and how to fix it."""


class ScenarioError(LabError):
    """A scenario file, field or id is invalid."""


class ConfigError(LabError):
    """A user-supplied proxy configuration cannot be run in the lab."""


class PrerequisiteError(LabError):
    """Something the lab needs (a proxy binary, namespaces, Docker) is missing."""
