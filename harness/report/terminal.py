"""What ``trustlab`` prints on a terminal: grids, per-cell evidence, ``check`` and ``diff``, progress.

Everything fits the console's width (80 columns when it cannot tell, as in a pipe or a CI log):
rows are grouped by proxy kind, each cell is one glyph (legend below the grid), identity columns
carry a two-letter header named once in the legend, and long evidence is folded under its cell.
``--wide`` keeps the older one-line-per-cell layout (:mod:`harness.report`, :func:`harness.check.render`,
:func:`harness.versions.render_diff`).

Colour comes from rich and follows it: none when stdout is not a terminal, none when ``NO_COLOR``
is set; colour is never the only signal (every cell has its glyph, every outcome its word).
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO, cast

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from harness.results import Cell, Results
from harness.vocab import ALL_IDENTITY_IDS, LEGITIMATE_IDS, Outcome

if TYPE_CHECKING:
    from harness.check import CheckCell, CheckResult
    from harness.versions import Diff

#: Width used when the console cannot tell (not a terminal and no ``COLUMNS``).
DEFAULT_WIDTH = 80

#: One glyph per outcome, its word (the legend) and its style on a colour terminal.
GLYPH = {
    Outcome.SERVED: "+",
    Outcome.SPOOFED: "X",
    Outcome.BLOCKED: ".",
    Outcome.CONFIG_REJECTED: "R",
    Outcome.ERROR: "E",
}
#: A legitimate backend refused (blocked or error): the proxy is down for real users.
OUTAGE_GLYPH = "O"
NOT_RUN_GLYPH = "-"
DIFFERS_MARK = "!"
STYLE = {
    Outcome.SERVED: "green",
    Outcome.SPOOFED: "bold red",
    Outcome.BLOCKED: "dim",
    Outcome.CONFIG_REJECTED: "magenta",
    Outcome.ERROR: "bold yellow",
}
OUTAGE_STYLE = "yellow"
#: The word ``run``, ``check`` and ``diff`` print for an outcome (spoofed shouts).
WORD = {o: o.value.upper() if o is Outcome.SPOOFED else o.value for o in Outcome}

#: Two-letter column headers, named once in the legend under the grid: legitimate identities in
#: capitals, impostors in lower case. New identities get their initials (or a number) from
#: :func:`abbreviations`.
ABBREV = {
    "legit": "LG",
    "legit-no-chain": "NC",
    "rogue-ca": "rc",
    "self-signed": "ss",
    "wrong-name": "wn",
    "expired": "ex",
    "not-yet-valid": "ny",
    "ip-san": "ip",
    "wildcard": "wc",
    "public-ca": "pc",
    "legit-deep": "LD",
    "wildcard-parent": "wp",
    "cn-only": "cn",
    "san-other-cn-backend": "so",
    "client-ca-signed": "cc",
    "revoked": "rv",
}


def console(file: TextIO | None = None, *, width: int | None = None, stderr: bool = False) -> Console:
    """A rich console for *file* (stdout): colour only on a terminal and without ``NO_COLOR``.

    Its width is the terminal's, else ``COLUMNS``, else 80; *width* forces one (tests)."""
    out = file if file is not None else (sys.stderr if stderr else sys.stdout)
    tty = out.isatty() if hasattr(out, "isatty") else False
    if width is None and not tty:
        try:
            width = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            width = DEFAULT_WIDTH
    # NO_COLOR or not a terminal: no escape sequence at all (rich's own no_color keeps bold and dim).
    plain = bool(os.environ.get("NO_COLOR")) or not tty
    return Console(
        file=cast(TextIO, _Rstrip(out)),
        width=width,
        force_terminal=tty,
        color_system=None if plain else "auto",
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )


def to_text(draw: Callable[[Console], None], *, width: int = DEFAULT_WIDTH) -> str:
    """What *draw* prints on a plain *width*-column console (tests, notebooks, files)."""
    buf = io.StringIO()
    draw(
        Console(
            file=cast(TextIO, _Rstrip(buf)),
            width=width,
            force_terminal=False,
            color_system=None,
            highlight=False,
            emoji=False,
        )
    )
    return buf.getvalue()


class _Rstrip(io.TextIOBase):
    """A file that drops the spaces rich pads lines with before each newline (clean logs)."""

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def write(self, text: str) -> int:
        self.file.write("\n".join(line.rstrip(" ") for line in text.split("\n")))
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def isatty(self) -> bool:
        return self.file.isatty()

    def fileno(self) -> int:
        return self.file.fileno()


# -- the matrix grid ---------------------------------------------------------------------------
def abbreviations(identities: Iterable[str]) -> dict[str, str]:
    """A unique header of at most two characters for each identity."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for n, ident in enumerate(identities, start=1):
        parts = [p for p in ident.split("-") if p]
        guess = ABBREV.get(ident) or ("".join(p[0] for p in parts)[:2] if len(parts) > 1 else ident[:2])
        guess = guess.upper() if ident in LEGITIMATE_IDS else guess.lower()
        if guess in taken:
            guess = f"{n:02d}"[-2:]
        out[ident] = guess
        taken.add(guess)
    return out


def _ordered_identities(cells: Iterable[Cell]) -> list[str]:
    """Legitimate identities first, then impostors, each in the vocabulary's order."""
    present = {c.identity for c in cells}
    known = [i for i in ALL_IDENTITY_IDS if i in present]
    extra = sorted(present - set(known))
    idents = known + extra
    return [i for i in idents if i in LEGITIMATE_IDS] + [i for i in idents if i not in LEGITIMATE_IDS]


def _is_outage(cell: Cell) -> bool:
    return cell.identity in LEGITIMATE_IDS and cell.outcome in (Outcome.BLOCKED, Outcome.ERROR)


def cell_glyph(cell: Cell | None) -> Text:
    """One cell of the grid: its glyph, ``!`` when it differs from expectation, styled."""
    if cell is None:
        return Text(NOT_RUN_GLYPH, style="dim")
    mark = DIFFERS_MARK if cell.differs else ""
    if _is_outage(cell) and cell.outcome is Outcome.BLOCKED:
        return Text(OUTAGE_GLYPH + mark, style=OUTAGE_STYLE)
    return Text(GLYPH[cell.outcome] + mark, style=STYLE[cell.outcome] + (" reverse" if mark else ""))


def _kind_heading(kind: str, cells: list[Cell], row: Callable[[Cell], str]) -> Text:
    versions = list(
        dict.fromkeys(
            f"{c.proxy_version}" + (f" ({c.tls_library})" if c.tls_library else "") for c in cells if c.proxy_version
        )
    )
    rows = {row(c) for c in cells}
    through = {row(c) for c in cells if c.outcome is Outcome.SPOOFED}
    head = Text(kind, style="bold")
    if versions:
        head.append(" " + ", ".join(versions))
    head.append(f": {len(rows)} scenario{'s' if len(rows) != 1 else ''}, ")
    head.append(f"{len(through)} let an impostor through", style="red" if through else "")
    return head


def matrix_grid(results: Results, out: Console) -> None:
    """The matrix as one narrow table per proxy kind, then the legend and the totals."""
    from harness.report import grouped_rows, row_label, summary_counts

    row = row_label(results)
    by = {(row(c), c.identity): c for c in results.cells}
    used: list[str] = []
    abbrev = abbreviations(_ordered_identities(results.cells))
    for kind, rows in grouped_rows(results):
        # A run on several versions (--all-versions): one table per version, rows without "@version".
        by_version: dict[str | None, list[str]] = {}
        for r in rows:
            _, at, suffix = r.partition(" @")
            by_version.setdefault(suffix if at else None, []).append(r)
        for version, group in by_version.items():
            cells = [c for c in results.cells if c.proxy == kind and (version is None or c.proxy_version == version)]
            idents = _ordered_identities(cells)
            used += [i for i in idents if i not in used]
            out.print(_kind_heading(kind, cells, row))
            out.print(_kind_table(kind, group, idents, abbrev, by))
            out.print()
    _legend(out, used, abbrev)
    counts = summary_counts(results)
    total = Text(f"{len(results.cells)} cells: ")
    total.append(", ".join(f"{n} {o.value}" for o, n in counts.items() if n))
    total.append(f"; {len(results.mismatches)} differ from expectation")
    total.append(" (marked !)" if results.mismatches else "")
    out.print(total)


def _kind_table(
    kind: str, rows: list[str], idents: list[str], abbrev: dict[str, str], by: dict[tuple[str, str], Cell]
) -> Table:
    """One kind's (or one version's) rows: the variant, then a glyph per identity."""
    table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False, header_style="bold")
    table.add_column(overflow="fold", no_wrap=False, min_width=12)
    for ident in idents:
        table.add_column(abbrev[ident], no_wrap=True, min_width=2)
    own = [r for r in rows if r.startswith(kind + "/")]
    # Reported cases (scenarios/reported/) under their own line, without the common prefix.
    others = [r for r in rows if r not in own]
    for r in own + others:
        if r is (others[0] if others else None):
            table.add_row(Text("reported cases:", style="dim italic"), *[""] * len(idents))
        label = r.partition(" @")[0]
        label = label[len(kind) + 1 :] if r in own else label.removeprefix("reported/")
        table.add_row(label, *[cell_glyph(by.get((r, i))) for i in idents])
    return table


def _glyph_legend() -> Text:
    """What each glyph of a cell means."""
    cells = Text("cells: ", style="bold")
    for n, (glyph, style, word) in enumerate(
        [
            (GLYPH[Outcome.SERVED], STYLE[Outcome.SERVED], "served"),
            (GLYPH[Outcome.SPOOFED], STYLE[Outcome.SPOOFED], "SPOOFED (an impostor reached the client)"),
            (GLYPH[Outcome.BLOCKED], "", "blocked"),
            (OUTAGE_GLYPH, OUTAGE_STYLE, "OUTAGE (a legitimate backend blocked)"),
            (GLYPH[Outcome.CONFIG_REJECTED], STYLE[Outcome.CONFIG_REJECTED], "config-rejected"),
            (GLYPH[Outcome.ERROR], STYLE[Outcome.ERROR], "error"),
            (NOT_RUN_GLYPH, "", "not run"),
            (DIFFERS_MARK, "", "after a glyph: differs from the scenario's expectation"),
        ]
    ):
        cells.append(", " if n else "")
        cells.append(glyph, style=style)
        cells.append(" " + word)
    return cells


def _legend(out: Console, idents: list[str], abbrev: dict[str, str]) -> None:
    legit = [i for i in idents if i in LEGITIMATE_IDS]
    impostors = [i for i in idents if i not in LEGITIMATE_IDS]
    cols = Text("columns: ", style="bold")
    cols.append("legitimate " + ", ".join(f"{abbrev[i]} {i}" for i in legit))
    if impostors:
        cols.append("; impostors " + ", ".join(f"{abbrev[i]} {i}" for i in impostors))
    out.print(cols)
    out.print(_glyph_legend())
    if "legit-no-chain" in idents:
        out.print(
            f"{abbrev['legit-no-chain']}: the legitimate backend forgets its intermediate; a correct config "
            "refuses it (O): an availability problem, not a hole.",
            style="dim",
        )


def written(paths: list[Any], out: Console, *, verb: str = "wrote") -> None:
    """``wrote DIR/: a.json, a.csv`` (files grouped by directory), folded at the console's width."""
    from pathlib import Path

    by: dict[str, list[str]] = {}
    for p in map(Path, paths):
        by.setdefault(str(p.parent), []).append(p.name)
    out.print(f"{verb} " + "; ".join(f"{d}/: {', '.join(names)}" for d, names in by.items()))


def scenario_list(chosen: list[Any], out: Console) -> None:
    """``trustlab matrix --list``: each scenario id and its title, the title folded beside the id."""
    table = Table.grid(padding=(0, 2, 0, 0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for sc in chosen:
        table.add_row(sc.id, sc.title)
    out.print(table)


# -- run: per-cell evidence --------------------------------------------------------------------
def _evidence_head(
    identity: str, outcome: Outcome, status: int | None, sni: str | None, tls: str | None, *, outage: bool = False
) -> Text:
    line = Text("  " + f"{identity:<16} ")
    word = WORD[outcome] + (" (outage)" if outage else "")
    line.append(f"{word:<16}", style=OUTAGE_STYLE if outage else STYLE[outcome])
    line.append(f" {str(status) if status is not None else '-':>4}  sni={sni or '-'}")
    if tls is not None:
        line.append(f"  {tls}")
    return line


def _folded(text: str, *, indent: int = 6, style: str = "") -> Padding:
    """*text* on the lines under its cell, wrapped at the console's width."""
    return Padding(Text(text, style=style), (0, 0, 0, indent), expand=False)


def cell_evidence(cells: list[Cell], out: Console) -> None:
    """``trustlab run``: one line per cell (identity, outcome, HTTP status, SNI, TLS), its reason
    folded under it, and what the scenario expected when the cell differs."""
    for c in cells:
        out.print(_evidence_head(c.identity, c.outcome, c.status, c.sni, c.tls, outage=_is_outage(c)))
        note = ""
        if c.differs and c.expected:
            note = f"<-- expected {c.expected.value}; "
        elif c.expected is None:
            note = "(no expectation) "
        if note or c.reason:
            out.print(_folded(note + c.reason, style="bold" if c.differs else ""))


def run_report(results: Results, chosen: list[Any], out: Console) -> None:
    """What ``trustlab run`` prints for its scenarios."""
    for sc in chosen:
        cells = [c for c in results.cells if c.scenario == sc.id]
        head = Text(f"{sc.id}: ", style="bold")
        head.append(sc.title)
        if any(c.differs for c in cells):
            head.append("  (differs from the scenario's expectation)", style="bold red")
        out.print(head)
        cell_evidence(cells, out)
        if sc.unlisted:
            out.print(
                _folded(
                    f"({len(sc.unlisted)} identities have no expectation in {sc.path or sc.id}: "
                    f"{', '.join(sc.unlisted)}; reported, not judged)",
                    indent=2,
                )
            )
        out.print()


# -- check -------------------------------------------------------------------------------------
def check_report(result: CheckResult, out: Console) -> None:
    """What ``trustlab check`` prints: each upstream's block headed by the upstream, its server
    name and location, and its config line."""
    out.print(Text(f"trustlab check {result.proxy} {result.config}", style="bold"))
    out.print()
    out.print("adapted to run in the lab:")
    notes = Table.grid(padding=(0, 1, 0, 0))
    notes.add_column()
    notes.add_column(overflow="fold")
    for note in result.adaptations:
        notes.add_row("-", note)
    out.print(Padding(notes, (0, 0, 0, 2), expand=False))
    out.print()
    ups = result.upstreams
    info = {u.get("label"): u for u in getattr(result, "upstream_info", [])}
    for n, up in enumerate(ups, start=1):
        head = Text(f"upstream {n} of {len(ups)}: " if len(ups) > 1 else "upstream: ", style="bold")
        head.append(up)
        out.print(head)
        u = info.get(up, {})
        where = []
        if u.get("server"):
            where.append(f"reached as {u['server']}")
        if u.get("name"):
            where.append(f"legitimate certificate for {u['name']}")
        if where:
            out.print(_folded(", ".join(where), indent=2, style="dim"))
        if u.get("request"):
            out.print(_folded(f"request {u['request']}", indent=2, style="dim"))
        elif u.get("unroutable"):
            out.print(_folded(f"not probed: {u['unroutable']}", indent=2, style="dim"))
        if u.get("line") and u.get("text"):
            out.print(_folded(f"line {u['line']}: {u['text']}", indent=2, style="dim"))
        for c in (c for c in result.cells if c.upstream == up):
            check_cell(c, out)
        out.print()
    first, *problems = result.summary().splitlines()
    verdict = Text("PASS " if result.ok else "FAIL ", style="bold green" if result.ok else "bold red")
    verdict.append(first)
    out.print(verdict)
    for line in problems:
        out.print(_folded(line.strip(), indent=2))
    on = f", {result.proxy} {result.proxy_version}" if result.proxy_version else ""
    lib = f" with {result.tls_library}" if result.tls_library else ""
    out.print(f"({result.duration_s:.2f} s, {result.runtime} runtime{on}{lib})")


def check_cell(c: CheckCell, out: Console) -> None:
    outage = c.identity in LEGITIMATE_IDS and c.outcome in (Outcome.BLOCKED, Outcome.ERROR)
    out.print(_evidence_head(c.identity, c.outcome, c.status, c.sni or "(none)", None, outage=outage))
    if c.reason:
        out.print(_folded(c.reason))


# -- diff --------------------------------------------------------------------------------------
def diff_report(d: Diff, out: Console) -> None:
    """What ``trustlab diff`` prints: each change, the two reasons folded under it."""
    out.print(Text(f"{d.a} -> {d.b}: {d.compared} cells compared, {len(d.changes)} outcome(s) change", style="bold"))
    groups: dict[tuple[str, str, str, str, str], list[str]] = {}
    for c in d.changes:
        groups.setdefault((c.scenario, c.before, c.after, c.before_reason, c.after_reason), []).append(c.identity)
    for (scenario, before, after, why_a, why_b), identities in groups.items():
        line = Text(f"  {scenario} x {', '.join(identities)}: ")
        line.append(before, style=_style_of(before))
        line.append(" -> ")
        line.append(after, style=_style_of(after))
        out.print(line)
        out.print(_folded(f"{d.a}: {why_a}"))
        out.print(_folded(f"{d.b}: {why_b}"))
    for field, pairs in d.evidence.items():
        for (x, y), n in sorted(pairs.items(), key=lambda kv: -kv[1]):
            out.print(
                _folded(
                    f"evidence {field}: {x if x is not None else '-'} -> {y if y is not None else '-'} "
                    f"in {n} cell(s) whose outcome did not change",
                    indent=2,
                )
            )
    for label, keys in ((d.a, d.only_a), (d.b, d.only_b)):
        if keys:
            out.print(_folded(f"only in {label}: {len(keys)} cell(s) (e.g. {keys[0][0]} x {keys[0][1]})", indent=2))


def _style_of(outcome: str) -> str:
    try:
        return STYLE[Outcome(outcome)]
    except ValueError:
        return ""


# -- progress ----------------------------------------------------------------------------------
class Progress:
    """A progress bar on stderr while cells run (rich; transient), silent when stderr is not a
    terminal. *total* 0 means not known up front (a run on several versions): a counter."""

    def __init__(self, total: int, *, label: str = "cells") -> None:
        self.total, self.done, self.label = total, 0, label
        self.t0 = time.perf_counter()
        self._bar: Any = None
        if not sys.stderr.isatty():
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        columns = [BarColumn(bar_width=30), MofNCompleteColumn()] if total > 0 else [TextColumn("{task.completed}")]
        self._bar = Bar(
            *columns,
            TextColumn(label),
            TimeElapsedColumn(),
            TextColumn("{task.description}", style="dim"),
            console=console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task("", total=total or None)
        self._bar.start()

    def step(self, text: str = "") -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=text[:28])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


__all__ = [
    "ABBREV",
    "GLYPH",
    "Progress",
    "abbreviations",
    "cell_evidence",
    "cell_glyph",
    "check_report",
    "console",
    "diff_report",
    "matrix_grid",
    "run_report",
    "scenario_list",
    "to_text",
    "written",
]
