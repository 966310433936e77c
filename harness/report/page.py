"""The atlas: one self-contained HTML page of a run's cells (issue 23).

``trustlab matrix`` writes ``index.html`` beside its JSON, and ``trustlab report FILE.json`` turns
any matrix, diff, check or conformance JSON into one. The page works offline from disk: the data is
embedded as JSON in a ``<script type="application/json">`` element, the script and styles are
inline, and a Content-Security-Policy meta tag (``default-src 'none'``) makes the browser itself
refuse any request. The templates (``harness/templates/results.html.j2``, and
``conformance.html.j2`` for a conformance run: cases x proxy installations) are rendered with
Jinja2 and share their styles (``_atlas.css.j2``).

The cells are embedded column by column (:func:`compact`): a column of repeated values (outcome,
identity, reason line) becomes a table of its distinct values plus an index per cell, which keeps a
3.5k-cell run well under 3 MB. :func:`expand` is the inverse, and the page's script does the same.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.vocab import ALL_IDENTITY_IDS, IDENTITIES, LEGITIMATE_IDS, OPTIONAL_IDENTITIES, Outcome, ProxyKind

#: The page's file name beside a matrix's JSON.
PAGE_NAME = "index.html"
TEMPLATE = "results.html.j2"
#: A column holds a table of its distinct values when they repeat at least this often on average.
_TABLE_RATIO = 2
#: The page's impostor columns, grouped by what the impostor's certificate gets wrong.
IMPOSTOR_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wrong issuer", ("rogue-ca", "self-signed", "public-ca", "client-ca-signed")),
    ("wrong name", ("wrong-name", "ip-san", "wildcard", "wildcard-parent", "cn-only", "san-other-cn-backend")),
    ("not valid now", ("expired", "not-yet-valid")),
    ("revoked", ("revoked",)),
)


# -- the embedded data ------------------------------------------------------------------------
def compact(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Cells as columns: ``{"n": N, "fields": [...], "columns": {field: column}}``.

    A column is ``{"t": [distinct values], "i": [index per cell]}`` when its values repeat, else
    ``{"v": [value per cell]}``. A field a cell lacks reads back as ``None``."""
    fields = list(dict.fromkeys(k for c in cells for k in c))
    columns: dict[str, dict[str, list[Any]]] = {}
    n = len(cells)
    for f in fields:
        values = [c.get(f) for c in cells]
        index: dict[str, int] = {}
        table: list[Any] = []
        refs = []
        for v in values:
            key = json.dumps(v, sort_keys=True)
            if key not in index:
                index[key] = len(table)
                table.append(v)
            refs.append(index[key])
        if len(table) * _TABLE_RATIO <= n:
            columns[f] = {"t": table, "i": refs}
        else:
            columns[f] = {"v": values}
    return {"n": n, "fields": fields, "columns": columns}


def expand(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells :func:`compact` was given (missing fields as ``None``)."""
    cols = data["columns"]
    out = []
    for k in range(data["n"]):
        cell = {}
        for f in data["fields"]:
            col = cols[f]
            cell[f] = col["t"][col["i"][k]] if "t" in col else col["v"][k]
        out.append(cell)
    return out


def embed(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` as such, so
    no reason line can close the element (``</script>``) or open a comment."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- what a page can be made of: a matrix, a diff or a check JSON ---------------------------------
def load(path: Path) -> dict[str, Any]:
    """Read a matrix, diff, check or conformance JSON file, or a :class:`LabError` naming what is wrong."""
    from harness.errors import read_input, shown

    raw = read_input(
        path,
        error=LabError,
        kind="a trustlab JSON file",
        limit=200_000_000,
        directory_hint="pass a file written by trustlab matrix, diff, check or conformance --json",
    )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise LabError(
            f"{shown(str(path))}: not JSON; pass a file written by trustlab matrix, diff, check or conformance --json"
        ) from None
    if not isinstance(doc, dict) or source_kind(doc) is None:
        raise LabError(
            f"{shown(str(path))}: not a trustlab matrix, diff, check or conformance JSON file "
            "(no cells, no changes, no conformance rows); write one with trustlab matrix --json FILE"
        )
    return doc


def source_kind(doc: dict[str, Any]) -> str | None:
    """``matrix``, ``diff``, ``check`` or ``conformance``: which command wrote *doc* (``None``: none)."""

    def cells_ok(cells: object, *keys: str) -> bool:
        return isinstance(cells, list) and all(
            isinstance(c, dict) and all(isinstance(c.get(k), str) for k in keys) for c in cells
        )

    if isinstance(doc.get("rows"), list) and isinstance(doc.get("cases"), dict) and "summary" in doc:
        return "conformance" if conformance_ok(doc) else None
    if isinstance(doc.get("changes"), list) and "a" in doc and "b" in doc:
        return "diff" if cells_ok(doc["changes"], "scenario", "identity", "before", "after") else None
    if "config" in doc and isinstance(doc.get("proxy"), str):
        return "check" if cells_ok(doc.get("cells"), "upstream", "identity", "outcome") else None
    if cells_ok(doc.get("cells"), "scenario", "identity", "outcome"):
        return "matrix"
    return None


def _cells_of(doc: dict[str, Any], kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The page's meta and cells (matrix-shaped dicts) for a matrix, diff or check document."""
    if kind == "matrix":
        meta = dict(doc["meta"]) if isinstance(doc.get("meta"), dict) else {}
        cells = [dict(c) for c in doc["cells"]]
        for c in cells:  # the kind and variant a cell's scenario id names, where a file leaves them out
            c.setdefault("proxy", c["scenario"].split("/", 1)[0])
            c.setdefault("variant", c["scenario"].rsplit("/", 1)[-1])
        return meta, cells
    if kind == "check":
        meta = {
            "runtime": doc.get("runtime"),
            "duration_s": doc.get("duration_s"),
            "config": doc.get("config"),
            "proxy_versions": [
                {"proxy": doc["proxy"], "version": doc.get("proxy_version"), "tls_library": doc.get("tls_library")}
            ]
            if doc.get("proxy_version")
            else [],
        }
        cells = [
            {
                "scenario": f"check/{c['upstream']}",
                "proxy": doc["proxy"],
                "variant": c["upstream"],
                "identity": c["identity"],
                "outcome": c["outcome"],
                "expected": None,
                "status": c.get("status"),
                "reason": c.get("reason", ""),
                "sni": c.get("sni"),
                "proxy_version": doc.get("proxy_version"),
                "tls_library": doc.get("tls_library"),
            }
            for c in doc["cells"]
        ]
        return meta, cells
    # A diff holds only the cells whose outcome changed: each becomes two cells, one per side.
    known = _scenarios()
    meta = {"a": doc["a"], "b": doc["b"], "compared": doc.get("compared")}
    cells = []
    for ch in doc["changes"]:
        sc = known.get(ch["scenario"])
        proxy = sc.proxy.value if sc else ch["scenario"].split("/", 1)[0]
        for side, outcome, reason in (
            ("a", ch["before"], ch.get("before_reason", "")),
            ("b", ch["after"], ch.get("after_reason", "")),
        ):
            cells.append(
                {
                    "scenario": ch["scenario"],
                    "proxy": proxy,
                    "variant": ch["scenario"].rsplit("/", 1)[-1],
                    "identity": ch["identity"],
                    "outcome": outcome,
                    "expected": None,
                    "reason": reason,
                    "proxy_version": doc[side],
                }
            )
    return meta, cells


def _scenarios() -> dict[str, Any]:
    from harness import scenarios

    try:
        return scenarios.builtin()
    except LabError:  # a broken scenario file must not cost the page: the stories are extra
        return {}


def _directive(name: str, value: object) -> str:
    return name if value is True else f"{name} {value}"


def _delta(sc: Any, control: Any) -> dict[str, Any]:
    """A scenario's directives as a delta from its control's (or as they are, without one)."""
    mine = dict(sc.directives)
    if control is None:
        return {"directives": [_directive(k, v) for k, v in mine.items()]}
    theirs = dict(control.directives)
    delta = [f"- {_directive(k, v)}" for k, v in theirs.items() if k not in mine or mine[k] != v] + [
        f"+ {_directive(k, v)}" for k, v in mine.items() if theirs.get(k) != v
    ]
    if sc.target != control.target:
        delta.append(f"target {sc.target} (control: {control.target})")
    return {"control": control.id, "delta": delta}


def scenario_notes(ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each known scenario's story, sources and config delta from its control (``good``)."""
    known = _scenarios()
    notes: dict[str, dict[str, Any]] = {}
    for sid in ids:
        sc = known.get(sid)
        if sc is None:
            continue
        note: dict[str, Any] = {"title": sc.title, "story": sc.description.strip(), "sources": list(sc.sources)}
        if sc.reporter_goal:
            note["goal"] = sc.reporter_goal
        if sc.reported_on:
            note["reported_on"] = sc.reported_on
        note.update(_delta(sc, known.get(sc.control) if sc.control else None))
        if sc.config:
            note["config"] = sc.config.strip()
        if sc.versions:
            note["versions"] = [
                {"range": str(r.range), "why": r.why, "source": r.source, "expected": r.expected} for r in sc.versions
            ]
        notes[sid] = note
    return notes


def reproduce(cell: dict[str, Any], meta: dict[str, Any], kind: str = "matrix") -> str:
    """The command that runs this cell again (the page's script says the same)."""
    if kind == "check":
        return f"trustlab check {cell['proxy']} {shlex.quote(str(meta.get('config') or 'CONFIG'))}"
    if kind == "diff":
        return (
            f"trustlab diff {shlex.quote(str(meta['a']))} {shlex.quote(str(meta['b']))} "
            f"--scenario {cell['scenario']} --identity {cell['identity']}"
        )
    default = (meta.get("versions") or {}).get(cell["proxy"])
    version = cell.get("proxy_version")
    if version and default and version != default:
        # `run` takes the proxy's default installation (or a reported case's nearest one);
        # another version is chosen with matrix's KIND@VERSION selector.
        return f"trustlab matrix --proxy {cell['proxy']}@{version} --identity {cell['identity']}"
    return f"trustlab run {cell['scenario']} --identity {cell['identity']}"


def _identity_columns(present: set[str]) -> list[dict[str, Any]]:
    """The page's columns: the legitimate identities first, then the impostors by class, each in
    the vocabulary's order; an identity no class names comes last, as "other"."""
    specs = {s.id: s for s in IDENTITIES + OPTIONAL_IDENTITIES}
    known = [i for i in ALL_IDENTITY_IDS if i in present] + sorted(present - set(ALL_IDENTITY_IDS))
    klass = {i: name for name, ids in IMPOSTOR_CLASSES for i in ids}
    klass.update({i: "legitimate" for i in LEGITIMATE_IDS})
    ranks = ["legitimate"] + [name for name, _ in IMPOSTOR_CLASSES] + ["other"]
    order = sorted(known, key=lambda i: ranks.index(klass.get(i, "other")))
    return [
        {
            "id": i,
            "legitimate": i in LEGITIMATE_IDS,
            "class": klass.get(i, "other"),
            "meaning": specs[i].meaning if i in specs else "",
        }
        for i in order
    ]


def page_data(doc: dict[str, Any]) -> dict[str, Any]:
    """Everything the page embeds, from a matrix, diff or check document."""
    kind = source_kind(doc)
    if kind is None:
        raise LabError("not a trustlab matrix, diff or check document")
    meta, cells = _cells_of(doc, kind)
    identities = _identity_columns({c["identity"] for c in cells})
    from harness import __version__

    return {
        "kind": kind,
        "meta": meta,
        "writer": f"trustlab {__version__}",
        "kinds": [k.value for k in ProxyKind],
        "identities": identities,
        "scenarios": scenario_notes(list(dict.fromkeys(c["scenario"] for c in cells))),
        "cells": compact(cells),
    }


def render(doc: dict[str, Any], *, title: str | None = None) -> str:
    """The page's HTML for a matrix, diff, check or conformance document."""
    if source_kind(doc) == "conformance":
        return render_conformance(doc, title=title)
    data = page_data(doc)
    palette = _palette()
    data["labels"] = {k: v["label"] for k, v in palette.items()}
    heading = title or {"matrix": "trustlab results", "diff": "trustlab diff", "check": "trustlab check"}[data["kind"]]
    started = data["meta"].get("started")
    return _template(TEMPLATE).render(
        heading=heading,
        title=heading + f": {data['cells']['n']} cells" + (f", {started}" if started else ""),
        palette=palette,
        data=embed(data),
    )


def _template(name: str) -> Any:
    """A template of ``harness/templates`` (they include the atlas's shared styles)."""
    import jinja2

    def source(template: str) -> str:
        return resources.files("harness").joinpath("templates", template).read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(source),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(name)


def _palette() -> dict[str, dict[str, str]]:
    from harness.report import COLOR, LABEL, OUTAGE_COLOR, OUTAGE_LABEL, TEXT_ON

    palette = {o.value: {"fill": COLOR[o], "ink": TEXT_ON[o], "label": LABEL[o]} for o in Outcome}
    palette["outage"] = {"fill": OUTAGE_COLOR, "ink": "white", "label": OUTAGE_LABEL}
    return palette


def write(doc: dict[str, Any], path: Path, *, title: str | None = None) -> Path:
    """Write the page for *doc* to *path* atomically; return *path*."""
    html = render(doc, title=title)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: an interrupted write never leaves half a page
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- the conformance page (issue 24): x509 cases x proxy installations ------------------------------
CONFORMANCE_TEMPLATE = "conformance.html.j2"
#: A conformance row as the JSON holds it (harness/conformance/__init__.py: ROW_FIELDS).
_ROW_TEXT = ("case", "proxy", "expected", "verdict", "outcome", "reason")


def conformance_ok(doc: dict[str, Any]) -> bool:
    """Whether *doc* has the shape ``trustlab conformance --json`` writes."""
    cases, meta = doc.get("cases"), doc.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("proxies"), list) or not isinstance(cases, dict):
        return False
    if not all(isinstance(p, dict) and isinstance(p.get("proxy"), str) for p in meta["proxies"]):
        return False
    if not all(
        isinstance(c, dict) and isinstance(c.get("area"), str) and isinstance(c.get("expected"), str)
        for c in cases.values()
    ):
        return False
    return all(
        isinstance(r, dict)
        and all(isinstance(r.get(k), str) for k in _ROW_TEXT)
        and isinstance(r.get("agrees"), bool)
        and r["case"] in cases
        for r in doc["rows"]
    )


def conformance_defaults(doc: dict[str, Any]) -> dict[str, str | None]:
    """Each kind's default installation: the first the run lists (as docs/conformance.md shows)."""
    default: dict[str, str | None] = {}
    for p in doc["meta"]["proxies"]:
        default.setdefault(p["proxy"], p.get("version"))
    for r in doc["rows"]:
        default.setdefault(r["proxy"], r.get("proxy_version"))
    return default


def conformance_command(row: dict[str, Any], default: dict[str, str | None]) -> str:
    """The command that runs a conformance row again (the page's script says the same): another
    installation than the kind's default is run with ``--all-versions``."""
    more = " --all-versions" if row.get("proxy_version") != default.get(row["proxy"]) else ""
    return f"trustlab conformance --proxy {row['proxy']} --case {row['case']}{more}"


def conformance_data(doc: dict[str, Any]) -> dict[str, Any]:
    """Everything the conformance page embeds: the run's rows (as columns), its cases, the host
    library's own verdicts, and the explanations (harness/conformance/__init__.py: EXPLAIN) of its cases."""
    from harness.conformance.notes import EXPLAIN
    from harness.conformance.notes import version_key as _version_key

    default = conformance_defaults(doc)
    versions: dict[str, list[str | None]] = {k: [v] for k, v in default.items()}
    for r in doc["rows"]:
        if r.get("proxy_version") not in versions[r["proxy"]]:
            versions[r["proxy"]].append(r.get("proxy_version"))
    for vs in versions.values():  # oldest first: the columns of "every version"
        vs.sort(key=lambda v: (_version_key(v), str(v)))
    tls = {(p["proxy"], p.get("version")): p.get("tls_library") for p in doc["meta"]["proxies"]}
    rows = [
        {
            "case": r["case"],
            "proxy": r["proxy"],
            "proxy_version": r.get("proxy_version"),
            "verdict": r["verdict"],
            "agrees": r["agrees"],
            "outcome": r["outcome"],
            "reason": r["reason"],
        }
        for r in doc["rows"]
    ]
    order = list(dict.fromkeys(r["case"] for r in rows))
    keys = set(order) | {f"{r['case']}@{r['proxy']}" for r in rows}
    return {
        "kind": "conformance",
        "meta": doc["meta"],
        "kinds": list(default),
        "versions": versions,
        "defaults": default,
        "tls": {f"{k}@{v or ''}": lib for (k, v), lib in tls.items()},
        "order": order,
        "cases": doc["cases"],
        "library": doc.get("library") or {},
        "explain": {k: v for k, v in EXPLAIN.items() if k in keys},
        "rows": compact(rows),
    }


def render_conformance(doc: dict[str, Any], *, title: str | None = None) -> str:
    """The conformance page's HTML for a JSON written by ``trustlab conformance --json``."""
    data = conformance_data(doc)
    meta = data["meta"]
    heading = title or "trustlab conformance"
    return _template(CONFORMANCE_TEMPLATE).render(
        heading=heading,
        title=f"{heading}: {len(data['order'])} cases x {sum(len(v) for v in data['versions'].values())} "
        f"proxy installations, {meta.get('started', '')}",
        palette=_palette(),
        data=embed(data),
    )
