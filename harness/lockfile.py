"""The locked Python dependency set (``requirements.lock``): its digest and drift.

Results are reproducible only if the lab that produced them is: every install path (``make venv``,
``.ci/run``, the images, the offline bundle) installs ``requirements.lock`` with ``--require-hashes``
(``make lock`` refreshes it with uv, for Debian 12's Python 3.11.2). Each result's ``meta`` and
``trustlab doctor`` name the lock's digest; :func:`drift` lists the installed packages that differ
from it.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import metadata
from pathlib import Path

from harness.assets import asset_file

LOCK_NAME = "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def lock_path() -> Path | None:
    """The lock beside the checkout, else the copy a wheel carries; None when neither exists."""
    path = asset_file(LOCK_NAME)
    return path if path.is_file() else None


@cache
def digest() -> str | None:
    """``sha256:`` and the first 16 hex digits of the lock's bytes (None without a lock)."""
    path = lock_path()
    if path is None:
        return None
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def pins(text: str) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a pip-compile lock."""
    return {_norm(name): version for name, version in _PIN.findall(text)}


def drift() -> list[str]:
    """``name: installed X, locked Y`` for each locked package installed at another version."""
    path = lock_path()
    if path is None:
        return []
    out = []
    for name, locked in sorted(pins(path.read_text()).items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra this install did not ask for
        if have != locked:
            out.append(f"{name}: installed {have}, locked {locked}")
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_constraints(directory: Path) -> list[str]:
    """Write the lock's pins (no hashes) as a pip constraints file; return ``["-c", path]`` or [].

    For pip runs that fetch wheels for another interpreter or platform (the classroom image, the
    offline bundle): the same versions, where a hash-checked install cannot apply."""
    path = lock_path()
    if path is None:
        return []
    out = directory / "lock-constraints.txt"
    out.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins(path.read_text()).items())))
    return ["-c", str(out)]
