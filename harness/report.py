"""Turn :class:`~harness.runner.Results` into a grid, JSON, CSV, a heatmap and Markdown.

Every file is written atomically (a temp file renamed into place), so an interrupted run
never leaves a half-written report behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.probe import Cell
from harness.runner import Results
from harness.vocab import IDENTITY_IDS, OPTIONAL_IDENTITY_IDS, Outcome

#: Short labels for the grid, and colours for the heatmap and HTML tables.
LABEL = {
    Outcome.SERVED: "served",
    Outcome.SPOOFED: "SPOOFED",
    Outcome.BLOCKED: "blocked",
    Outcome.CONFIG_REJECTED: "cfg-rej",
    Outcome.ERROR: "ERROR",
}
COLOR = {
    Outcome.SERVED: "#2e7d32",
    Outcome.SPOOFED: "#c62828",
    Outcome.BLOCKED: "#90a4ae",
    Outcome.CONFIG_REJECTED: "#6a1b9a",
    Outcome.ERROR: "#f9a825",
}
CSV_FIELDS = (
    "scenario", "proxy", "variant", "identity", "outcome", "expected", "status", "reason", "sni",
    "tls", "duration_s",
    # Added by issue 14 (columns are only ever appended): the seat's reuse and mTLS evidence.
    "reuse", "client_cert", "primed",
)


def _scenarios(results: Results) -> list[str]:
    return list(dict.fromkeys(c.scenario for c in results.cells))


def _identities(results: Results) -> list[str]:
    """Built-in identities first, then optional ones (``legit-deep``) some scenarios add."""
    present = {c.identity for c in results.cells}
    return [i for i in IDENTITY_IDS + OPTIONAL_IDENTITY_IDS if i in present]


#: What a grid shows where a scenario did not run an (optional) identity.
NOT_RUN = "-"


def grid(results: Results, *, color: bool = False) -> str:
    """A compact scenarios x identities table; ``!`` marks a cell that differs from expectation."""
    idents = _identities(results)
    rows = _scenarios(results)
    by = {(c.scenario, c.identity): c for c in results.cells}
    width = max(len(r) for r in rows) if rows else 10
    colw = max(max((len(i) for i in idents), default=7), 8)
    out = io.StringIO()
    out.write(" " * width + "  " + " ".join(f"{i:<{colw}}" for i in idents) + "\n")
    for sid in rows:
        cells = []
        for ident in idents:
            c = by.get((sid, ident))
            if c is None:
                cells.append(f"{NOT_RUN:<{colw}}")
                continue
            text = LABEL[c.outcome] + ("!" if c.differs else "")
            padded = f"{text:<{colw}}"
            if color:
                code = {"served": "32", "SPOOFED": "1;31", "blocked": "2", "cfg-rej": "35", "ERROR": "33"}
                padded = f"\x1b[{code[LABEL[c.outcome]]}m{padded}\x1b[0m"
            cells.append(padded)
        out.write(f"{sid:<{width}}  " + " ".join(cells) + "\n")
    counts = summary_counts(results)
    out.write(
        f"\n{len(results.cells)} cells: "
        + ", ".join(f"{n} {o.value}" for o, n in counts.items() if n)
        + f"; {len(results.mismatches)} differ from expectation"
        + (" (marked !)" if results.mismatches else "")
        + "\n"
    )
    return out.getvalue()


def summary_counts(results: Results) -> dict[Outcome, int]:
    counts = {o: 0 for o in Outcome}
    for c in results.cells:
        counts[c.outcome] += 1
    return counts


def cell_lines(cells: list[Cell]) -> str:
    """Per-cell lines for ``trustlab run``: outcome, status, SNI seen, reason, expectation."""
    out = io.StringIO()
    for c in cells:
        status = str(c.status) if c.status is not None else "-"
        differs = f"   <-- expected {c.expected.value}" if c.differs and c.expected else ""
        out.write(
            f"  {c.identity:<15} {c.outcome.value:<16} {status:>4}  sni={c.sni or '-':<22} "
            f"{c.reason}{differs}\n"
        )
    return out.getvalue()


# -- files -----------------------------------------------------------------------------------
def _atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(results: Results, path: Path) -> Path:
    """DESIGN.md's matrix JSON: ``{"meta": {...}, "cells": [...]}``."""
    data = json.dumps(results.to_json_dict(), indent=2) + "\n"
    return _atomic_write(path, lambda p: _write_text(p, data))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def write_csv(results: Results, path: Path) -> Path:
    def writer(p: Path) -> None:
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for c in results.cells:
                d = c.to_dict()
                w.writerow({k: d[k] for k in CSV_FIELDS})

    return _atomic_write(path, writer)


def heatmap(results: Results, path: Path | None = None, *, title: str | None = None):  # type: ignore[no-untyped-def]
    """A scenarios x identities heatmap coloured by outcome; saved as PNG when *path* is given.

    Returns the matplotlib Figure (notebooks display it).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rows = _scenarios(results)
    idents = _identities(results)
    order = list(Outcome)
    by = {(c.scenario, c.identity): c for c in results.cells}
    import numpy as np

    data = np.ma.masked_invalid(
        [[order.index(by[(r, i)].outcome) if (r, i) in by else np.nan for i in idents] for r in rows]
    )
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(idents), 1.2 + 0.32 * len(rows)))
    cmap = ListedColormap([COLOR[o] for o in order])
    ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, aspect="auto")
    ax.set_xlim(-0.5, len(idents) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(idents)), idents, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(idents))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    for y, r in enumerate(rows):
        for x, i in enumerate(idents):
            if (r, i) not in by:
                ax.text(x, y, NOT_RUN, ha="center", va="center", color="#999999", fontsize=8)
            elif by[(r, i)].differs:
                ax.text(x, y, "!", ha="center", va="center", color="white", fontsize=9, fontweight="bold")
    versions = results.meta.get("versions", {})
    subtitle = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    ax.set_title(title or f"trustlab: who answered? ({results.meta.get('runtime', '?')} runtime)\n{subtitle}",
                 fontsize=9)
    ax.legend(
        handles=[Patch(color=COLOR[o], label=o.value) for o in order],
        loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False,
    )
    fig.tight_layout()
    if path is not None:
        _atomic_write(Path(path), lambda p: fig.savefig(p, dpi=120, format="png"))
        plt.close(fig)
    return fig


def markdown(results: Results) -> str:
    """A Markdown table of the grid (for READMEs and issue reports)."""
    idents = _identities(results)
    by = {(c.scenario, c.identity): c for c in results.cells}
    lines = ["| scenario | " + " | ".join(idents) + " |", "|---|" + "---|" * len(idents)]
    for sid in _scenarios(results):
        cells = []
        for i in idents:
            c = by.get((sid, i))
            if c is None:
                cells.append(NOT_RUN)
                continue
            text = f"**{c.outcome.value}**" if c.outcome is Outcome.SPOOFED else c.outcome.value
            cells.append(text + (" (!)" if c.differs else ""))
        lines.append(f"| `{sid}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
