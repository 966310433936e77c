"""Turn :class:`~harness.results.Results` into a grid, JSON, CSV, pictures (a one-screen summary,
the full heatmap poster) and Markdown.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import Cell, Results
from harness.vocab import IDENTITY_IDS, LEGITIMATE_IDS, OPTIONAL_IDENTITY_IDS, Outcome, ProxyKind

#: Short labels for the grid, and colours for the heatmap and HTML tables.
LABEL = {
    Outcome.SERVED: "served",
    Outcome.SPOOFED: "SPOOFED",
    Outcome.BLOCKED: "blocked",
    Outcome.CONFIG_REJECTED: "cfg-rej",
    Outcome.ERROR: "ERROR",
}
#: A colour-vision-safe palette: every pair of these colours (OUTAGE_COLOR included) stays at least
#: 20 CIE76 apart under simulated deuteranopia and protanopia and 15 under tritanopia (Machado et
#: al. 2009, severity 1.0; tests/test_palette.py measures it). Cells also carry their label, so
#: colour is never the only signal.
COLOR = {
    Outcome.SERVED: "#0072b2",  # blue
    Outcome.SPOOFED: "#d55e00",  # vermillion
    Outcome.BLOCKED: "#b0bec5",  # light blue-grey
    Outcome.CONFIG_REJECTED: "#000000",  # black
    Outcome.ERROR: "#ffd700",  # gold
}
#: A legitimate backend that is blocked is an outage, not a safe cell: its own colour, hatched.
OUTAGE_COLOR = "#5a5a5a"
OUTAGE_LABEL = "OUTAGE"
#: Text colour on each fill, for contrast.
TEXT_ON = {
    Outcome.SERVED: "white",
    Outcome.SPOOFED: "white",
    Outcome.BLOCKED: "black",
    Outcome.CONFIG_REJECTED: "white",
    Outcome.ERROR: "black",
}
CSV_FIELDS = (
    "scenario",
    "proxy",
    "variant",
    "identity",
    "outcome",
    "expected",
    "status",
    "reason",
    "sni",
    "tls",
    "duration_s",
    # Added by issue 14 (columns are only ever appended): the seat's reuse and mTLS evidence.
    "reuse",
    "client_cert",
    "primed",
    # Added by issue 15: the proxy's version and its TLS library.
    "proxy_version",
    "tls_library",
)


def row_label(results: Results) -> Callable[[Cell], str]:
    """A cell's row: its scenario id, or ``scenario @version`` when the run holds a scenario on
    more than one version of its proxy (``trustlab matrix --all-versions``)."""
    seen: dict[str, set[str | None]] = {}
    for c in results.cells:
        seen.setdefault(c.scenario, set()).add(c.proxy_version)
    if all(len(v) <= 1 for v in seen.values()):
        return lambda c: c.scenario
    return lambda c: f"{c.scenario} @{c.proxy_version}" if c.proxy_version else c.scenario


def _scenarios(results: Results) -> list[str]:
    row = row_label(results)
    return list(dict.fromkeys(row(c) for c in results.cells))


def _by_row(results: Results) -> dict[tuple[str, str], Cell]:
    row = row_label(results)
    return {(row(c), c.identity): c for c in results.cells}


def _identities(results: Results) -> list[str]:
    """Built-in identities first, then optional ones (``legit-deep``) some scenarios add."""
    present = {c.identity for c in results.cells}
    return [i for i in IDENTITY_IDS + OPTIONAL_IDENTITY_IDS if i in present]


def _columns(results: Results) -> tuple[list[str], int]:
    """The heatmap's columns, legitimate identities first, and how many of them there are."""
    idents = _identities(results)
    legit = [i for i in idents if i in LEGITIMATE_IDS]
    return legit + [i for i in idents if i not in LEGITIMATE_IDS], len(legit)


def _rows(results: Results) -> list[tuple[str, list[str]]]:
    """Scenario ids grouped by proxy kind (nginx, apache, haproxy), each group in run order."""
    row = row_label(results)
    proxy_of = {row(c): c.proxy for c in results.cells}
    rows = _scenarios(results)
    known = [k.value for k in ProxyKind]
    kinds = known + sorted({p for p in proxy_of.values()} - set(known))
    return [(k, [r for r in rows if proxy_of[r] == k]) for k in kinds if any(proxy_of[r] == k for r in rows)]


def grouped_rows(results: Results) -> list[tuple[str, list[str]]]:
    """``[(kind, [row, ...]), ...]``: the run's rows (:func:`row_label`) grouped by proxy kind, in
    the vocabulary's order of kinds, each group in run order."""
    return _rows(results)


def is_outage(cell: Cell) -> bool:
    """A legitimate backend refused: the proxy is down for real users, not protected."""
    return cell.identity in LEGITIMATE_IDS and cell.outcome in (Outcome.BLOCKED, Outcome.ERROR)


def alt_text(results: Results) -> str:
    """A text description of the heatmap, for readers who cannot see it (alt text)."""
    rows = [r for _, group in _rows(results) for r in group]
    idents, _ = _columns(results)
    counts = summary_counts(results)
    outages = [c for c in results.cells if is_outage(c)]
    spoofs = [c for c in results.cells if c.outcome is Outcome.SPOOFED]
    text = (
        f"Heatmap of {len(rows)} scenario{'s' if len(rows) != 1 else ''} (rows, grouped by proxy) by "
        f"{len(idents)} identities (columns: legitimate, then impostors). "
        + "; ".join(f"{n} {o.value}" for o, n in counts.items() if n)
        + (f"; {len(outages)} of the blocked or error cells refuse a legitimate backend (outage)" if outages else "")
        + "."
    )
    if spoofs:
        shown = ", ".join(f"{c.scenario} x {c.identity}" for c in spoofs[:12])
        text += f" Spoofed: {shown}{f' and {len(spoofs) - 12} more' if len(spoofs) > 12 else ''}."
    return text


#: What a grid shows where a scenario did not run an (optional) identity.
NOT_RUN = "-"


def _grid_cell(c: Cell | None, colw: int, *, color: bool) -> str:
    """One cell of :func:`grid`, padded to *colw* (and coloured for a terminal)."""
    if c is None:
        return f"{NOT_RUN:<{colw}}"
    text = LABEL[c.outcome] + ("!" if c.differs else "")
    padded = f"{text:<{colw}}"
    if color:
        code = {"served": "32", "SPOOFED": "1;31", "blocked": "2", "cfg-rej": "35", "ERROR": "33"}
        padded = f"\x1b[{code[LABEL[c.outcome]]}m{padded}\x1b[0m"
    return padded


def grid(results: Results, *, color: bool = False) -> str:
    """A compact scenarios x identities table; ``!`` marks a cell that differs from expectation."""
    idents = _identities(results)
    rows = _scenarios(results)
    by = _by_row(results)
    width = max(len(r) for r in rows) if rows else 10
    colw = max(max((len(i) for i in idents), default=7), 8)
    out = io.StringIO()
    out.write(" " * width + "  " + " ".join(f"{i:<{colw}}" for i in idents) + "\n")
    for sid in rows:
        cells = []
        for ident in idents:
            cells.append(_grid_cell(by.get((sid, ident)), colw, color=color))
        out.write(f"{sid:<{width}}  " + " ".join(cells) + "\n")
    counts = summary_counts(results)
    out.write(
        f"\n{len(results.cells)} cells: "
        + ", ".join(f"{n} {o.value}" for o, n in counts.items() if n)
        + f"; {len(results.mismatches)} differ from expectation"
        + (" (marked !)" if results.mismatches else "")
        + "\n"
    )
    ran = proxy_versions(results)
    if ran:
        out.write("proxies: " + ", ".join(ran) + "\n")
    return out.getvalue()


def proxy_versions(results: Results) -> list[str]:
    """``nginx 1.22.1 (OpenSSL 3.0.19)`` for each proxy version the run's cells ran on."""
    seen = dict.fromkeys((c.proxy, c.proxy_version, c.tls_library) for c in results.cells if c.proxy_version)
    return [f"{k} {v}" + (f" ({lib})" if lib else "") for k, v, lib in seen]


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
        differs = differs or ("   (no expectation)" if c.expected is None else "")
        out.write(
            f"  {c.identity:<15} {c.outcome.value:<16} {status:>4}  sni={c.sni or '-':<22} "
            f"tls={c.tls or '-':<8} {c.reason}{differs}\n"
        )
    return out.getvalue()


def run_text(results: Results, chosen: list[Any]) -> str:
    """``trustlab run --wide``: per scenario its title, then :func:`cell_lines`."""
    out = io.StringIO()
    for sc in chosen:
        cells = [c for c in results.cells if c.scenario == sc.id]
        flag = "" if not any(c.differs for c in cells) else "   (differs from the scenario's expectation)"
        out.write(f"{sc.id}: {sc.title}{flag}\n")
        out.write(cell_lines(cells))
        if sc.unlisted:
            out.write(
                f"  ({len(sc.unlisted)} identities have no expectation in {sc.path or sc.id}: "
                f"{', '.join(sc.unlisted)}; reported, not judged)\n"
            )
        out.write("\n")
    return out.getvalue()


# -- files -----------------------------------------------------------------------------------
def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Write *path* through ``writer(temp)`` on a temp file beside it and a rename (0644): a
    reader never sees half a file, and an interrupt leaves none."""
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
    return write_text(path, data)


def write_text(path: Path, text: str) -> Path:
    """*text* into *path*, atomically (:func:`atomic_write`)."""

    def writer(p: Path) -> None:
        p.write_text(text)

    return atomic_write(path, writer)


def write_csv(results: Results, path: Path) -> Path:
    def writer(p: Path) -> None:
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for c in results.cells:
                d = c.to_dict()
                w.writerow({k: d[k] for k in CSV_FIELDS})

    return atomic_write(path, writer)


def _heat_key(label: str, key: str, fill: str, outage: bool) -> Any:
    """The legend entry of an outcome (or of an outage) as the heatmap draws it."""
    from matplotlib.patches import Patch

    return Patch(
        facecolor=fill,
        edgecolor="white",
        hatch="///" if outage else None,
        label=f"{label} = legitimate backend blocked"
        if outage
        else label
        if label.lower() == key
        else f"{label} = {key}",
    )


def _heat_cell(ax: Any, x: int, y: int, c: Cell | None, shown: dict[str, Any]) -> None:
    """One cell of the heatmap: its colour and label; its outcome joins the legend *shown*."""
    from matplotlib.patches import Patch, Rectangle

    if c is None:
        ax.text(x, y, NOT_RUN, ha="center", va="center", color="#555555", fontsize=8)
        shown.setdefault("not run", Patch(facecolor="white", edgecolor="#999999", label=f"{NOT_RUN} not run"))
        return
    outage = is_outage(c) and c.outcome is Outcome.BLOCKED
    fill = OUTAGE_COLOR if outage else COLOR[c.outcome]
    hatch = "///" if outage else None
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=fill, edgecolor="white", linewidth=1, hatch=hatch))
    label = OUTAGE_LABEL if outage else LABEL[c.outcome]
    ink = "white" if outage else TEXT_ON[c.outcome]
    box = {"boxstyle": "square,pad=0.1", "facecolor": fill, "edgecolor": "none"} if outage else None
    mark = label + ("!" if c.differs else "")
    ax.text(x, y, mark, ha="center", va="center", color=ink, fontsize=6.5, fontweight="bold", bbox=box)
    key = "outage" if outage else c.outcome.value
    if key not in shown:
        shown[key] = _heat_key(label, key, fill, outage)


def _heat_axes(ax: Any, idents: list[str], rows: list[str], n_legit: int) -> None:
    """Ticks and limits, and the divider between the legitimate identities and the impostors."""
    ax.set_xlim(-0.5, len(idents) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(idents)), idents, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    # The divider between the legitimate identities and the impostors.
    if 0 < n_legit < len(idents):
        ax.axvline(n_legit - 0.5, color="black", linewidth=2.5)
        ax.text((n_legit - 1) / 2, -0.7, "legitimate", ha="center", va="bottom", fontsize=8, fontweight="bold")
        ax.text(
            (n_legit + len(idents) - 1) / 2, -0.7, "impostors", ha="center", va="bottom", fontsize=8, fontweight="bold"
        )


def _heat_groups(ax: Any, groups: list[tuple[str, list[str]]], width: int) -> None:
    """Rows grouped by proxy: a line between groups, the proxy's name on the right."""
    y0 = 0
    for kind, group in groups:
        if y0:
            ax.axhline(y0 - 0.5, color="black", linewidth=1.5)
        ax.text(
            width - 0.3,
            y0 + (len(group) - 1) / 2,
            kind,
            ha="left",
            va="center",
            fontsize=9,
            fontweight="bold",
            rotation=90 if len(group) > 2 else 0,
        )
        y0 += len(group)


def _heat_subtitle(results: Results) -> str:
    """The versions the cells ran on (several per proxy with --all-versions), else the run's meta."""
    ran: dict[str, list[str]] = {}
    for c in results.cells:
        if c.proxy_version and c.proxy_version not in ran.setdefault(c.proxy, []):
            ran[c.proxy].append(c.proxy_version)
    versions = results.meta.get("versions", {})
    return (
        "; ".join(f"{k} {', '.join(v)}" for k, v in ran.items())
        if ran
        else ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    )


def _heat_titles(ax: Any, results: Results, n_rows: int, title: str | None) -> None:
    """The axis labels and the title (the runtime and the versions the cells ran on)."""
    ax.set_xlabel("identity presented at the backend's address", fontsize=9)
    # A short label: the long one was clipped above and below on a grid of a few rows.
    ax.set_ylabel("scenario" if n_rows < 8 else "scenario (proxy / variant or reported case)", fontsize=9)
    subtitle = _heat_subtitle(results)
    ax.set_title(
        title or f"trustlab: who answered? ({results.meta.get('runtime', '?')} runtime)\n{subtitle}", fontsize=9, pad=18
    )


def _heat_legend(fig: Any, shown: dict[str, Any]) -> None:
    """The legend of what the picture shows, below it, and the layout that leaves it room."""
    order = [o.value for o in Outcome] + ["outage", "not run"]
    fig.legend(
        handles=[shown[k] for k in order if k in shown],
        loc="lower center",
        ncol=min(4, len(shown)),
        fontsize=8,
        frameon=False,
        title="outcome (label in each cell; ! = differs from expectation)",
        title_fontsize=8,
    )
    legend_rows = (len(shown) + 3) // 4
    fig.tight_layout(rect=(0, min(0.35, (0.25 + 0.18 * legend_rows) / fig.get_figheight()), 1, 1))


def _pyplot(*, headless: bool):  # type: ignore[no-untyped-def]
    """matplotlib.pyplot, on the Agg backend when the picture goes to a file."""
    import matplotlib

    if headless:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def heatmap(results: Results, path: Path | None = None, *, title: str | None = None):  # type: ignore[no-untyped-def]
    """A scenarios x identities heatmap coloured by outcome; saved as PNG when *path* is given.

    Rows are grouped by proxy (a line between groups), columns put the legitimate identities
    first (a heavy line before the impostors); every cell carries its outcome's label, a
    legitimate backend that is blocked is drawn as an OUTAGE (its own colour, hatched), and
    the legend lists only what the picture shows. :func:`alt_text` describes it in words.
    Returns the matplotlib Figure (notebooks display it).
    """
    plt = _pyplot(headless=path is not None)
    groups = _rows(results)
    rows = [r for _, group in groups for r in group]
    idents, n_legit = _columns(results)
    by = _by_row(results)
    fig, ax = plt.subplots(figsize=(2.2 + 0.8 * len(idents), 1.9 + 0.3 * len(rows)))
    shown: dict[str, Any] = {}
    for y, r in enumerate(rows):
        for x, i in enumerate(idents):
            _heat_cell(ax, x, y, by.get((r, i)), shown)
    _heat_axes(ax, idents, rows, n_legit)
    _heat_groups(ax, groups, len(idents))
    _heat_titles(ax, results, len(rows), title)
    _heat_legend(fig, shown)
    if path is not None:
        atomic_write(Path(path), lambda p: fig.savefig(p, dpi=120, format="png"))
        plt.close(fig)
    return fig


def markdown(results: Results) -> str:
    """A Markdown table of the grid (for READMEs and issue reports)."""
    idents = _identities(results)
    by = _by_row(results)
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


# -- the summary picture -----------------------------------------------------------------------
#: Impostors grouped by what the proxy failed to check, for the summary picture (an identity
#: added later and not listed here is drawn under "other impostor").
IMPOSTOR_CLASSES: dict[str, tuple[str, ...]] = {
    "untrusted\nCA": ("rogue-ca", "self-signed"),
    "public\nCA": ("public-ca",),
    "another\nservice's\nname": ("wrong-name", "san-other-cn-backend"),
    "odd name\nforms": ("ip-san", "wildcard", "wildcard-parent", "cn-only"),
    "expired or\nnot yet\nvalid": ("expired", "not-yet-valid"),
    "revoked": ("revoked",),
    "client-\nside CA": ("client-ca-signed",),
}
#: The picture's availability columns: a legitimate backend refused.
LEGIT_REFUSED = "legit\nrefused"
NO_CHAIN = "legit-no-\nchain\nrefused"
#: What a scenario comes to, for the bars (the first that applies, in this order).
VERDICTS = (
    ("an impostor got through", COLOR[Outcome.SPOOFED]),
    ("config rejected", COLOR[Outcome.CONFIG_REJECTED]),
    ("lab error", COLOR[Outcome.ERROR]),
    ("legit refused (outage)", OUTAGE_COLOR),
    ("every impostor blocked, legit served", COLOR[Outcome.SERVED]),
)


def scenario_verdict(cells: list[Cell]) -> str:
    """One of :data:`VERDICTS`' names for one scenario's cells."""
    if any(c.outcome is Outcome.SPOOFED for c in cells):
        return VERDICTS[0][0]
    if all(c.outcome is Outcome.CONFIG_REJECTED for c in cells):
        return VERDICTS[1][0]
    if any(c.outcome is Outcome.ERROR for c in cells):
        return VERDICTS[2][0]
    if any(is_outage(c) and c.identity != "legit-no-chain" for c in cells):
        return VERDICTS[3][0]
    return VERDICTS[4][0]


def summary_table(results: Results) -> tuple[list[str], list[str], list[list[tuple[int, int]]]]:
    """Rows (proxy kinds), columns (impostor classes, then the two availability columns) and per
    cell ``(scenarios where it happened, scenarios that ran it)``: the numbers the picture shows."""
    row = row_label(results)
    kinds = [k for k, _ in _rows(results)]
    known = {i for ids in IMPOSTOR_CLASSES.values() for i in ids}
    other = sorted({c.identity for c in results.cells if c.identity not in LEGITIMATE_IDS and c.identity not in known})
    classes = dict(IMPOSTOR_CLASSES) | ({"other impostor": tuple(other)} if other else {})
    columns = [name for name, ids in classes.items() if any(c.identity in ids for c in results.cells)]
    columns += [LEGIT_REFUSED, NO_CHAIN]
    table: list[list[tuple[int, int]]] = []
    for kind in kinds:
        cells = [c for c in results.cells if c.proxy == kind]
        line = []
        for col in columns:
            if col == LEGIT_REFUSED:
                ran = [c for c in cells if c.identity in LEGITIMATE_IDS and c.identity != "legit-no-chain"]
                hit = [c for c in ran if is_outage(c)]
            elif col == NO_CHAIN:
                ran = [c for c in cells if c.identity == "legit-no-chain"]
                hit = [c for c in ran if is_outage(c)]
            else:
                ran = [c for c in cells if c.identity in classes[col]]
                hit = [c for c in ran if c.outcome is Outcome.SPOOFED]
            line.append((len({row(c) for c in hit}), len({row(c) for c in ran})))
        table.append(line)
    return kinds, columns, table


#: The summary picture's size: fits a laptop screen (1366 x 768) at 100% with room for a browser.
SUMMARY_SIZE = (1200, 560)


def _font(size: int, *, bold: bool = False):  # type: ignore[no-untyped-def]
    """DejaVu Sans as matplotlib ships it (found without importing matplotlib: 0.5 s), else
    Pillow's own scalable font."""
    from importlib.util import find_spec

    from PIL import ImageFont

    spec = find_spec("matplotlib")
    if spec and spec.origin:
        ttf = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / f"DejaVuSans{'-Bold' if bold else ''}.ttf"
        if ttf.exists():
            return ImageFont.truetype(str(ttf), size)
    return ImageFont.load_default(size)


def _mix(colour: str, share: float) -> tuple[int, int, int]:
    """*colour* at *share* (0..1) of its strength over white."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return tuple(round(255 + (c - 255) * share) for c in (r, g, b))  # type: ignore[return-value]


def _dark(rgb: tuple[int, int, int]) -> bool:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140


_INK, _RULE = "#000000", "#c8c8c8"


@dataclass(frozen=True)
class _Grid:
    """Where the summary picture's left table sits: from the number of kinds and columns."""

    kinds: list[str]
    columns: list[str]
    left: int = 170
    top: int = 118

    @property
    def col_w(self) -> int:
        return min(78, 700 // max(len(self.columns), 1))

    @property
    def row_h(self) -> int:
        return min(38, 300 // max(len(self.kinds), 1))

    @property
    def n_imp(self) -> int:
        return len(self.columns) - 2

    @property
    def bottom(self) -> int:
        return self.top + len(self.kinds) * self.row_h


def _hatch(d: Any, x0: int, y0: int, col_w: int, row_h: int) -> None:
    """White diagonal lines over a cell, as the poster's OUTAGE."""
    for k in range(-row_h, col_w, 7):
        d.line(
            (x0 + max(k, 0), y0 + row_h - max(-k, 0), x0 + min(k + row_h, col_w), y0 + row_h - min(row_h, col_w - k)),
            fill="#ffffff",
            width=1,
        )


def _class_cell(d: Any, g: _Grid, x: int, y0: int, hit: int, ran: int, fonts: tuple[Any, ...]) -> None:
    """One cell of the left table: shaded by the share of scenarios, hit/ran written in it."""
    regular, bold = fonts[:2]
    col_w, row_h = g.col_w, g.row_h
    x0 = g.left + x * col_w
    share = hit / ran if ran else 0.0
    base = COLOR[Outcome.SPOOFED] if x < g.n_imp else OUTAGE_COLOR
    fill = _mix(base, 0.15 + 0.85 * share) if hit else (255, 255, 255)
    d.rectangle((x0, y0, x0 + col_w, y0 + row_h), fill=fill, outline=_RULE)
    outage = x == len(g.columns) - 1 and hit  # legit-no-chain refused: hatched, as the poster's OUTAGE
    if outage:
        _hatch(d, x0, y0, col_w, row_h)
    text = f"{hit}/{ran}" if ran else NOT_RUN
    font = bold if hit else regular
    colour = "white" if hit and _dark(fill) else _INK
    if outage:
        box = d.textbbox((x0 + col_w // 2, y0 + row_h // 2), text, font=font, anchor="mm")
        d.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=fill)
    d.text((x0 + col_w // 2, y0 + row_h // 2), text, font=font, fill=colour, anchor="mm")


def _class_table(d: Any, g: _Grid, table: list[list[tuple[int, int]]], versions: dict[str, dict[str, None]]) -> None:
    """Left: per kind, in how many of its scenarios each class of impostor got through, and outages."""
    regular, bold, small = _font(13), _font(13, bold=True), _font(11)
    for x, name in enumerate(g.columns):
        cx = g.left + x * g.col_w + g.col_w // 2
        d.multiline_text((cx, g.top - 6), name, font=small, fill=_INK, anchor="md", align="center", spacing=2)
    for y, (kind, line) in enumerate(zip(g.kinds, table, strict=True)):
        y0 = g.top + y * g.row_h
        label = f"{kind} {', '.join(versions[kind])}" if kind in versions else kind
        d.text((g.left - 8, y0 + g.row_h // 2), label, font=regular, fill=_INK, anchor="rm")
        for x, (hit, ran) in enumerate(line):
            _class_cell(d, g, x, y0, hit, ran, (regular, bold))
    split = g.left + g.n_imp * g.col_w
    d.line((split, g.top - 40, split, g.bottom), fill=_INK, width=3)
    d.text(
        (g.left + g.n_imp * g.col_w // 2, g.top - 62), "impostors that got through", font=bold, fill=_INK, anchor="md"
    )
    d.text((split + g.col_w, g.top - 62), "outage", font=bold, fill=_INK, anchor="md")
    d.text(
        (g.left, g.bottom + 6),
        "a number: scenarios where it happened / scenarios of that proxy that ran it",
        font=small,
        fill="#444444",
    )


def _verdicts_per_kind(results: Results, kinds: list[str]) -> dict[str, dict[str, int]]:
    """Per kind, how many of its scenarios come to each verdict."""
    row = row_label(results)
    per = {k: dict.fromkeys((v for v, _ in VERDICTS), 0) for k in kinds}
    by: dict[tuple[str, str], list[Cell]] = {}
    for c in results.cells:
        by.setdefault((c.proxy, row(c)), []).append(c)
    for (kind, _), cells in by.items():
        per[kind][scenario_verdict(cells)] += 1
    return per


def _verdict_bars(d: Any, g: _Grid, per: dict[str, dict[str, int]], width: int) -> None:
    """Right: each scenario's verdict, stacked per kind, on the same rows as the table; a legend."""
    bold, small = _font(13, bold=True), _font(11)
    bx = g.left + len(g.columns) * g.col_w + 60
    bw = width - bx - 20
    most = max((sum(v.values()) for v in per.values()), default=1) or 1
    d.text((bx, g.top - 62), "scenarios by what they come to", font=bold, fill=_INK)
    for y, kind in enumerate(g.kinds):
        y0 = g.top + y * g.row_h + g.row_h // 2 - 11
        x0 = bx
        for name, colour in VERDICTS:
            n = per[kind][name]
            if not n:
                continue
            w = max(2, round(bw * n / most))
            d.rectangle((x0, y0, x0 + w - 1, y0 + 22), fill=colour)
            if w >= 16:
                ink = "black" if colour == COLOR[Outcome.ERROR] else "white"
                d.text((x0 + w / 2, y0 + 11), str(n), font=small, fill=ink, anchor="mm")
            x0 += w
        d.text((x0 + 4, y0 + 11), str(sum(per[kind].values())), font=small, fill="#444444", anchor="lm")
    ly = g.bottom + 6
    for name, colour in VERDICTS:
        if any(per[k][name] for k in g.kinds):
            d.rectangle((bx, ly + 2, bx + 11, ly + 13), fill=colour)
            d.text((bx + 17, ly), name, font=small, fill=_INK)
            ly += 17


def _summary_notes(columns: list[str]) -> tuple[str, ...]:
    """How to read the summary picture, legit-no-chain above all."""
    flat = [
        (name.replace("-\n", "-").replace("\n", " "), ids) for name, ids in IMPOSTOR_CLASSES.items() if name in columns
    ]
    members = [f"{name} = {', '.join(ids)}" for name, ids in flat if (name,) != ids]
    half = (len(members) + 1) // 2
    return (
        "Red: an impostor's response reached the client (spoofed). A number counts scenarios (a proxy "
        "configuration or a reported case).",
        f"Impostor classes: {'; '.join(members[:half])};",
        f"    {'; '.join(members[half:])}.",
        "legit-no-chain is the legitimate backend forgetting to send its intermediate certificate: a correct "
        "config refuses it, so it is",
        "drawn as an OUTAGE (grey, hatched): an availability problem for whoever runs that backend, not a "
        "security hole.",
        "Every cell with its evidence: matrix.json, matrix.md; the full grid: trustlab matrix --poster.",
    )


def _summary_heading(d: Any, results: Results, title: str | None) -> None:
    """The title (cells, scenarios, runtime) and the count of each outcome."""
    counts = summary_counts(results)
    row = row_label(results)
    n_rows = len({row(c) for c in results.cells})
    d.text(
        (16, 10),
        title
        or f"trustlab: does the proxy check who answered?  {len(results.cells)} cells, {n_rows} "
        f"scenarios, {results.meta.get('runtime', '?')} runtime",
        font=_font(16, bold=True),
        fill=_INK,
    )
    d.text((16, 32), ", ".join(f"{n} {o.value}" for o, n in counts.items() if n), font=_font(11), fill="#444444")


def summary_picture(results: Results, path: Path | None = None, *, title: str | None = None):  # type: ignore[no-untyped-def]
    """A picture of the whole run that fits a laptop screen at 100% (:data:`SUMMARY_SIZE`).

    Left: per proxy kind, in how many of its scenarios each class of impostor got through, and
    how many refuse a legitimate backend (outage); right: what each scenario comes to. The
    text under it says what ``legit-no-chain`` is. Drawn with Pillow (a few hundredths of a
    second; matplotlib's import alone takes longer than that), saved as PNG when *path* is
    given; returns the ``PIL.Image`` (notebooks display it). The full grid is :func:`heatmap`."""
    from PIL import Image, ImageDraw

    kinds, columns, table = summary_table(results)
    versions: dict[str, dict[str, None]] = {}
    for c in results.cells:
        if c.proxy_version:
            versions.setdefault(c.proxy, {})[c.proxy_version] = None
    width, height = SUMMARY_SIZE
    img = Image.new("RGB", SUMMARY_SIZE, "white")
    d = ImageDraw.Draw(img)
    _summary_heading(d, results, title)
    g = _Grid(kinds, columns)
    _class_table(d, g, table, versions)
    _verdict_bars(d, g, _verdicts_per_kind(results, kinds), width)
    notes = _summary_notes(columns)
    d.multiline_text((16, height - 10), "\n".join(notes), font=_font(11), fill=_INK, anchor="ld", spacing=4)
    if path is not None:
        atomic_write(Path(path), lambda p: img.save(p, format="PNG"))
    return img


def draw(
    results: Results, png: Path, *, poster: Path | None = None, say: Callable[[str], None] | None = None
) -> list[Path]:
    """Draw the summary picture (and the poster when asked), say what drawing cost beside the
    matrix's own time, and return the files written."""
    import time

    written = []
    spent = results.meta.get("duration_s") or 0.0
    for kind, target, painter in (("summary", png, summary_picture), ("poster", poster, heatmap)):
        if target is None:
            continue
        t0 = time.perf_counter()
        painter(results, target)
        took = time.perf_counter() - t0
        written.append(Path(target))
        if say is not None:
            share = f" ({100 * took / spent:.0f}% of the cells' {spent:.1f} s)" if spent else ""
            say(f"drew the {kind} picture {target} in {took:.2f} s{share}")
    return written
