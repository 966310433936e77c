"""Scored mode: flags come only from the instructor's grader, for an attempt it graded itself."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.course import challenges as C
from harness.course import scoring
from harness.errors import LabError

SECRET = "workshop-secret-2026"
CID = "nginx-ca-without-verify"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_flag_names_its_challenge_and_attendee() -> None:
    f = scoring.attendee_flag(CID, "ada", SECRET)
    assert C.FLAG_RE.match(f)
    assert f != scoring.attendee_flag(CID, "bob", SECRET) != scoring.attendee_flag("nginx-verify-off", "ada", SECRET)
    assert f != C.flag(CID, SECRET)  # practice mode's per-challenge flag is not a scored flag
    assert f != scoring.attendee_flag(CID, "ada", "another secret")


def test_tokens_are_written_private_and_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tokens.json"
    code, text, _ = _run(capsys, "challenge", "tokens", "ada", "bob", "--out", str(out))
    assert code == 0 and "ada: TRUSTLAB_GRADER_TOKEN=" in text
    tokens = scoring.read_tokens(out)
    assert sorted(tokens.values()) == ["ada", "bob"] and all(len(t) >= 24 for t in tokens)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    code, _, err = _run(capsys, "challenge", "tokens", "carol", "--out", str(out))
    assert code == 2 and "never overwritten" in err and scoring.read_tokens(out) == tokens
    assert _run(capsys, "challenge", "tokens", "ada", "ada", "--out", str(tmp_path / "t2"))[0] == 2
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(LabError, match="must map tokens to attendee names"):
        scoring.read_tokens(tmp_path / "bad.json")


@pytest.fixture
def grader(local_runtime: str) -> Iterator[str]:
    """The instructor's grader on loopback, for one attendee (token ``tok-ada``)."""
    service = scoring.GradingService(secret=SECRET, tokens={"tok-ada": "ada"}, runtime=local_runtime)
    server = scoring.serve(service)
    scoring.run_in_thread(server)
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_the_grader_grades_the_files_beside_the_config(
    grader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """trafficserver-route-override's fix is in remap.config, beside records.config: the attendee's
    copy travels with the attempt (and the challenge's own stands in for one not sent)."""
    cid = "trafficserver-route-override"
    ch = C.get(cid)
    fixed = (ch.path / "solution" / "remap.config").read_text()
    records = ch.start_file.read_text()
    assert not scoring.remote_grade(grader, "tok-ada", cid, records)["solved"]  # the start's remap.config
    data = scoring.remote_grade(grader, "tok-ada", cid, records, files={"remap.config": fixed})
    assert data["solved"] and data["flag"] == scoring.attendee_flag(cid, "ada", SECRET)
    with pytest.raises(LabError, match="400: files: nginx.conf is not a file of"):
        scoring.remote_grade(grader, "tok-ada", cid, records, files={"nginx.conf": "x"})
    # From the attendee's folder: `challenge check` sends the remap.config beside the attempt.
    (tmp_path / ch.config).write_text(records)
    (tmp_path / "remap.config").write_text(fixed)
    monkeypatch.setenv(scoring.URL_ENV, grader)
    monkeypatch.setenv(scoring.TOKEN_ENV, "tok-ada")
    code, out, _ = _run(capsys, "challenge", "check", cid, str(tmp_path / ch.config))
    assert code == 0 and f"flag: {scoring.attendee_flag(cid, 'ada', SECRET)}" in out


@pytest.mark.integration
def test_only_the_grader_issues_a_flag_for_an_attempt_it_graded(
    grader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = C.get(CID)
    solution = ch.solution_file.read_text()
    data = scoring.remote_grade(grader, "tok-ada", CID, solution)
    assert data["solved"] and data["flag"] == scoring.attendee_flag(CID, "ada", SECRET) and "SOLVED" in data["text"]
    start = scoring.remote_grade(grader, "tok-ada", CID, ch.start_file.read_text())
    assert not start["solved"] and "flag" not in start and "NOT YET" in start["text"]
    with pytest.raises(LabError, match="401: unknown token"):
        scoring.remote_grade(grader, "tok-mallory", CID, solution)
    with pytest.raises(LabError, match="400: challenge 'nope' is unknown"):
        scoring.remote_grade(grader, "tok-ada", "nope", solution)
    bad = urllib.request.Request(
        grader + "/grade", data=b"not json", headers={"Authorization": "Bearer tok-ada"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400

    # The attendee's laptop: the same file, graded by the instructor's grader, then alone.
    mine = tmp_path / ch.config
    mine.write_text(solution)
    monkeypatch.setenv(scoring.URL_ENV, grader)
    monkeypatch.setenv(scoring.TOKEN_ENV, "tok-ada")
    code, out, _ = _run(capsys, "challenge", "check", CID, str(mine))
    assert code == 0 and f"flag: {scoring.attendee_flag(CID, 'ada', SECRET)}" in out
    assert json.loads(_run(capsys, "challenge", "progress", "--json")[1])["solved"] == [CID]
    code, _, err = _run(capsys, "challenge", "solution", CID)
    assert code == 2 and "solutions stay with the instructor" in err
    monkeypatch.delenv(scoring.URL_ENV)
    monkeypatch.delenv(scoring.TOKEN_ENV)
    code, out, _ = _run(capsys, "challenge", "check", CID, str(mine))
    assert code == 0 and "SOLVED" in out and "flag" not in out  # no secret here: no flag


def test_a_scored_check_without_a_token_or_grader_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "nginx.conf"
    mine.write_text(C.get(CID).solution_file.read_text())
    monkeypatch.setenv(scoring.URL_ENV, "http://127.0.0.1:9")  # discard: nothing listens
    code, _, err = _run(capsys, "challenge", "check", CID, str(mine))
    assert code == 2 and "set TRUSTLAB_GRADER_TOKEN" in err and err.count("\n") == 1
    monkeypatch.setenv(scoring.TOKEN_ENV, "tok")
    code, _, err = _run(capsys, "challenge", "check", CID, str(mine))
    assert code == 2 and "cannot reach the grader" in err and err.count("\n") == 1


def test_a_scored_kit_wheel_carries_no_solution(tmp_path: Path) -> None:
    """strip_solutions drops every solution/ file, adds the marker and keeps RECORD true."""
    import base64
    import hashlib
    import zipfile

    from harness.course import workshop

    wheel = tmp_path / "trustlab-0.1.0-py3-none-any.whl"
    files = {
        "harness/__init__.py": b"",
        "harness/_data/labs/challenges/nginx-x/challenge.toml": b"title = 'x'\n",
        "harness/_data/labs/challenges/nginx-x/nginx.conf": b"# start\n",
        "harness/_data/labs/challenges/nginx-x/solution/nginx.conf": b"# the answer\n",
        "trustlab-0.1.0.dist-info/RECORD": b"stale\n",
    }
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    assert workshop.strip_solutions(wheel) == 1
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert not any("/solution/" in n for n in names) and workshop.SCORED_MARKER in names
        record = z.read("trustlab-0.1.0.dist-info/RECORD").decode().splitlines()
        for row in record[:-1]:
            name, digest, size = row.split(",")
            data = z.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={want}" and int(size) == len(data)
        assert record[-1] == "trustlab-0.1.0.dist-info/RECORD,,"


def test_a_scored_kit_loads_its_challenges_and_refuses_solutions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    root = tmp_path / "challenges"
    shutil.copytree(C.challenges_root(), root)
    for sol in root.glob("*/solution"):
        shutil.rmtree(sol)
    (root / "SCORED").write_text("no solutions\n")
    monkeypatch.setattr(C, "challenges_root", lambda: root)
    C.load_all.cache_clear()
    try:
        assert len(C.load_all()) >= 15
        code, _, err = _run(capsys, "challenge", "solution", CID, "--dir", str(tmp_path / "s"))
        assert code == 2 and "ships no solutions" in err and not (tmp_path / "s").exists()
    finally:
        C.load_all.cache_clear()
    (root / "SCORED").unlink()
    with pytest.raises(C.ChallengeError, match="solution/nginx.conf is missing"):
        C.load_dir(root / CID)
