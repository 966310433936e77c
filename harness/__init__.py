"""trustlab: when a reverse proxy talks HTTPS to its backend, does it check who answered?

The public API is the few names below (what the notebooks use)::

    import harness
    r = harness.run_scenario("nginx/verify-off", runtime="local")
    assert r.cell("nginx/verify-off", "rogue-ca").outcome is harness.Outcome.SPOOFED
    harness.backend_saw(r, "nginx/verify-off")
"""

from __future__ import annotations

__version__ = "0.1.0"

# Names resolve on first use (PEP 562): `trustlab` and the in-lab workers start without
# importing matplotlib and trustme, and a Ctrl-C during start-up lands in the CLI's handler.
_EXPORTS = {
    "LabError": "harness.errors",
    "LabPKI": "harness.pki",
    "Outcome": "harness.vocab",
    "Results": "harness.results",
    "Verdict": "harness.verdicts",
    "backend_saw": "harness.course.notebook",
    "choose_runtime": "harness.course.notebook",
    "claims": "harness.course.notebook",
    "diff_versions": "harness.course.notebook",
    "plot_grid": "harness.course.notebook",
    "predict": "harness.course.notebook",
    "run_matrix": "harness.course.notebook",
    "run_scenario": "harness.course.notebook",
    "show_cells": "harness.course.notebook",
    "show_pki": "harness.course.notebook",
    "show_scenario": "harness.course.notebook",
    "submit": "harness.course.notebook",
    "versions_of": "harness.course.notebook",
}


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        if name == "Results":
            # The facade sits above presentation: a run displays as its grid in Jupyter once
            # harness.course.notebook has registered it (harness.results imports nothing above it).
            importlib.import_module("harness.course.notebook")
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
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
