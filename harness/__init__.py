"""trustlab: when a reverse proxy talks HTTPS to its backend, does it check who answered?

The public API is the few names below (what the notebooks use)::

    import harness
    r = harness.run_scenario("nginx/verify-off", runtime="local")
    assert r.cell("nginx/verify-off", "rogue-ca").outcome is harness.Outcome.SPOOFED
    harness.backend_saw(r, "nginx/verify-off")
"""

from __future__ import annotations

__version__ = "0.1.0"

# Imported after __version__: harness.runner reads it.
from harness.errors import LabError
from harness.notebook import (
    backend_saw,
    claims,
    plot_grid,
    run_matrix,
    run_scenario,
    show_cells,
    show_pki,
    show_scenario,
)
from harness.pki import LabPKI
from harness.runner import Results
from harness.verdicts import Verdict
from harness.vocab import Outcome

__all__ = [
    "LabError",
    "LabPKI",
    "Outcome",
    "Results",
    "Verdict",
    "backend_saw",
    "claims",
    "plot_grid",
    "run_matrix",
    "run_scenario",
    "show_cells",
    "show_pki",
    "show_scenario",
]
