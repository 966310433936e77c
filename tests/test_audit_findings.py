"""``trustlab audit`` gives the recorded findings on every test config and every scenario's
rendered config (tests/audit_corpus.py; regenerate for an intended change:
``.venv/bin/python tests/audit_corpus.py --write``, then review the diff)."""

from __future__ import annotations

import json

from harness.configs.rules import Finding
from tests.audit_corpus import FIELDS, RECORD, record


def test_audit_findings_are_the_recorded_ones() -> None:
    recorded = json.loads(RECORD.read_text())
    now = record()
    assert sorted(now) == sorted(recorded), "the corpus changed: regenerate the record (see the module docstring)"
    changed = [name for name in now if now[name] != recorded[name]]
    assert not changed, f"audit findings changed on {changed}; if intended, regenerate (see the module docstring)"
    assert sum(len(f) for f in now.values()) >= 200  # the corpus is the whole one, not an empty glob


def test_the_record_holds_every_field_of_a_finding() -> None:
    assert set(FIELDS) == set(Finding.__dataclass_fields__)
