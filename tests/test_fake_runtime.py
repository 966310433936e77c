"""The one door (harness.runtimes.base): every runtime is a Runtime; the event reader; and the
FakeRuntime, which replays what the real local runtime answered (tests/record_fake.py) so the
runner, check, the challenge grader and the notebook helpers are tested here without a proxy.

A replay answers only what was recorded: a cell or a config it never saw is an error, never an
outcome, so these tests cannot pass on an invented verdict.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.errors import LabError
from harness.runtimes.base import ConfigJob, EventReader, FakeRuntime, Runtime, ScenarioJob
from harness.runtimes.contract import CellEvent, DoneEvent, FatalEvent, ProxyEvent, dump_event
from harness.vocab import Outcome

sys.path.insert(0, str(Path(__file__).parent))
import record_fake  # noqa: E402

RECORDED = json.loads(record_fake.OUT.read_text())
RERECORD = "re-record: .venv/bin/python tests/record_fake.py --write"


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime.load(RECORDED["recording"])


def test_every_runtime_is_a_runtime() -> None:
    from harness.runtimes.docker import DockerRuntime
    from harness.runtimes.local import LocalRuntime
    from harness.runtimes.remote import RemoteRuntime

    for rt in (LocalRuntime(), DockerRuntime(), RemoteRuntime(), FakeRuntime()):
        assert isinstance(rt, Runtime), type(rt).__name__


def test_the_replay_concludes_what_the_live_run_did(fake: FakeRuntime, tmp_path: Path) -> None:
    """The matrix cells, each check's verdicts and each attempt's grade, through the same runner,
    check and grader code as a live run, from the recorded cells alone."""
    assert record_fake.conclusions(fake, tmp_path) == RECORDED["live"], RERECORD
    kinds = [type(job).__name__ for job in fake.jobs]
    assert kinds.count("ScenarioJob") == 1 and kinds.count("ConfigJob") >= 4, kinds


def test_the_recording_holds_right_and_wrong_answers() -> None:
    """What the replay test leans on: the recording is of a grader that refuses wrong attempts."""
    live = RECORDED["live"]
    assert live["grades"] == {"start": False, "solution": True, "typo": False, "off": False}, RERECORD
    outcomes = {k: v[0] for k, v in live["cells"].items()}
    assert outcomes["nginx/good rogue-ca"] == "blocked" and outcomes["nginx/good legit"] == "served"
    assert outcomes["nginx/ca-without-verify rogue-ca"] == "spoofed"
    verify_none = live["checks"]["tests/configs/haproxy-verify-none.cfg"]["cells"]
    assert any(i == "rogue-ca" and o == "spoofed" for _, i, o in verify_none)


def test_a_refused_attempt_replays_as_a_refusal(fake: FakeRuntime, tmp_path: Path) -> None:
    """nginx refused the typo'd CA path in the recording: the replay grades it NOT YET for that
    reason, naming the learner's path."""
    from harness.course import challenges

    named = record_fake.attempts(tmp_path)  # graded side by side, as recorded (each its own ports)
    graded = challenges.grade_many(record_fake.CHALLENGE, list(named.values()), runtime=fake)
    grades = dict(zip(named, graded, strict=True))
    grade = grades["typo"]
    assert not grade.solved
    assert any("internal-pki.pm" in (f["reason"] or "") for f in grade.failures), grade.failures


def test_a_cell_nobody_recorded_is_an_error_not_an_outcome(fake: FakeRuntime, tmp_path: Path) -> None:
    from harness import check, runner, scenarios

    with pytest.raises(LabError, match="no recorded cell for nginx/verify-off x legit"):
        runner.run(scenarios.select(["nginx/verify-off"]), runtime=fake)
    other = tmp_path / "other.conf"
    other.write_text(
        (record_fake.ROOT / "tests/configs/nginx-upstream-good.conf")
        .read_text()
        .replace("verify_depth 2", "verify_depth 3")
    )
    with pytest.raises(LabError, match="through this config"):
        check.check("nginx", other, runtime=fake)


def test_a_run_mints_its_pki_once_for_the_seats_address(fake: FakeRuntime) -> None:
    from harness import runner, scenarios

    results = runner.run(scenarios.select(["nginx/good"]), runtime=fake)
    (job,) = fake.jobs
    assert isinstance(job, ScenarioJob) and len(fake.minted) == 1
    assert fake.minted[0].backend_ip == results.meta["backend_ip"] == "10.203.0.10"
    assert results.meta["runtime"] == "fake" and len(results.cells) == job.cell_count


def test_predictions_are_scored_against_the_replayed_cells(fake: FakeRuntime) -> None:
    """A right prediction scores full marks; a wrong one names the surprise."""
    import harness

    right = harness.predict(
        "nginx/ca-without-verify", spoofed=["legit", "legit-no-chain", *_through(fake)], runtime=fake
    )
    assert right.score == (len(right.rows), len(right.rows)), right.rows  # type: ignore[attr-defined]
    wrong = harness.predict("nginx/ca-without-verify", spoofed=["legit", "legit-no-chain"], runtime=fake)
    assert wrong.score[0] < len(wrong.rows) and "rogue-ca" in wrong.surprises  # type: ignore[attr-defined]


def _through(fake: FakeRuntime) -> list[str]:
    return [
        ev.identity
        for key, ev in fake.scenario_cells.items()
        if key.startswith("nginx/ca-without-verify ") and ev.outcome is Outcome.SPOOFED
    ]


# -- the one event reader ------------------------------------------------------------------------
def _lines(*events: Any) -> bytes:
    return b"".join(dump_event(e).encode() + b"\n" for e in events)


def test_the_reader_turns_events_into_cells_across_chunk_boundaries() -> None:
    seen: list[ProxyEvent] = []
    reader = EventReader(lambda key: ("legit", "rogue-ca"), seen.append, where="local")
    data = _lines(
        ProxyEvent("a", started=True),
        ProxyEvent("b", started=False, message="bad directive"),
        CellEvent("a", "legit", Outcome.SERVED, 200, "ok"),
        DoneEvent(),
        CellEvent("a", "rogue-ca", Outcome.BLOCKED, 502, "after done"),
    )
    cells = list(reader.stream([data[:7], data[7:40], data[40:]]))
    assert [(c.key, c.identity, c.outcome) for c in cells] == [
        ("b", "legit", Outcome.CONFIG_REJECTED),
        ("b", "rogue-ca", Outcome.CONFIG_REJECTED),
        ("a", "legit", Outcome.SERVED),
    ]
    assert cells[0].reason == "bad directive" and [e.key for e in seen] == ["a", "b"] and reader.done


def test_the_reader_says_which_lab_failed() -> None:
    reader = EventReader(lambda key: (), where="docker")
    with pytest.raises(LabError, match="^docker lab failed: no seat"):
        list(reader.chunk(_lines(FatalEvent("no seat"))))


def test_a_config_job_the_fake_never_saw_refuses_each_cell(tmp_path: Path) -> None:
    from harness.runtimes.base import PreparedProxy
    from harness.runtimes.contract import CellSpec

    cfg = tmp_path / "p.conf"
    cfg.write_text("events {}\n")
    job = ConfigJob(
        proxies=(PreparedProxy("p0", "nginx", tmp_path, cfg, 20000),),
        cells=(CellSpec("p0", "legit", host="backend-api.internal", label=0),),
        pki_dir=tmp_path,
    )
    with pytest.raises(LabError, match="no recorded cell for backend-api.internal/"):
        list(FakeRuntime().run(job, lab_dir=tmp_path))
