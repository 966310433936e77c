"""The code's habits, checked in every run (``make lint`` says the same): ``ruff check`` and
``ruff format --check`` clean on harness/, tests/ and benchmarks/ (issue 25)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("harness", "tests", "benchmarks")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *SOURCES], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"ruff {' '.join(command)}: run `make lint` and fix\n{proc.stdout}{proc.stderr}"
