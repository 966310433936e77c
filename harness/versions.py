"""Versions as an axis: version numbers, ranges, selectors, the nearest version, and diffs.

A proxy *version* is its dotted number as the binary reports it (``1.22.1``). Three things
read versions:

* **selectors** on the command line, ``KIND@PREFIX`` (``nginx@1.31``): a prefix of dotted
  components, so ``nginx@1.3`` matches 1.3.x only, never 1.31.3;
* **ranges** in scenario files (``[[versions]]``, see :mod:`harness.scenarios`): ``>=A``, ``<B``
  or ``>=A,<B``, half-open, so two ranges of one scenario can be checked for overlap;
* **nearest**: a reported case names the version it was reported on (``reported_on``) and runs
  on the installed version closest to it (:func:`nearest`).

:func:`diff` compares two runs cell by cell (scenario x identity) and lists what changed.

Stdlib only: the docker image's worker imports :mod:`harness.scenarios`, which imports this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: A version as written in a scenario or on the command line: dotted numbers.
_NUMBER = re.compile(r"^\d+(\.\d+)*$")
#: One bound of a range: ``>=1.23.4`` or ``<1.29.7``.
_BOUND = re.compile(r"^(>=|<)\s*(\d+(?:\.\d+)*)$")


def parse(version: str) -> tuple[int, ...]:
    """``"1.22.1"`` -> ``(1, 22, 1)``; a suffix after the numbers (``2.8.25-5cf5d0683``) is ignored.

    Raises :class:`ValueError` when *version* does not start with a number."""
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", version)
    if not m:
        raise ValueError(f"{version!r} is not a version number (dotted numbers such as 1.22.1)")
    return tuple(int(p) for p in m.group(1).split("."))


def _cmp_key(version: tuple[int, ...], width: int) -> tuple[int, ...]:
    return version + (0,) * (width - len(version))


def compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """-1, 0 or 1; missing components count as 0 (``1.29`` == ``1.29.0``)."""
    width = max(len(a), len(b))
    ka, kb = _cmp_key(a, width), _cmp_key(b, width)
    return (ka > kb) - (ka < kb)


@dataclass(frozen=True)
class VersionRange:
    """A half-open range ``[low, high)``; either end may be open (``None``)."""

    low: tuple[int, ...] | None
    high: tuple[int, ...] | None
    text: str

    def __contains__(self, version: object) -> bool:
        v = parse(version) if isinstance(version, str) else version
        assert isinstance(v, tuple)
        if self.low is not None and compare(v, self.low) < 0:
            return False
        return self.high is None or compare(v, self.high) < 0

    def overlaps(self, other: VersionRange) -> bool:
        """True when some version lies in both ranges."""
        low = max((r.low for r in (self, other) if r.low is not None), key=_sortable, default=None)
        high = min((r.high for r in (self, other) if r.high is not None), key=_sortable, default=None)
        return low is None or high is None or compare(low, high) < 0

    def __str__(self) -> str:
        return self.text


def _sortable(v: tuple[int, ...]) -> tuple[int, ...]:
    return _cmp_key(v, 8)


def parse_range(text: str) -> VersionRange:
    """``">=1.23.4"``, ``"<1.29.7"`` or ``">=1.23.4,<1.29.7"``; :class:`ValueError` names the fix."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a range such as '>=1.23.4', '<1.29.7' or '>=1.23.4,<1.29.7'")
    low = high = None
    for part in (p.strip() for p in text.split(",")):
        m = _BOUND.match(part)
        if not m:
            raise ValueError(f"{part!r} is not a bound; write '>=A', '<B' or '>=A,<B' (A, B dotted numbers)")
        op, value = m.group(1), parse(m.group(2))
        if op == ">=":
            if low is not None:
                raise ValueError(f"{text!r} has two lower bounds; give one '>=A' and at most one '<B'")
            low = value
        else:
            if high is not None:
                raise ValueError(f"{text!r} has two upper bounds; give at most one '>=A' and one '<B'")
            high = value
    if low is not None and high is not None and compare(low, high) >= 0:
        raise ValueError(f"{text!r} is empty (its lower bound is not below its upper bound)")
    return VersionRange(low, high, ",".join(p.strip() for p in text.split(",")))


# -- selectors -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selector:
    """``KIND`` or ``KIND@PREFIX`` from the command line."""

    kind: str
    prefix: str | None = None

    def matches(self, kind: str, version: str) -> bool:
        return kind == self.kind and (self.prefix is None or matches_prefix(version, self.prefix))

    def __str__(self) -> str:
        return f"{self.kind}@{self.prefix}" if self.prefix else self.kind


def matches_prefix(version: str, prefix: str) -> bool:
    """``1.31.3`` starts with ``1.31`` (whole components: ``1.3`` does not match ``1.31.3``)."""
    try:
        want, have = parse(prefix), parse(version)
    except ValueError:
        return False
    return have[: len(want)] == want


def parse_selector(text: str, *, kinds: tuple[str, ...], flag: str = "--proxy") -> Selector:
    """``nginx`` or ``nginx@1.31``; :class:`ValueError` says what is wrong and what is known."""
    kind, at, prefix = text.strip().partition("@")
    if kind not in kinds:
        raise ValueError(f"{flag}: {kind!r} is unknown; known: {', '.join(kinds)}")
    if at and not _NUMBER.match(prefix):
        raise ValueError(f"{flag}: {text!r}: {prefix!r} is not a version prefix; write {kind}@1.22 or {kind}@1.22.1")
    return Selector(kind, prefix or None)


def nearest(wanted: str, available: list[str]) -> str | None:
    """The version in *available* closest to *wanted*.

    Closest = the longest run of equal leading components; then the smallest distance at the
    first component that differs; then the newer one. ``1.18.0`` among 1.22.1, 1.26.3, 1.31.3
    is 1.22.1; ``2.8.1`` among 2.6.12, 2.8.25 is 2.8.25."""
    if not available:
        return None
    w = parse(wanted)

    def key(candidate: str) -> tuple[int, int, tuple[int, ...]]:
        c = parse(candidate)
        width = max(len(w), len(c))
        cw, cc = _cmp_key(w, width), _cmp_key(c, width)
        common = next((i for i in range(width) if cw[i] != cc[i]), width)
        gap = abs(cw[common] - cc[common]) if common < width else 0
        return (-common, gap, tuple(-x for x in _sortable(c)))

    return min(available, key=key)


# -- diff ----------------------------------------------------------------------------------------
#: Evidence fields a diff also compares (they change without the outcome changing: nginx 1.22
#: offers TLS 1.2 to a backend, 1.23.4 and later TLS 1.3).
EVIDENCE_FIELDS = ("tls", "sni", "status", "reuse", "client_cert")


@dataclass(frozen=True)
class Change:
    """One cell (scenario x identity) whose outcome differs between two runs."""

    scenario: str
    identity: str
    before: str
    after: str
    before_reason: str
    after_reason: str


@dataclass
class Diff:
    """What changed between run *a* and run *b* (each a list of cell dicts, JSON shape)."""

    a: str
    b: str
    changes: list[Change]
    #: field -> (value in a, value in b) -> number of cells whose outcome did not change.
    evidence: dict[str, dict[tuple[Any, Any], int]]
    compared: int
    only_a: list[tuple[str, str]]
    only_b: list[tuple[str, str]]
    #: The run the two sides came from, when they ran together (:func:`harness.diff_versions`).
    results: Any = None

    def __str__(self) -> str:
        return render_diff(self)

    def changed(self, scenario: str) -> list[Change]:
        """The outcome changes of one scenario."""
        return [c for c in self.changes if c.scenario == scenario]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "compared": self.compared,
            "changes": [c.__dict__ for c in self.changes],
            "evidence": {
                f: [{"a": k[0], "b": k[1], "cells": n} for k, n in v.items()] for f, v in self.evidence.items()
            },
            "only_a": [list(k) for k in self.only_a],
            "only_b": [list(k) for k in self.only_b],
        }


def diff(a_cells: list[dict[str, Any]], b_cells: list[dict[str, Any]], *, a: str, b: str) -> Diff:
    """Compare two runs' cells by (scenario, identity): outcome changes with both reasons, and
    for the cells whose outcome stayed, which evidence fields changed and how often."""
    ka = {(c["scenario"], c["identity"]): c for c in a_cells}
    kb = {(c["scenario"], c["identity"]): c for c in b_cells}
    common = [k for k in ka if k in kb]
    changes: list[Change] = []
    evidence: dict[str, dict[tuple[Any, Any], int]] = {}
    for key in common:
        x, y = ka[key], kb[key]
        if x["outcome"] != y["outcome"]:
            changes.append(Change(key[0], key[1], x["outcome"], y["outcome"], x.get("reason", ""), y.get("reason", "")))
            continue
        for field in EVIDENCE_FIELDS:
            if x.get(field) != y.get(field):
                pair = (x.get(field), y.get(field))
                evidence.setdefault(field, {})[pair] = evidence.get(field, {}).get(pair, 0) + 1
    return Diff(
        a=a,
        b=b,
        changes=changes,
        evidence=evidence,
        compared=len(common),
        only_a=[k for k in ka if k not in kb],
        only_b=[k for k in kb if k not in ka],
    )


def render_diff(d: Diff) -> str:
    """The text ``trustlab diff`` prints."""
    lines = [f"{d.a} -> {d.b}: {d.compared} cells compared, {len(d.changes)} outcome(s) change"]
    # Cells of one scenario with the same change and the same two reasons are one entry.
    groups: dict[tuple[str, str, str, str, str], list[str]] = {}
    for c in d.changes:
        groups.setdefault((c.scenario, c.before, c.after, c.before_reason, c.after_reason), []).append(c.identity)
    for (scenario, before, after, why_a, why_b), identities in groups.items():
        lines.append(f"  {scenario} x {', '.join(identities)}: {before} -> {after}")
        lines.append(f"      {d.a}: {why_a}")
        lines.append(f"      {d.b}: {why_b}")
    for field, pairs in d.evidence.items():
        for (x, y), n in sorted(pairs.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"  evidence {field}: {x if x is not None else '-'} -> {y if y is not None else '-'} "
                f"in {n} cell(s) whose outcome did not change"
            )
    for label, keys in ((d.a, d.only_a), (d.b, d.only_b)):
        if keys:
            lines.append(f"  only in {label}: {len(keys)} cell(s) (e.g. {keys[0][0]} x {keys[0][1]})")
    return "\n".join(lines) + "\n"


# -- expectations by version (scenario files) ----------------------------------------------------
#: Keys of one ``[[versions]]`` table of a scenario file.
RULE_KEYS = ("range", "source", "why", "expected")


@dataclass(frozen=True)
class VersionRule:
    """Expected outcomes that differ on a version range, with the source that says why."""

    range: VersionRange
    source: str
    why: str
    #: identity -> outcome, overriding the scenario's ``[expected]`` inside the range.
    expected: dict[str, str]


def parse_rules(raw: object, *, expected: dict[str, Any], outcomes: tuple[str, ...]) -> tuple[VersionRule, ...]:
    """Validate a scenario's ``[[versions]]`` array; :class:`ValueError` is ``"field: message"``.

    Each table needs ``range``, ``source`` (a URL or a changelog entry that says why) and an
    ``expected`` table whose identities are in the scenario's own ``[expected]``; ``why`` is
    optional prose. Two ranges may not overlap (a version would have two expectations)."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ValueError("versions: must be an array of tables ([[versions]] with range, source, expected)")
    rules: list[VersionRule] = []
    for n, table in enumerate(raw):
        at = f"versions[{n}]"
        for key in table:
            if key not in RULE_KEYS:
                raise ValueError(f"{at}.{key}: unknown key; allowed: {', '.join(RULE_KEYS)}")
        for key in ("range", "source", "expected"):
            if key not in table:
                raise ValueError(f"{at}.{key}: missing; each [[versions]] needs range, source and expected")
        try:
            rng = parse_range(table["range"])
        except ValueError as exc:
            raise ValueError(f"{at}.range: {exc}") from None
        source, why = table["source"], table.get("why", "")
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{at}.source: must name what says why (a URL or changelog entry), not be empty")
        if not isinstance(why, str):
            raise ValueError(f"{at}.why: must be a string")
        exp = table["expected"]
        if not isinstance(exp, dict) or not exp:
            raise ValueError(f"{at}.expected: must be a table of identity = outcome")
        for ident, outcome in exp.items():
            if ident not in expected:
                raise ValueError(
                    f"{at}.expected.{ident}: not in the scenario's [expected]; a version range "
                    f"changes outcomes only of identities the scenario runs"
                )
            if outcome not in outcomes:
                raise ValueError(
                    f"{at}.expected.{ident}: outcome {outcome!r} is unknown; allowed: {', '.join(outcomes)}"
                )
        for m, other in enumerate(rules):
            if other.range.overlaps(rng):
                raise ValueError(
                    f"{at}.range: {rng} overlaps versions[{m}].range {other.range}; a version may match one range only"
                )
        rules.append(VersionRule(rng, source, why, dict(exp)))
    return tuple(rules)


def rule_for(rules: tuple[VersionRule, ...], version: str | None) -> VersionRule | None:
    """The rule whose range holds *version* (``None`` when none does or the version is unknown)."""
    if not version:
        return None
    try:
        v = parse(version)
    except ValueError:
        return None
    return next((r for r in rules if v in r.range), None)
