"""The public API: a small, sorted, complete and stable ``harness.__all__``."""

from __future__ import annotations

import importlib

import harness

# Changing the public API is a decision: update this list in the same commit.
EXPECTED = [
    "LabError",
    "LabPKI",
    "Outcome",
    "Results",
    "Verdict",
    "backend_saw",
    "choose_runtime",
    "claims",
    "diff_versions",
    "plot_grid",
    "predict",
    "run_matrix",
    "run_scenario",
    "show_cells",
    "show_pki",
    "show_scenario",
    "submit",
    "versions_of",
]


def test_all_is_sorted() -> None:
    assert harness.__all__ == sorted(harness.__all__)


def test_all_is_stable() -> None:
    assert harness.__all__ == EXPECTED


def test_every_name_is_importable() -> None:
    module = importlib.import_module("harness")
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from harness import *", namespace)
    assert set(module.__all__) <= set(namespace)


def test_all_is_complete() -> None:
    """Every public (non-module, non-underscore) name the package binds or resolves lazily is listed
    in __all__: dir(), not vars(), so the answer does not depend on which names an earlier test
    happened to resolve (alone, vars() held none of the lazy names)."""
    import types

    public = {
        name
        for name in dir(harness)
        if not name.startswith("_")
        and not isinstance(getattr(harness, name), types.ModuleType)
        and name != "annotations"
    }
    assert public == set(harness.__all__)


def test_results_render_as_html() -> None:
    from harness.results import Cell

    cell = Cell(
        "nginx/good",
        "nginx",
        "good",
        "legit",
        harness.Outcome.SERVED,
        harness.Outcome.SERVED,
        200,
        "response from legit",
        "backend-api.internal",
        "TLSv1.2",
        0.01,
    )
    html = harness.Results(meta={}, cells=[cell])._repr_html_()  # type: ignore[attr-defined]
    assert "<table>" in html and "nginx/good" in html and "served" in html
