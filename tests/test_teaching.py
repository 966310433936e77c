"""Teaching material stays true to the repo and to its own runs.

- Every relative link in a notebook, a README or ``docs/*.md`` points at a file in the repo, and
  every ``*.md`` file the prose names exists (a citation of a file nobody can open is a defect).
- A markdown sentence in a notebook that names a scenario and an outcome is backed by an ``assert``
  naming that scenario in the same notebook (the cell that shows a spoof asserts it); a sentence that
  points to another notebook ("notebook 05 shows ...") is backed there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import scenarios

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "notebooks" / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("labs/*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
MD_NAME = re.compile(r"(?<![\w/.-])([\w./-]*[A-Za-z]\w*\.md)\b")
OUTCOME_WORDS = re.compile(r"\b(served|spoofed|blocked|config-rejected|refuse[sd]?|accept(?:s|ed)?)\b", re.I)


def _markdown(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def _broken_links(path: Path, text: str) -> list[str]:
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        rel = target.split("#", 1)[0]
        if rel and not (path.parent / rel).exists():
            broken.append(target)
    for name in MD_NAME.findall(re.sub(r"[a-z][a-z0-9+.-]*://\S+", " ", text)):
        candidates = [path.parent / name, ROOT / name, *ROOT.glob(f"**/{Path(name).name}")]
        if not any(c.exists() for c in candidates):
            broken.append(name)
    return broken


@pytest.mark.parametrize("path", NOTEBOOKS + DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_linked_repo_file_exists(path: Path) -> None:
    broken = _broken_links(path, _markdown(path))
    assert not broken, f"{path.relative_to(ROOT)} links files that are not in the repo: {broken}"


def test_the_link_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    assert _broken_links(page, "see [the notes](notes/missing.toml) and BACKGROUND.md") == [
        "notes/missing.toml",
        "BACKGROUND.md",
    ]
    assert _broken_links(page, "[docs](https://example.org/x.md) and [here](#top)") == []


def _sentences(text: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"<details>.*?</details>", " ", text, flags=re.S)  # hints and solutions: checked by checker cells
    return [s for s in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n[-|] ?", text) if s.strip()]


def unbacked_claims(cells: list[dict[str, object]]) -> list[tuple[str, str]]:
    """(scenario id, sentence) for each outcome sentence whose scenario no assert in the notebook names."""
    ids = set(scenarios.builtin())
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")  # type: ignore[arg-type]
    asserted_text = "\n".join(ln for ln in code.splitlines() if "assert" in ln)
    # A scenario counts as asserted when an assert line names it, or names a variable that holds it.
    backed = {sid for sid in ids if sid in asserted_text}
    for sid in ids - backed:
        for var in re.findall(rf"^\s*(\w+)\s*=.*[\"']{re.escape(sid)}[\"']", code, flags=re.M):
            if re.search(rf"\b{var}\b", asserted_text):
                backed.add(sid)
        # A list of scenario ids looped over by an assert (``all(... for s in SUB)``).
        for var in re.findall(rf"^\s*(\w+)\s*=\s*\[[^\]]*[\"']{re.escape(sid)}[\"']", code, flags=re.M | re.S):
            if re.search(rf"\bin {var}\b", asserted_text):
                backed.add(sid)
    missing = []
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for sentence in _sentences("".join(cell["source"])):  # type: ignore[arg-type]
            if not OUTCOME_WORDS.search(sentence) or re.search(r"\bnotebooks? \d\d\b", sentence):
                continue  # no outcome stated, or a pointer to the notebook that asserts it
            for sid in re.findall(r"`([a-z]+/[a-z0-9-]+)`", sentence):
                if sid in ids and sid not in backed:
                    missing.append((sid, sentence.strip()[:120]))
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outcome_sentences_are_backed_by_asserts(path: Path) -> None:
    missing = unbacked_claims(json.loads(path.read_text())["cells"])
    assert not missing, f"{path.name}: sentences state an outcome of a scenario no assert checks: {missing}"


def test_the_prose_check_can_fail() -> None:
    cells = [
        {"cell_type": "markdown", "source": ["`nginx/verify-off` lets every impostor through: spoofed."]},
        {"cell_type": "code", "source": ["r = run('nginx/good')\n", "assert r"]},
    ]
    assert [sid for sid, _ in unbacked_claims(cells)] == ["nginx/verify-off"]
    cells[1]["source"].append("\nassert row(r, 'nginx/verify-off')")
    assert unbacked_claims(cells) == []
