"""benchmarks/bench_phases.py's table and its docs block, on made-up figures (no proxy runs: the
figures themselves are the benchmark's, never a timed test's)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_phases.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_phases", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _run(bench: ModuleType, label: str, cells: int, wall: float, cpu: float) -> object:
    phases = {
        "pki": 0.01,
        "render": 0.05,
        "lab up": wall * 0.4,
        "cells": wall * 0.4,
        "teardown": wall * 0.1,
        "report": 0.2,
    }
    return bench.RunPhases(label=label, cells=cells, shards=2, wall=wall, cpu=cpu, phases=phases, request=wall * 0.5)


def test_rows_are_ratios_within_the_run(bench: ModuleType) -> None:
    runs = [_run(bench, "nginx", 100, 1.0, 0.4), _run(bench, "all", 1000, 5.0, 3.0)]
    starts = {"nginx": bench.Start("nginx", 0.005, 0.03, 0.0, 5)}
    header, body = bench.rows(runs, starts)
    assert header[:5] == ["run", "cells", "ms/cell", "x all", "CPU ms/cell"]
    nginx, full, share = body
    assert nginx[2] == "10.00" and full[2] == "5.00" and nginx[3] == "2.00" and full[3] == "1.00"
    assert nginx[4] == "4.00" and full[4] == "3.00"
    assert nginx[-3:] == ["5", "30", "0"] and full[-3:] == ["", "", ""]
    # The default matrix's phases as shares of its wall time (lab up 40%, request/shard 50% / 2).
    assert share[0] == "share of all's wall" and share[7] == "40%" and share[9] == "25%"
    assert len({len(r) for r in [header, *body]}) == 1


def test_docs_block_is_replaced_between_the_markers_only(bench: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "reference.md"
    doc.write_text(f"before\n{bench.MARK_BEGIN}\nold table\n{bench.MARK_END}\nafter\n")
    bench.write_docs(doc, "| new |\n")
    assert doc.read_text() == f"before\n{bench.MARK_BEGIN}\n| new |\n{bench.MARK_END}\nafter\n"
    bench.write_docs(doc, "| newer |\n")  # again: still one block
    assert doc.read_text().count(bench.MARK_BEGIN) == 1 and "| newer |" in doc.read_text()


def test_docs_without_the_markers_is_refused_not_appended(bench: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "reference.md"
    doc.write_text(f"text\n{bench.MARK_END}\n{bench.MARK_BEGIN}\n")  # wrong order
    with pytest.raises(SystemExit, match="no <!-- bench:phases -->"):
        bench.write_docs(doc, "| new |\n")
    assert doc.read_text() == f"text\n{bench.MARK_END}\n{bench.MARK_BEGIN}\n"


def test_the_reference_docs_hold_one_generated_block(bench: ModuleType) -> None:
    text = (BENCH.parent.parent / "docs" / "reference.md").read_text()
    assert text.count(bench.MARK_BEGIN) == 1 and text.count(bench.MARK_END) == 1
    assert text.index(bench.MARK_BEGIN) < text.index(bench.MARK_END)


def test_bad_options_exit_2(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--repeat", "0"]) == 2
    assert "--repeat must be >= 1" in capsys.readouterr().err
