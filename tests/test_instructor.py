"""docs/INSTRUCTOR.md is tested source: its agendas fit their slots, its answers agree with a run.

An agenda row's minutes (a notebook's reading time, a debrief, each challenge's own ``minutes``
from its ``challenge.toml``) must add up to no more than the slot, the slots must follow each other
without gaps, and the "Answers the test suite checks" table is re-run on each runtime: an outcome or
a quoted evidence line that the real proxy no longer gives fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.course import challenges as C
from harness.vocab import Outcome

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "INSTRUCTOR.md"
MINUTES = {ch.id: ch.minutes for ch in C.load_all()}


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # the header


def _clock(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def slot_problems(section: str) -> list[str]:
    """What is wrong with an agenda table: a row that overflows its slot, a gap, an unknown challenge."""
    problems = []
    previous_end = None
    for time, block, talk, challenges in _rows(section):
        start, end = (_clock(t) for t in time.split("-"))
        if previous_end is not None and start != previous_end:
            problems.append(f"{time}: starts at {start - previous_end:+d} min from the slot before")
        previous_end = end
        planned = sum(int(n) for n in re.findall(r"\((\d+) min\)", talk))
        for cid, stated in re.findall(r"`([a-z0-9-]+)` \((\d+) min\)", challenges):
            if cid not in MINUTES:
                problems.append(f"{time}: {cid} is not a challenge")
                continue
            if int(stated) != MINUTES[cid]:
                problems.append(f"{time}: {cid} says {stated} min, its challenge.toml {MINUTES[cid]}")
            planned += MINUTES[cid]
        if re.sub(r"`([a-z0-9-]+)` \((\d+) min\)", "", challenges).strip(" ,"):
            problems.append(f"{time}: challenges column holds more than `id` (N min) items")
        if planned > end - start:
            problems.append(f"{time} {block}: {planned} min planned in a {end - start} min slot")
    return problems


@pytest.mark.parametrize(("heading", "total"), [("## Agenda: 3 hours", 180), ("## Agenda: a full day", 480)])
def test_each_agenda_slot_holds_what_it_plans(heading: str, total: int) -> None:
    section = _section(GUIDE.read_text(), heading)
    assert slot_problems(section) == []
    times = [r[0] for r in _rows(section)]
    assert _clock(times[-1].split("-")[1]) - _clock(times[0].split("-")[0]) == total


def test_the_slot_check_can_fail() -> None:
    table = (
        "| time | block | talk | challenges |\n|---|---|---|---|\n"
        "| 0:00-0:20 | a | notebook 02 (12 min) | `apache-published-block` (15 min) |\n"
        "| 0:25-0:30 | b | (5 min) | `nginx-ca-without-verify` (10 min), `no-such-one` (5 min) |\n"
    )
    problems = slot_problems("\n" + table)
    assert any("27 min planned in a 20 min slot" in p for p in problems)
    assert any("starts at +5 min" in p for p in problems)
    assert any("nginx-ca-without-verify says 10 min, its challenge.toml 5" in p for p in problems)
    assert any("no-such-one is not a challenge" in p for p in problems)


def answers() -> list[tuple[str, str, Outcome, str]]:
    section = _section(GUIDE.read_text(), "## Answers the test suite checks")
    return [(s.strip("`"), i.strip("`"), Outcome(o), e.strip("`")) for s, i, o, e in _rows(section)]


def test_the_answers_table_is_there_and_names_every_block() -> None:
    rows = answers()
    assert len(rows) >= 20
    assert {s.split("/")[0] for s, _, _, _ in rows} >= {
        "nginx",
        "apache",
        "haproxy",
        "caddy",
        "envoy",
        "trafficserver",
        "squid",
    }


@pytest.mark.integration
def test_every_checked_answer_agrees_with_the_run(each_runtime: str) -> None:
    import harness

    rows = answers()
    r = harness.run_scenario(*dict.fromkeys(s for s, _, _, _ in rows), runtime=each_runtime)
    wrong = []
    for sid, ident, outcome, evidence in rows:
        c = r.cell(sid, ident)
        # The lab's address is the runtime's (local 10.203.0.10, a docker matrix lab 127.0.0.10).
        evidence = evidence.replace("<lab address>", r.meta["backend_ip"])
        if c.outcome is not outcome or evidence not in c.reason:
            wrong.append(
                f"{sid} x {ident}: the guide says {outcome.value} {evidence!r}, "
                f"the run {c.outcome.value} {c.reason[:160]!r}"
            )
    assert not wrong, "docs/INSTRUCTOR.md disagrees with the run:\n" + "\n".join(wrong)
