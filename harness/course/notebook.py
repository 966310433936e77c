"""What the teaching notebooks call: run scenarios, show cells as coloured tables, plot, judge claims.

Every ``show_*`` helper returns a :class:`Table`, which Jupyter renders as HTML (outcomes
coloured as in the heatmap) and ``print`` renders as text. Importing this module also gives
:class:`~harness.results.Results` a ``_repr_html_``, so a run displayed in a notebook is its
grid.

Executing the notebooks themselves (tests, ``make notebooks``) lives in :mod:`harness.course.render`.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import runner, scenarios
from harness import verdicts as _verdicts
from harness.errors import LabError
from harness.proxies import driver
from harness.proxies.base import RenderContext
from harness.report import COLOR, LABEL, TEXT_ON, alt_text, heatmap
from harness.results import Results, register_display
from harness.vocab import IDENTITY_IDS, LOCAL_LAB_IP, Outcome

#: Claim verdicts, from the same colour-vision-safe set as the outcomes (and always labelled).
VERDICT_COLOR = {
    _verdicts.Verdict.CONFIRMED: "#0072b2",
    _verdicts.Verdict.REFUTED: "#d55e00",
    _verdicts.Verdict.PARTLY: "#ffd700",
    _verdicts.Verdict.DEPENDS: "#000000",
}
_VERDICT_INK = {_verdicts.Verdict.PARTLY: "black"}


# -- a table that renders as HTML in Jupyter and as text elsewhere ---------------------------
@dataclass
class Table:
    """Rows of values; outcomes and verdicts are coloured in HTML.

    ``items`` keeps the objects the rows were made from (cells, claim results) for code that
    wants more than the display.
    """

    columns: Sequence[str]
    rows: list[list[Any]]
    caption: str = ""
    items: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items or self.rows)

    def __getitem__(self, index: int) -> Any:
        return (self.items or self.rows)[index]

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in self.rows)
        cap = f"<caption style='text-align:left'>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        text = [[_text(v) for v in row] for row in self.rows]
        widths = [max([len(c)] + [min(len(r[i]), 60) for r in text]) for i, c in enumerate(self.columns)]
        lines = [self.caption] if self.caption else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)))
        for row in text:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)

    __repr__ = __str__


@dataclass(frozen=True)
class _Mark:
    """An outcome plus a flag that it differs from the scenario's expectation."""

    outcome: Outcome
    differs: bool = False


def _text(value: Any) -> str:
    if isinstance(value, _Mark):
        return LABEL[value.outcome] + ("!" if value.differs else "")
    if isinstance(value, Outcome | _verdicts.Verdict):
        return value.value
    return "-" if value is None else str(value)


def _td(value: Any) -> str:
    style = "text-align:left;vertical-align:top"
    color, ink = None, "white"
    if isinstance(value, _Mark):
        color, ink = COLOR[value.outcome], TEXT_ON[value.outcome]
    elif isinstance(value, Outcome):
        color, ink = COLOR[value], TEXT_ON[value]
    elif isinstance(value, _verdicts.Verdict):
        color, ink = VERDICT_COLOR[value], _VERDICT_INK.get(value, "white")
    if color:
        style += f";background:{color};color:{ink};font-weight:bold"
    return f"<td style='{style}'>{html.escape(_text(value))}</td>"


# -- running ---------------------------------------------------------------------------------
#: The environment variable that picks the notebooks' runtime (``local``, ``docker`` or ``auto``).
RUNTIME_ENV = "TRUSTLAB_RUNTIME"


def choose_runtime(*, say: Callable[[str], None] | None = print) -> str:
    """The runtime the notebooks run on: ``local``, ``docker`` or ``remote``, chosen as the CLI's default does.

    ``auto`` (the default) picks docker when a daemon answers and the lab image is built, else
    local; ``TRUSTLAB_RUNTIME=local|docker`` overrides it; ``remote`` (set by the classroom
    server's spawner) sends each run to the classroom's lab service
    (:mod:`harness.runtimes.remote`). *say* (default ``print``) is told
    which runtime was chosen and why.
    """
    wanted = os.environ.get(RUNTIME_ENV, "").strip().lower() or "auto"
    if wanted == "auto":
        chosen, why = runner.resolve_auto()
    elif wanted in ("local", "docker"):
        chosen, why = wanted, f"{RUNTIME_ENV}={wanted}"
    elif wanted == "remote":
        from harness.runtimes import remote

        chosen, why = wanted, f"{RUNTIME_ENV}=remote: the classroom's lab service at {remote.endpoint()[0]}"
    else:
        raise LabError(f"{RUNTIME_ENV}={wanted!r} is unknown; set it to local, docker, remote or auto (or unset it)")
    if say:
        say(f"runtime: {chosen} ({why})")
    return chosen


def run_scenario(*scenario_ids: str, runtime: str = "local", identities: Sequence[str] | None = None) -> Results:
    """Run one or more scenarios (``"nginx/good"``, or a path to a scenario file) against every identity."""
    if not scenario_ids:
        raise LabError("run_scenario needs at least one scenario id, e.g. run_scenario('nginx/good')")
    chosen = [scenarios.resolve(s) for s in scenario_ids]
    return runner.run(chosen, runtime=runtime, identities=tuple(identities) if identities else None)


def run_matrix(
    proxies: Sequence[str] | None = None, *, runtime: str = "local", identities: Sequence[str] | None = None
) -> Results:
    """Run every built-in scenario (of *proxies*, default all) against every identity."""
    chosen = scenarios.select(proxies=list(proxies) if proxies else None)
    return runner.run(chosen, runtime=runtime, identities=tuple(identities) if identities else None)


# -- versions (notebook 11) -------------------------------------------------------------------
def versions_of(kind: str, *, runtime: str = "local") -> list[str]:
    """The installed versions of *kind* that *runtime* can run, the default one first."""
    return [i.version for i in runner.get_runtime(runtime).installations(kind)]


def diff_versions(
    a: str,
    b: str,
    *,
    runtime: str = "local",
    scenario_ids: Sequence[str] | None = None,
    identities: Sequence[str] | None = None,
) -> Any:
    """Run ``a`` and ``b`` (``"nginx@1.22"``, ``"nginx@1.31"``) in one lab and diff them (what
    ``trustlab diff`` prints); the returned :class:`~harness.versions.Diff` keeps the run as
    ``results``."""
    from harness.proxies import names
    from harness.versions import diff, parse_selector

    try:
        sa, sb = (parse_selector(x, kinds=names(), flag="diff_versions") for x in (a, b))
    except ValueError as exc:
        raise LabError(str(exc)) from None
    if sa.kind != sb.kind or not sa.prefix or not sb.prefix:
        raise LabError(f"diff_versions: give two versions of one proxy, like 'nginx@1.22', 'nginx@1.31' (got {a}, {b})")
    chosen = [scenarios.resolve(s) for s in scenario_ids] if scenario_ids else scenarios.select(proxies=[sa.kind])
    res = runner.run(chosen, runtime=runtime, identities=tuple(identities) if identities else None, selectors=[sa, sb])
    (la, ca), (lb, cb) = runner.side(res, sa), runner.side(res, sb)
    d = diff(ca, cb, a=la, b=lb)
    d.results = res
    return d


# -- showing ---------------------------------------------------------------------------------
def _subset(results: Results, scenario_ids: Iterable[str] | None, identities: Iterable[str] | None) -> Results:
    want_s = list(scenario_ids) if scenario_ids is not None else None
    want_i = set(identities) if identities is not None else None
    cells = [
        c
        for c in results.cells
        if (want_s is None or c.scenario in want_s) and (want_i is None or c.identity in want_i)
    ]
    if want_s is not None:
        missing = [s for s in want_s if not any(c.scenario == s for c in cells)]
        if missing:
            raise KeyError(f"not in this run: {', '.join(missing)}")
        order = {s: n for n, s in enumerate(want_s)}
        cells.sort(key=lambda c: order[c.scenario])
    return Results(meta=results.meta, cells=cells)


def show_cells(
    results: Results, scenarios: Iterable[str] | None = None, *, identities: Iterable[str] | None = None
) -> Table:
    """The scenarios x identities grid, coloured by outcome; ``!`` marks a cell that differs from expected."""
    sub = _subset(results, scenarios, identities)
    idents = [i for i in IDENTITY_IDS if any(c.identity == i for c in sub.cells)]
    from harness.report import row_label

    row_of = row_label(sub)  # "scenario @version" when the run holds a scenario on several versions
    by = {(row_of(c), c.identity): c for c in sub.cells}
    rows = []
    for sid in dict.fromkeys(row_of(c) for c in sub.cells):
        row: list[Any] = [sid]
        for i in idents:
            c = by.get((sid, i))
            row.append(_Mark(c.outcome, c.differs) if c else None)
        rows.append(row)
    n = len(sub.cells)
    spoofed = sum(c.outcome is Outcome.SPOOFED for c in sub.cells)
    caption = f"{n} cells, {spoofed} spoofed, {len(sub.mismatches)} differ from expectation"
    return Table(["scenario", *idents], rows, caption=caption, items=sub.cells)


def backend_saw(results: Results, scenario: str) -> Table:
    """Per identity: outcome, HTTP status, the SNI and TLS version the backend saw, and the evidence."""
    cells = [c for c in results.cells if c.scenario == scenario]
    if not cells:
        raise KeyError(f"{scenario!r} is not in this run")
    versioned = len({c.proxy_version for c in cells}) > 1
    rows: list[list[Any]] = [
        [
            *([c.proxy_version] if versioned else []),
            c.identity,
            c.outcome,
            c.status,
            c.sni or "(no SNI)",
            c.tls,
            c.reason,
        ]
        for c in cells
    ]
    columns = ["identity", "outcome", "status", "SNI seen", "TLS", "evidence"]
    return Table(["version", *columns] if versioned else columns, rows, caption=scenario, items=cells)


class Picture:
    """A matplotlib figure shown in Jupyter as an ``<img>`` with alt text.

    nbconvert's HTML has no alt text for a plain figure output (it warns on each one); this
    renders the PNG inside an ``<img alt=...>``. Attribute access falls through to the figure
    (``picture.axes``), and ``picture.figure`` is the figure itself.
    """

    def __init__(self, figure: Any, alt: str) -> None:
        self.figure = figure
        self.alt = alt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.figure, name)

    def png(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=100)
        return buf.getvalue()

    def _repr_html_(self) -> str:
        import base64

        data = base64.b64encode(self.png()).decode()
        return f"<img src='data:image/png;base64,{data}' alt='{html.escape(self.alt, quote=True)}'>"

    def __repr__(self) -> str:
        return f"<Picture: {self.alt}>"


def plot_grid(
    results: Results,
    scenarios: Iterable[str] | None = None,
    *,
    identities: Iterable[str] | None = None,
    title: str | None = None,
) -> Picture:
    """A heatmap of the chosen scenarios x identities, coloured and labelled by outcome, with
    alt text describing it (see :func:`harness.report.alt_text`)."""
    import matplotlib.pyplot as plt

    chosen = _subset(results, scenarios, identities)
    fig = heatmap(chosen, title=title)
    # Closed, so Jupyter shows the returned picture once (not once more from pyplot's state).
    plt.close(fig)
    return Picture(fig, alt_text(chosen))


def show_pki(pki: Any) -> Table:
    """Every identity of a :class:`~harness.pki.LabPKI`: subject, SANs, issuer, validity, meaning."""
    rows = []
    descs = []
    for ident in pki.identities.values():
        d = ident.describe()
        descs.append(d)
        rows.append(
            [
                d["identity"],
                "yes" if d["legitimate"] else "no",
                d["subject"] or "(empty)",
                ", ".join(d["sans"]) or "(none)",
                d["issuer"],
                d["not_before"][:10],
                d["not_after"][:10],
                d["chain_served"],
            ]
        )
    cols = ["identity", "legitimate", "subject", "SANs", "issuer", "not before", "not after", "certs served"]
    return Table(cols, rows, items=descs)


def scenario_config(scenario_id: str, *, full: bool = False) -> str:
    """The proxy config a scenario renders (paths shown as ``/lab/...``); by default only the trust lines."""
    sc = scenarios.resolve(scenario_id)
    ctx = RenderContext(
        run_dir="/lab/run",
        listen="127.0.0.1:8080",
        ca="/lab/internal-pki.pem",
        bundle="/lab/system-bundle.pem",
        backend_ip=LOCAL_LAB_IP,
    )
    text = driver(sc.proxy).render(sc, ctx)
    if full:
        return text
    keys = [k for k, _ in sc.directives] + ["proxy_pass", "ProxyPass ", "server be", "SSLProxy"]
    return "\n".join(
        ln.rstrip() for ln in text.splitlines() if any(k in ln for k in keys) and not ln.lstrip().startswith("#")
    )


@dataclass(frozen=True)
class ScenarioCard:
    """A scenario's title, description, rendered trust lines, sources and expectations."""

    id: str
    title: str
    description: str
    config: str
    sources: tuple[str, ...]
    expected: dict[str, Outcome]

    def _repr_html_(self) -> str:
        src = "".join(f"<li><a href='{html.escape(u)}'>{html.escape(u)}</a></li>" for u in self.sources)
        return (
            f"<h4>{html.escape(self.id)}: {html.escape(self.title)}</h4>"
            f"<p>{html.escape(self.description)}</p>"
            f"<pre>{html.escape(self.config)}</pre><ul>{src}</ul>"
        )

    def __str__(self) -> str:
        return "\n".join([f"{self.id}: {self.title}", self.description, "", self.config, "", *self.sources])

    __repr__ = __str__


def show_scenario(scenario_id: str) -> ScenarioCard:
    """What a scenario is: its description, the proxy lines it renders and the sources it cites."""
    sc = scenarios.resolve(scenario_id)
    return ScenarioCard(
        sc.id, sc.title, " ".join(sc.description.split()), scenario_config(scenario_id), sc.sources, dict(sc.expected)
    )


def claims(results: Results) -> Table:
    """The circulating claims (docs/claims.md), each with this run's verdict (rules: :mod:`harness.verdicts`)."""
    found = _verdicts.evaluate(results)
    rows: list[list[Any]] = [[r.number, r.claim, r.verdict, r.finding] for r in found]
    return Table(["#", "claim", "verdict", "what the run shows"], rows, items=found)


def _results_html(self: Results) -> str:
    return str(show_cells(self)._repr_html_())


def _results_pretty(self: Results, printer: Any, cycle: bool) -> None:
    from harness.report import grid

    printer.text(grid(self))


# Results._repr_html_ / _repr_pretty_ (harness/results.py) call the two functions above once
# this module is imported (any notebook helper imports it), so a run displays as its grid.
register_display(html=_results_html, pretty=_results_pretty)


# -- learning by doing: predict, then see; submit a fix, get a verdict -------------------------
@dataclass
class Banner:
    """A coloured verdict line (Jupyter HTML; plain text elsewhere) with the object behind it."""

    text: str
    good: bool
    detail: Table | None = None
    item: Any = None

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.good else "#c62828"
        head = (
            f"<div style='background:{color};color:white;font-weight:bold;padding:8px 12px;"
            f"border-radius:4px'>{html.escape(self.text)}</div>"
        )
        return head + (self.detail._repr_html_() if self.detail is not None else "")

    def __str__(self) -> str:
        return self.text + (f"\n{self.detail}" if self.detail is not None else "")

    __repr__ = __str__


#: What a prediction cell holds until the learner fills it in (``spoofed=...``).
NOT_PREDICTED: Any = ...


def _through(outcome: Outcome) -> bool:
    """An identity "gets through" when its response reaches the client (served or spoofed)."""
    return outcome in (Outcome.SPOOFED, Outcome.SERVED)


def predict(
    scenario_id: str,
    *,
    spoofed: Sequence[str] | Any = NOT_PREDICTED,
    results: Results | None = None,
    runtime: str = "local",
    identities: Sequence[str] | None = None,
) -> Table:
    """Commit to a prediction, then see the real outcomes scored cell by cell.

    *spoofed* lists the identities you predict get through (an impostor spoofed, or a legitimate
    identity served); every other identity you predict is stopped. With *results* (a run the
    notebook made after you wrote the prediction down) it is scored against that run's cells
    of *scenario_id*; without, the scenario runs now. The table has one row per identity: your
    prediction, the real outcome, whether you were right; its caption is the score and names the
    surprises (``table.score`` is ``(right, total)``, ``table.surprises`` the identities you got
    wrong).

    Left at its placeholder (``spoofed=...``, or ``None``) it raises nothing and says "you did not
    predict yet": with *results* it shows the real outcomes unscored, without them it runs nothing.
    A scored prediction is kept in the learner's progress, next to the challenges
    (``trustlab challenge progress``).
    """
    placeholder = spoofed is NOT_PREDICTED or spoofed is None
    sc = scenarios.resolve(scenario_id)
    if results is not None:
        cells = [c for c in results.cells if c.scenario == sc.id and (not identities or c.identity in identities)]
        if not cells:
            raise LabError(f"predict: {sc.id} is not in this run; run it first (harness.run_scenario)")
        chosen = [c.identity for c in cells]
    else:
        cells = []
        chosen = list(identities) if identities else list(IDENTITY_IDS)
    if not placeholder:
        if isinstance(spoofed, str):
            raise LabError("predict: spoofed must be a list of identity ids, e.g. spoofed=['rogue-ca']")
        unknown = [i for i in spoofed if i not in chosen]
        if unknown:
            raise LabError(f"predict: {', '.join(unknown)} unknown here; identities: {', '.join(chosen)}")
    if placeholder and results is None:
        table = Table(
            ["identity"],
            [[i] for i in chosen],
            caption=f"{sc.id}: you did not predict yet; replace ... with a list of the identities "
            "you expect to get through, e.g. ['rogue-ca'] ([] for none), and run the cell again",
        )
        table.score = None  # type: ignore[attr-defined]
        table.surprises = []  # type: ignore[attr-defined]
        return table
    if results is None:
        results = runner.run([sc], runtime=runtime, identities=tuple(chosen))
        cells = list(results.cells)
    rows: list[list[Any]] = []
    right = 0
    surprises: list[str] = []
    for c in cells:
        through = _through(c.outcome)
        if placeholder:
            rows.append([c.identity, "-", c.outcome, "", c.reason])
            continue
        said = c.identity in spoofed
        ok = said == through
        right += ok
        if not ok:
            surprises.append(c.identity)
        rows.append(
            [c.identity, "gets through" if said else "stopped", c.outcome, "right" if ok else "WRONG", c.reason]
        )
    if placeholder:
        caption = f"{sc.id}: you did not predict yet (the prediction cell still holds ...); the real outcomes, unscored"
    else:
        caption = _scored_caption(sc.id, right, len(rows), surprises, spoofed)
        from harness.course import challenges

        try:  # one record with the challenges: `trustlab challenge progress` shows it
            challenges.record_prediction(sc.id, right, len(rows))
        except LabError as exc:  # a broken progress file must not hide the score
            caption += f" (not recorded: {exc})"
    table = Table(["identity", "you said", "real outcome", "", "evidence"], rows, caption=caption, items=cells)
    table.score = None if placeholder else (right, len(rows))  # type: ignore[attr-defined]
    table.surprises = surprises  # type: ignore[attr-defined]
    return table


def _scored_caption(scenario: str, right: int, total: int, surprises: list[str], spoofed: Sequence[str]) -> str:
    """``nginx/good: 8/10 predicted right; surprising: ...``: the surprises both ways."""
    caption = f"{scenario}: {right}/{total} predicted right"
    if not surprises:
        return caption + "; no surprise"
    got_in = [i for i in surprises if i not in spoofed]
    kept_out = [i for i in surprises if i in spoofed]
    parts = ([f"{', '.join(got_in)} got through (you said stopped)"] if got_in else []) + (
        [f"{', '.join(kept_out)} stopped (you said through)"] if kept_out else []
    )
    return caption + "; surprising: " + "; ".join(parts)


def submit(
    challenge_id: str, config_text: str, *, runtime: str = "local", files: dict[str, str] | None = None
) -> Banner:
    """Grade *config_text* for a challenge on the real proxy (the grader ``trustlab challenge check`` uses).

    A challenge whose config reads further files beside it (Traffic Server's ``remap.config``)
    gets them as ``trustlab challenge start`` writes them, or the learner's own text for any of
    them given in *files* (file name -> text); a name the challenge does not read is refused.

    Shows a green "Solved" banner (with the flag in CTF mode) or a red "Not yet" one with the
    identities that got the wrong outcome; a solve is recorded in the learner's progress.
    """
    import tempfile
    from pathlib import Path

    from harness.course import challenges

    ch = challenges.get(challenge_id)
    if not isinstance(config_text, str) or not config_text.strip():
        raise LabError(f"submit: config_text must be the text of your {ch.config}")
    own = dict(files or {})
    unknown = sorted(set(own) - set(ch.files))
    if unknown:
        reads = ", ".join(ch.files) or "no further file"
        raise LabError(f"submit: {ch.id} does not read {', '.join(unknown)} beside {ch.config}; it reads {reads}")
    if any(not isinstance(t, str) or not t.strip() for t in own.values()):
        raise LabError(f"submit: each of files must be the text of that file for {ch.id}")
    with tempfile.TemporaryDirectory(prefix="trustlab-submit-") as tmp:
        path = Path(tmp) / ch.config
        path.write_text(config_text)
        for name in ch.files:
            (Path(tmp) / name).write_text(own[name] if name in own else (ch.path / name).read_text())
        g = challenges.grade(ch, path, runtime=runtime)
    if g.solved:
        secret = challenges.workshop_secret()
        g.flag = challenges.flag(ch.id, secret) if secret else None
        challenges.record_solve(g)
        text = f"Solved: {ch.id} - {ch.title}" + (f"  (flag: {g.flag})" if g.flag else "")
        return Banner(text, True, item=g)
    # A problem found before any request (another host, another name) has no identity or outcome.
    rows: list[list[Any]] = [
        [f["identity"] or "-", Outcome(f["outcome"]) if f["outcome"] else "-", f["want"] or "-", f["reason"]]
        for f in g.failures
    ]
    why = g.rejected or f"{len(g.failures)} identity(ies) got the wrong outcome"
    hint = f"; a hint: trustlab challenge hint {ch.id}" if challenges.hints_enabled() else ""
    return Banner(
        f"Not yet: {ch.id}: {why}{hint}",
        False,
        detail=Table(["identity", "outcome", "wanted", "proxy's reason"], rows),
        item=g,
    )
