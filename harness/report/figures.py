"""Every figure the README and the docs state, computed in one place (issue 19).

``docs/figures.json`` holds them: counts read from the repo (scenarios, cells, kinds, challenges,
notebooks) and figures read from one full-matrix run (its duration, runtime, outcome counts, the
proxy versions it ran, the lock it ran with). Prose states a figure as a marked span::

    <!-- fig:cells -->1474<!-- /fig -->

which renders as the bare number. ``python -m harness.report.figures update results/matrix.json`` (``make
figures``: a fresh ``trustlab matrix`` first) recomputes them all and rewrites every span in
``README.md`` and ``docs/*.md``; ``tests/test_figures.py`` fails when a span differs from
``figures.json`` or when the repo's own counts moved past the recorded ones (a scenario added without
``make figures``). Exit 2 with one line on bad input.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "figures.json"
SPAN = re.compile(r"<!-- fig:([a-z0-9_]+) -->(.*?)<!-- /fig -->", re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """The prose that may state figures: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def static() -> dict[str, Any]:
    """What the repo itself says: no proxy is run."""
    from harness import scenarios
    from harness.proxies import driver, kinds
    from harness.vocab import IDENTITY_IDS

    every = list(scenarios.builtin().values())
    challenges = [p for p in (ROOT / "labs" / "challenges").iterdir() if (p / "challenge.toml").is_file()]
    return {
        "scenarios": len(every),
        "cells": sum(len(IDENTITY_IDS) + len(s.optional_identities) for s in every),
        "kinds": len(kinds()),
        "kinds_list": _prose([driver(k).product for k in kinds()]),
        "identities": len(IDENTITY_IDS),
        "challenges": len(challenges),
        "notebooks": len(list((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))),
    }


def _prose(names: list[str]) -> str:
    """``a, b and c``."""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def from_run(data: dict[str, Any]) -> dict[str, Any]:
    """Figures of one full ``trustlab matrix --json`` run."""
    meta, cells = data["meta"], data["cells"]
    outcomes = Counter(c["outcome"] for c in cells)
    versions: dict[str, str] = {}
    for v in meta.get("proxy_versions", []):
        versions.setdefault(v["proxy"], v["version"])
    through = Counter(c["scenario"] for c in cells if c["outcome"] == "spoofed")
    return {
        "run_cells": len(cells),
        "run_scenarios": len({c["scenario"] for c in cells}),
        "run_seconds": f"{meta['duration_s']:.1f}",
        "run_ms_per_cell": f"{1000 * meta['duration_s'] / max(len(cells), 1):.1f}",
        "run_runtime": meta.get("runtime", "?"),
        "run_date": str(meta.get("started", "?"))[:10],
        "run_lock": meta.get("lock") or "none",
        "run_spoofed": outcomes.get("spoofed", 0),
        "run_served": outcomes.get("served", 0),
        "run_blocked": outcomes.get("blocked", 0),
        "run_errors": outcomes.get("error", 0),
        "run_spoofable_scenarios": len(through),
        "run_versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "front_table": front_table(cells),
        "run_good_wildcard_through": _kinds(cells, "good", "wildcard", "spoofed"),
        "run_good_wildcard_blocked": _kinds(cells, "good", "wildcard", "blocked"),
        "run_good_cn_only_through": _kinds(cells, "good", "cn-only", "spoofed"),
    }


def _kinds(cells: list[dict[str, Any]], variant: str, identity: str, outcome: str) -> str:
    """The proxy kinds whose *variant* scenario gave *identity* the *outcome*, as prose."""
    names = sorted(
        c["proxy"]
        for c in cells
        if c["scenario"] == f"{c['proxy']}/{variant}" and c["identity"] == identity and c["outcome"] == outcome
    )
    return _prose(names) or "none"


#: The front page's excerpt: the three defaults people ship, and every kind's ``good``.
FRONT_ROWS = (
    "nginx/verify-off",
    "apache/defaults",
    "haproxy/ca-only",
    "nginx/good",
    "apache/good",
    "haproxy/good",
    "caddy/good",
    "envoy/good",
    "traefik/good",
)
FRONT_IDENTITIES = ("legit", "rogue-ca", "self-signed", "wrong-name", "expired", "ip-san", "wildcard", "public-ca")
_WORD = {
    "served": "served",
    "spoofed": "**SPOOFED**",
    "blocked": "blocked",
    "config-rejected": "rejected",
    "error": "error",
}


def front_table(cells: list[dict[str, Any]]) -> str:
    """A markdown table of :data:`FRONT_ROWS` x :data:`FRONT_IDENTITIES` from a run's cells."""
    got = {(c["scenario"], c["identity"]): c["outcome"] for c in cells}
    lines = ["", "| scenario | " + " | ".join(FRONT_IDENTITIES) + " |", "|---" * (len(FRONT_IDENTITIES) + 1) + "|"]
    for row in FRONT_ROWS:
        if (row, "legit") not in got:
            continue
        lines.append(
            f"| `{row}` | " + " | ".join(_WORD.get(got.get((row, i), ""), "-") for i in FRONT_IDENTITIES) + " |"
        )
    return "\n".join(lines) + "\n"


def render(text: str, figures: dict[str, Any]) -> str:
    """*text* with every span's value replaced from *figures* (an unknown name is a ValueError)."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in figures:
            raise ValueError(f"figure {m.group(1)!r} is not in docs/figures.json; known: {', '.join(sorted(figures))}")
        return f"<!-- fig:{m.group(1)} -->{figures[m.group(1)]}<!-- /fig -->"

    return SPAN.sub(one, text)


def drift(figures: dict[str, Any], root: Path = ROOT) -> list[str]:
    """``file: fig NAME says X, figures.json Y`` for each span that disagrees (unknown names too)."""
    out = []
    for page in pages(root):
        for name, value in SPAN.findall(page.read_text()):
            want = figures.get(name)
            if want is None or str(want) != value:
                out.append(f"{page.relative_to(root)}: fig {name} says {value!r}, figures.json {want!r}")
    return out


def update(results: Path, root: Path = ROOT) -> dict[str, Any]:
    """Recompute docs/figures.json from the repo and *results*; rewrite every page's spans."""
    try:
        data = json.loads(results.read_text())
        run = from_run(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(
            f"figures: {results}: not a trustlab matrix JSON ({exc}); make one with: trustlab matrix --json FILE"
        ) from None
    figures = {**static(), **run}
    if run["run_cells"] != figures["cells"]:
        raise SystemExit(
            f"figures: {results} has {run['run_cells']} cells, the repo's default matrix "
            f"{figures['cells']}: run the full default matrix (trustlab matrix --json FILE)"
        )
    rendered = {page: render(page.read_text(), figures) for page in pages(root)}
    (root / "docs" / "figures.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    for page, text in rendered.items():
        page.write_text(text)
    return figures


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "update":
        print("usage: python -m harness.report.figures update RESULTS.json", file=sys.stderr)
        return 2
    try:
        figures = update(Path(argv[1]))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"figures: {exc}", file=sys.stderr)
        return 2
    print(f"figures: {len(figures)} figures written to docs/figures.json; README.md and docs/*.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
