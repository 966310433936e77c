"""The claim rules of harness.verdicts, on synthetic Results: flip one cell and the verdict moves.

The synthetic run is every built-in scenario with its *expected* outcomes (the scenario files
were written from live runs), and the SNI a backend sees in the scenarios that send none set
to ``None``. No proxy runs here.
"""

from __future__ import annotations

import dataclasses

import pytest
from _synthetic import synthetic

from harness.errors import LabError
from harness.results import Results
from harness.verdicts import CLAIMS, Verdict, evaluate
from harness.vocab import Outcome


def flip(results: Results, scenario: str, identity: str, outcome: Outcome, **changes: object) -> Results:
    cells = [
        dataclasses.replace(c, outcome=outcome, **changes) if (c.scenario, c.identity) == (scenario, identity) else c
        for c in results.cells
    ]
    assert cells != results.cells, f"{scenario} x {identity} is not in the synthetic run"
    return Results(meta=results.meta, cells=cells)


def verdicts(results: Results) -> dict[int, Verdict]:
    return {r.number: r.verdict for r in evaluate(results)}


# What the expected outcomes (= the live local run) say about each claim.
BASELINE = {
    1: Verdict.CONFIRMED,
    2: Verdict.PARTLY,
    3: Verdict.CONFIRMED,
    4: Verdict.REFUTED,
    5: Verdict.DEPENDS,
    6: Verdict.CONFIRMED,
    7: Verdict.CONFIRMED,  # *.svc.internal gets through every good config (subdomain-backend)
    8: Verdict.PARTLY,
}


def test_every_claim_has_a_rule_and_evidence() -> None:
    found = evaluate(synthetic())
    assert [r.number for r in found] == list(CLAIMS) == list(range(1, 9))
    for r in found:
        assert r.rule and r.finding and r.evidence, r.number


def test_baseline_verdicts() -> None:
    assert verdicts(synthetic()) == BASELINE


# Each case: one cell changed -> the claim's verdict becomes something else.
FLIPS = [
    # nginx verifying one impostor by default would make "does not verify" only partly true.
    (1, ("nginx/verify-off", "rogue-ca", Outcome.BLOCKED), Verdict.PARTLY),
    # If nginx/good itself let an impostor through, the three lines would not be the fix.
    (2, ("nginx/good", "wildcard", Outcome.SPOOFED), Verdict.REFUTED),
    (3, ("nginx/ca-without-verify", "expired", Outcome.BLOCKED), Verdict.PARTLY),
    # The published Apache block serving legit makes claim 4 half right.
    (4, ("apache/seed-recipe", "legit", Outcome.SERVED), Verdict.PARTLY),
    # An IP target that lets a wrong-name impostor through breaks the name check: confirmed.
    (5, ("apache/ip-target", "wrong-name", Outcome.SPOOFED), Verdict.CONFIRMED),
    # Without the proxy_ssl_name fix the break is only partly described.
    (5, ("nginx/ip-target-with-name", "legit", Outcome.BLOCKED), Verdict.PARTLY),
    (6, ("nginx/system-bundle", "public-ca", Outcome.BLOCKED), Verdict.PARTLY),
    # nginx refusing *.svc.internal for api.svc.internal too: exposure depends on the proxy again.
    (7, ("nginx/subdomain-backend", "wildcard-parent", Outcome.BLOCKED), Verdict.DEPENDS),
    # Claim 8 has three parts (two hold today): one cell moves its finding, not its verdict;
    # see test_claim8_* below for the verdict moving.
]


@pytest.mark.parametrize(("claim", "change", "verdict"), FLIPS, ids=[f"claim{c}-{s}-{i}" for c, (s, i, _), _ in FLIPS])
def test_one_cell_moves_the_verdict(claim: int, change: tuple[str, str, Outcome], verdict: Verdict) -> None:
    base = synthetic()
    assert verdicts(base)[claim] is BASELINE[claim]
    changed = verdicts(flip(base, *change))
    assert verdict is not BASELINE[claim]
    assert changed[claim] is verdict


def test_every_claim_moves_with_some_cell() -> None:
    """For each claim but 8 (three parts, see below), a single-cell flip above changes its verdict."""
    base = synthetic()
    moved = set()
    for claim, change, _ in FLIPS:
        if verdicts(flip(base, *change))[claim] is not BASELINE[claim]:
            moved.add(claim)
    assert moved == set(CLAIMS) - {8}


def test_dropping_sni_letting_an_impostor_in_shows_in_claim2() -> None:
    changed = {r.number: r for r in evaluate(flip(synthetic(), "nginx/no-sni", "wrong-name", Outcome.SPOOFED))}
    assert "without proxy_ssl_server_name: 1 impostors spoofed" in changed[2].finding
    assert changed[2].verdict is Verdict.PARTLY  # two of three lines now matter, still not all three


def test_claim8_one_cell_moves_the_finding() -> None:
    changed = {r.number: r for r in evaluate(flip(synthetic(), "apache/defaults", "wrong-name", Outcome.SPOOFED))}
    assert "name checked: no" in changed[8].finding


def test_sni_seen_moves_claim5() -> None:
    """If the backend saw SNI through an IP target, 'breaks SNI' would be refuted."""
    changed = flip(synthetic(), "nginx/ip-target", "legit", Outcome.BLOCKED, sni="10.203.0.10")
    assert verdicts(changed)[5] is Verdict.REFUTED


def test_claim8_apache_checking_the_issuer_by_default() -> None:
    base = synthetic()
    for ident in ("rogue-ca", "self-signed", "public-ca", "wildcard"):
        base = flip(base, "apache/defaults", ident, Outcome.BLOCKED)
    result = {r.number: r for r in evaluate(base)}[8]
    assert "issuer checked: yes" in result.finding
    assert result.verdict is Verdict.CONFIRMED  # the three checks the run can see; risk is not ranked
    assert "not ranked" in result.finding


def test_claim8_refuted_when_apache_checks_nothing_by_default() -> None:
    base = synthetic()
    for ident in ("wrong-name", "expired", "not-yet-valid"):
        base = flip(base, "apache/defaults", ident, Outcome.SPOOFED)
    assert verdicts(base)[8] is Verdict.REFUTED


def test_claim8_does_not_rank_risk_by_the_labs_own_variants() -> None:
    """Making every Apache variant strict changes the counts in the finding, never the verdict."""
    base = synthetic()
    before = verdicts(base)[8]
    for sid in ("apache/verify-none", "apache/name-check-off", "apache/cn-check-off", "apache/system-bundle"):
        for c in [c for c in base.cells if c.scenario == sid and c.outcome is Outcome.SPOOFED]:
            base = flip(base, sid, c.identity, Outcome.BLOCKED)
    assert verdicts(base)[8] is before


def test_missing_scenario_is_a_clear_error() -> None:
    base = synthetic()
    partial = Results(meta=base.meta, cells=[c for c in base.cells if c.scenario != "nginx/verify-off"])
    with pytest.raises(LabError, match="nginx/verify-off"):
        evaluate(partial)
