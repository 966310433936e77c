"""Every figure the README and docs state matches docs/figures.json, and that matches the repo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report import figures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recorded() -> dict[str, object]:
    return json.loads(figures.FIGURES.read_text())


def test_every_stated_figure_matches_the_data(recorded: dict[str, object]) -> None:
    assert figures.drift(recorded) == [], "run: make figures"


def test_the_recorded_counts_are_the_repos_own(recorded: dict[str, object]) -> None:
    now = figures.static()
    assert {k: recorded[k] for k in now} == now, "a scenario, challenge or notebook changed: run make figures"
    assert recorded["run_cells"] == recorded["cells"], "the recorded run is not the whole default matrix"


def test_the_front_page_is_short_and_states_figures() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert len(figures.SPAN.findall(text)) >= 10


def test_drift_is_caught(tmp_path: Path, recorded: dict[str, object]) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- fig:cells -->1<!-- /fig --> and <!-- fig:nope -->2<!-- /fig -->")
    out = figures.drift(recorded, tmp_path)
    assert len(out) == 2 and "fig cells says '1'" in out[0] and "nope" in out[1]
    with pytest.raises(ValueError, match="'nope' is not in docs/figures.json"):
        figures.render("<!-- fig:nope -->x<!-- /fig -->", dict(recorded))
    assert figures.render("a <!-- fig:cells -->0<!-- /fig -->", {"cells": 7}) == "a <!-- fig:cells -->7<!-- /fig -->"


def test_update_refuses_what_is_not_a_full_matrix(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"meta": {"duration_s": 1.0}, "cells": []}))
    before = figures.FIGURES.read_bytes()
    for path, words in ((bad, "not a trustlab matrix JSON"), (small, "run the full default matrix")):
        proc = subprocess.run(
            [sys.executable, "-m", "harness.report.figures", "update", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert figures.FIGURES.read_bytes() == before
