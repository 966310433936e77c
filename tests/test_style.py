"""The code's habits, checked in every run (``make lint`` says the same): ``ruff check`` and
``ruff format --check`` clean on harness/, tests/ and benchmarks/ (issue 25)."""

from __future__ import annotations

import ast
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


# -- function length (issue 25: "per-function p90 <= 30 lines, none > 120 lines") ----------------

LONGEST = 120
P90_LIMIT = 30


def function_lengths(source: str, where: str = "") -> list[tuple[int, str]]:
    """Every function's (and method's, nested or not) total lines, from its first decorator to its
    last line, with where it starts."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            out.append((node.end_lineno - start + 1, f"{where}:{node.lineno} {node.name}"))  # type: ignore[operator]
    return out


def p90(lengths: list[int]) -> int:
    ordered = sorted(lengths)
    return ordered[int(len(ordered) * 0.9) - 1] if ordered else 0


def test_function_lengths_count_from_the_first_decorator() -> None:
    source = (
        "@a\n@b(\n  1)\ndef f():\n    x = 1\n\n    return x\n\n"
        "class C:\n    def g(self):\n        def h():\n            pass\n"
    )
    assert sorted(function_lengths(source, "m")) == [(2, "m:11 h"), (3, "m:10 g"), (7, "m:4 f")]
    assert p90(list(range(1, 11))) == 9 and p90([]) == 0


def test_functions_are_short() -> None:
    rows = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        rows += function_lengths(path.read_text(), str(path.relative_to(ROOT)))
    rows.sort(reverse=True)
    too_long = [f"{n:4d} {where}" for n, where in rows if n > LONGEST]
    assert not too_long, f"functions over {LONGEST} lines: cut them into named steps\n" + "\n".join(too_long)
    reached = p90([n for n, _ in rows])
    over = [f"{n:4d} {where}" for n, where in rows if n > P90_LIMIT]
    assert reached <= P90_LIMIT, (
        f"p90 of {len(rows)} functions is {reached} lines (limit {P90_LIMIT}); "
        f"{len(over)} are over {P90_LIMIT}, at most {len(rows) - int(len(rows) * 0.9)} may be:\n" + "\n".join(over)
    )
