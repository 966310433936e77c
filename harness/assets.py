"""Where the shipped assets (``labs/``, ``scenarios/``) live.

In a checkout they sit at the top level; in an installed wheel hatch force-includes them
under ``harness/_data/`` so an installed ``trustlab`` works outside the checkout.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path


def asset_dir(name: str) -> Path:
    """The directory of a top-level asset folder (``labs`` or ``scenarios``)."""
    return _asset(name, Path.is_dir)


def asset_file(name: str) -> Path:
    """A top-level file of the checkout (``requirements.lock``), or the wheel's copy of it."""
    return _asset(name, Path.is_file)


def _asset(name: str, present: Callable[[Path], bool]) -> Path:
    checkout = Path(__file__).resolve().parent.parent / name
    if present(checkout):
        return checkout
    return Path(str(resources.files("harness") / "_data" / name))
