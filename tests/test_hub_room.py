"""The grader's record and the instructor's views, without a hub (harness.course.hub.grader)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jupyterhub", reason="the hub extra (make venv installs every extra)")

from harness.course import hub  # noqa: E402
from harness.course.hub import grader  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> grader.Store:
    s = grader.Store(tmp_path / "grader.sqlite")
    for who, ch, solved in (
        ("ann", "nginx-verify-off", False),
        ("ann", "nginx-verify-off", True),
        ("bob", "nginx-verify-off", False),
        ("bob", "nginx-verify-off", False),
        ("bob", "apache-verify-none", True),
        ("cy", "apache-verify-none", False),
    ):
        s.attempt(who, ch, {"solved": solved, "failures": [] if solved else [{}], "duration_s": 1.0})
    assert s.hint("bob", "nginx-verify-off", 3) == 1
    assert s.hint("bob", "nginx-verify-off", 3) == 2
    assert [s.hint("cy", "apache-verify-none", 2) for _ in range(3)] == [1, 2, 2]  # never past the last tier
    return s


def test_the_room_counts_attempts_solves_hints_and_where_it_is_stuck(store: grader.Store) -> None:
    users = [{"name": "ann", "servers": {"": {"ready": True}}}, {"name": "dee"}, {"name": "instructor", "admin": True}]
    data = grader.room(store, users)
    by = {a["name"]: a for a in data["attendees"]}
    assert set(by) == {"ann", "bob", "cy", "dee", "instructor"}
    assert by["ann"]["server"] and not by["bob"]["server"] and not by["dee"]["signed_in"]
    assert by["ann"]["challenges"]["nginx-verify-off"] == {"attempts": 2, "failed": 1, "solved": True, "hints": 0}
    assert by["bob"]["challenges"]["nginx-verify-off"] == {"attempts": 2, "failed": 2, "solved": False, "hints": 2}
    assert by["bob"]["solved"] == ["apache-verify-none"]
    assert data["stuck"]["id"] == "nginx-verify-off" and data["stuck"]["failed"] == 3
    assert data["attempts"] == 6
    csv_lines = grader.room_csv(data).splitlines()
    assert csv_lines[0] == "attendee,challenge,attempts,failed,solved,hints"
    assert "bob,nginx-verify-off,2,2,0,2" in csv_lines and "ann,nginx-verify-off,2,1,1,0" in csv_lines
    page = grader.room_html(data, prefix="/services/grader/")
    assert "<b>nginx-verify-off</b> (3 failed, solved by 1)" in page


def test_nothing_failed_means_nowhere_stuck(tmp_path: Path) -> None:
    s = grader.Store(tmp_path / "g.sqlite")
    s.attempt("ann", "nginx-verify-off", {"solved": True, "failures": []})
    assert grader.room(s, [])["stuck"] is None


def test_scoreboard_orders_by_solves_then_attempts_and_leaves_out_the_instructor(store: grader.Store) -> None:
    data = grader.room(store, [{"name": "instructor", "admin": True}])
    page = grader.scoreboard_html(data, total=28)
    order = [n for n in ("ann", "bob", "cy", "instructor") if f"<th>{n}</th>" in page]
    assert order == ["ann", "bob", "cy"]
    assert page.index("<th>ann</th>") < page.index("<th>bob</th>") < page.index("<th>cy</th>")
    assert "1 / 28" in page and "0 / 28" in page


def test_the_badge_needs_every_challenge() -> None:
    assert "completed every challenge" in grader.progress_html("ann", ["a", "b"], total=2, attempts=3)
    assert "completed every challenge" not in grader.progress_html("ann", ["a"], total=2, attempts=3)
    assert "&lt;script&gt;" in grader.progress_html("<script>", [], total=2, attempts=0)


def test_codes_are_checked_by_hash_only(tmp_path: Path) -> None:
    codes = hub.add_codes(tmp_path, ["ann", "bob"])
    assert hub.check_code(tmp_path, "ann", codes["ann"])
    assert hub.check_code(tmp_path, "ann", codes["ann"].upper())  # read off a sheet: case does not matter
    assert not hub.check_code(tmp_path, "ann", codes["bob"])
    assert not hub.check_code(tmp_path, "carl", codes["ann"])
    assert not hub.check_code(tmp_path, "ann", "")
    text = (tmp_path / "codes.json").read_text()
    assert codes["ann"] not in text and (tmp_path / "codes.json").stat().st_mode & 0o777 == 0o600
    again = hub.add_codes(tmp_path, ["ann"])  # a new code replaces the old one
    assert not hub.check_code(tmp_path, "ann", codes["ann"]) and hub.check_code(tmp_path, "ann", again["ann"])


def test_the_instructor_gets_a_new_code_and_the_old_one_stops_working(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRUSTLAB_STATE_DIR": str(tmp_path)}

    def new() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "harness", "classroom", "attendees", "instructor", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return str(json.loads(out.stdout)[hub.INSTRUCTOR])

    first, second = new(), new()
    d = tmp_path / "hub"
    assert d.stat().st_mode & 0o777 == 0o700
    assert hub.check_code(d, hub.INSTRUCTOR, second) and not hub.check_code(d, hub.INSTRUCTOR, first)
