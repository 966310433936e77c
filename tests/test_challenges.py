"""Challenges: the data validates, every one is graded by the real server, and the course commands work.

The grading tests are the contract of the course: for every challenge the unchanged starting
config is "not yet" and the reference solution is SOLVED on the real proxy; a correct fix
written differently is SOLVED too, and a "fix" that turns verification off is not.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.course import challenges as C
from harness.errors import LabError

ALL = C.load_all()
IDS = [c.id for c in ALL]


# -- the data ----------------------------------------------------------------------------------
def test_every_track_is_a_path_from_warm_up() -> None:
    """Each proxy family's track starts with a warm-up; levels only name the path's three steps."""
    for track in {c.track for c in ALL}:
        levels = {c.level for c in ALL if c.track == track}
        assert "warm-up" in levels and levels <= set(C.LEVELS), (track, levels)


def test_at_least_15_challenges_over_eight_proxies_warm_up_to_puzzle() -> None:
    per_proxy = Counter(c.proxy.value for c in ALL)
    kinds = {"nginx", "apache", "haproxy", "caddy", "traefik", "envoy", "squid", "trafficserver"}
    assert len(ALL) >= 15 and set(per_proxy) == kinds, per_proxy
    assert min(per_proxy.values()) >= 3
    assert {c.difficulty for c in ALL} == set(C.DIFFICULTIES)
    assert min(c.minutes for c in ALL) == 5 and max(c.minutes for c in ALL) == 20
    assert len(set(IDS)) == len(IDS)


def test_the_issue_list_is_covered() -> None:
    """Each case the course must teach has its challenge (by id; the grading tests prove each)."""
    for needed in (
        "nginx-ca-without-verify",
        "nginx-verify-off",
        "apache-published-block",
        "nginx-ip-target",
        "nginx-system-bundle",
        "nginx-sni-routed",
        "nginx-upstream-name",
        "haproxy-no-verifyhost",
        "apache-name-check-off",
        "nginx-depth-zero",
        "nginx-wildcard-policy",
    ):
        assert needed in IDS, needed
    policy = C.get("nginx-wildcard-policy")
    assert policy.grader.accept == ("wildcard",) and "no wildcard" in policy.grader.policy
    assert C.get("nginx-sni-routed").grader.sni_routing and C.get("haproxy-sni-routed").grader.sni_routing


def test_committed_schema_is_current() -> None:
    committed = json.loads((C.challenges_root() / "challenge.schema.json").read_text())
    assert committed == C.json_schema(), (
        'labs/challenges/challenge.schema.json drifted; regenerate: python -c "import json; '
        'from harness.course.challenges import json_schema; print(json.dumps(json_schema(), indent=2))" '
        "> labs/challenges/challenge.schema.json"
    )


def test_every_challenge_file_fits_the_schema() -> None:
    import tomllib

    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(C.json_schema())
    for ch in ALL:
        data = tomllib.loads((ch.path / "challenge.toml").read_text())
        assert not list(validator.iter_errors(data)), ch.id
    assert list(validator.iter_errors({"title": "x", "difficulty": "impossible"}))


def _copy(tmp_path: Path, cid: str = "nginx-ca-without-verify") -> Path:
    dest = tmp_path / cid
    shutil.copytree(C.get(cid).path, dest)
    return dest


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: 'colour = "red"\n' + t, "challenge.toml: colour: unknown key"),
        (lambda t: t.replace('difficulty = "warm-up"', 'difficulty = "trivial"'), "difficulty: 'trivial' is unknown"),
        (lambda t: t.replace("minutes = 5", "minutes = 0"), "minutes: must be a whole number"),
        (lambda t: t.replace("accept = []", 'accept = ["legit"]'), "grader.accept: must list impostors only"),
        (lambda t: t.replace("accept = []", 'accept = ["wildcard"]'), "grader.policy: must say"),
        (lambda t: t.replace('served = ["legit"]', 'served = ["rogue-ca"]'), "grader.served: must list legit"),
        (lambda t: t.replace("https://nginx.org", "http://nginx.org"), "lesson.sources: must be a non-empty list"),
        (lambda t: t.replace('proxy = "nginx"', 'proxy = "lighty"'), "proxy: 'lighty' is unknown"),
        (lambda t: t + "[broken\n", "invalid TOML"),
        (lambda t: t.replace('level = "warm-up"', 'level = "guru"'), "level: 'guru' is unknown"),
        (lambda t: t.replace("[backend]", "[backnd]"), "challenge.toml: backnd: unknown key"),
        (lambda t: t.replace('address = "10.203.0.10"', 'address = "192.0.2.1"'), "backend.address: '192.0.2.1'"),
        (lambda t: t.replace('name = "backend-api.internal"', 'name = "10.203.0.10"'), "backend.name: '10.203.0.10'"),
        (lambda t: t.replace('path = "/"', 'path = "api"'), "request.path: 'api' must be a path"),
        (lambda t: t.replace('host = "portal.example.com"\n', ""), "request.host: missing"),
        (
            lambda t: t.replace('ca_file = "/etc/nginx/tls/internal-pki.pem"', 'ca_file = "tls/internal-pki.pem"'),
            "backend.ca_file: 'tls/internal-pki.pem' must be the internal root's absolute path",
        ),
        (lambda t: t.replace('ca_file = "/etc/nginx/tls/internal-pki.pem"\n', ""), "backend.ca_file: missing"),
    ],
)
def test_bad_challenge_files_are_one_line_errors_naming_file_and_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    d = _copy(tmp_path)
    toml = d / "challenge.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(C.ChallengeError) as err:
        C.load_dir(d)
    assert message in str(err.value) and str(toml) in str(err.value) and "\n" not in str(err.value)


def test_every_solution_names_its_challenges_ca_file_and_the_readme_says_where_it_is() -> None:
    """The grader lets a config name the challenge's CA file alone (``[backend] ca_file``): every
    reference solution uses it, and the README ``start`` writes tells the learner where it is."""
    for ch in C.load_all():
        texts = [(ch.path / "solution" / f).read_text() for f in (ch.config, *ch.files)]
        assert any(ch.backend.ca_file in t for t in texts), f"{ch.id}: the solution never names {ch.backend.ca_file}"
        assert f"The internal root CA is `{ch.backend.ca_file}`" in ch.readme(), ch.id


def test_a_missing_solution_is_named(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "solution" / "nginx.conf").unlink()
    with pytest.raises(C.ChallengeError, match=r"solution: .*solution/nginx.conf is missing"):
        C.load_dir(d)


def test_flags_are_hmac_of_the_id_in_the_documented_format() -> None:
    f = C.flag("nginx-ca-without-verify", "s3cret")
    assert C.FLAG_RE.match(f)
    assert f == C.flag("nginx-ca-without-verify", "s3cret") != C.flag("nginx-ca-without-verify", "other")
    assert f != C.flag("nginx-verify-off", "s3cret")
    import hashlib
    import hmac

    assert f[9:-1] == hmac.new(b"s3cret", b"nginx-ca-without-verify", hashlib.sha256).hexdigest()[:32]


# -- grading on the real servers ------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("cid", IDS)
def test_start_is_not_yet_and_solution_is_solved(local_runtime: str, cid: str) -> None:
    ch = C.get(cid)
    start = C.grade(ch, ch.start_file)
    assert not start.solved and start.failures, f"{cid}: the unchanged start must be 'not yet'"
    solution = C.grade(ch, ch.solution_file)
    assert solution.solved, f"{cid}: the reference solution must be solved: {solution.failures or solution.rejected}"
    assert {c.identity for c in solution.cells} >= set(ch.grader.identities)


def _variant(tmp_path: Path, cid: str, text: str) -> Path:
    path = tmp_path / C.get(cid).config
    path.write_text(text)
    return path


def _sol(cid: str) -> str:
    return C.get(cid).solution_file.read_text()


def _start(cid: str) -> str:
    return C.get(cid).start_file.read_text()


# (challenge, a correct fix written unlike the reference)
OTHER_FIXES = [
    # verify at server level instead of the location, SNI first, clutter around it
    (
        "nginx-ca-without-verify",
        _start("nginx-ca-without-verify").replace(
            "        server_name portal.example.com;",
            "        server_name portal.example.com;\n        proxy_ssl_verify on;\n        client_max_body_size 4m;",
        ),
    ),
    # rename the upstream block to the real name instead of setting proxy_ssl_name
    ("nginx-upstream-name", _start("nginx-upstream-name").replace("backend_api", "backend-api.internal")),
    # proxy_ssl_name at server level, SNI before it
    (
        "nginx-ip-target",
        _start("nginx-ip-target").replace(
            "        server_name portal.example.com;",
            "        server_name portal.example.com;\n        proxy_ssl_server_name on;\n"
            "        proxy_ssl_name backend-api.internal;",
        ),
    ),
    # the depth line deleted (nginx's default 1 fits one intermediate)
    ("nginx-depth-zero", _start("nginx-depth-zero").replace("proxy_ssl_verify_depth 0;", "")),
    # depth 3, ProxyPreserveHost deleted, another order
    (
        "apache-published-block",
        _start("apache-published-block")
        .replace("    ProxyPreserveHost On\n", "")
        .replace(
            "    SSLProxyVerify require\n",
            "    SSLProxyVerifyDepth 3\n    ServerAdmin ops@example.com\n    SSLProxyVerify require\n",
        ),
    ),
    # the CN line deleted instead of CheckPeerName on
    ("apache-cn-check-off", _start("apache-cn-check-off").replace("    SSLProxyCheckPeerCN off\n", "")),
    # SNI alone: HAProxy then checks the name against the SNI it sends
    (
        "haproxy-no-verifyhost",
        _start("haproxy-no-verifyhost").replace(
            "ca-file /etc/haproxy/tls/internal-pki.pem",
            "sni str(backend-api.internal) ca-file /etc/haproxy/tls/internal-pki.pem",
        ),
    ),
    # strict settings on each server line instead of default-server
    (
        "haproxy-default-server",
        _start("haproxy-default-server").replace(
            "server api2 backend-api.internal:8443",
            "server api2 backend-api.internal:8443 verify required ca-file /etc/haproxy/tls/internal-pki.pem "
            "verifyhost backend-api.internal sni str(backend-api.internal)",
        ),
    ),
]

# (challenge, a "fix" that serves legit by turning verification off)
VERIFY_OFF_FIXES = [
    ("nginx-ip-target", _start("nginx-ip-target").replace("proxy_ssl_verify on;", "proxy_ssl_verify off;")),
    ("nginx-upstream-name", _start("nginx-upstream-name").replace("proxy_ssl_verify on;", "proxy_ssl_verify off;")),
    ("nginx-depth-zero", _start("nginx-depth-zero").replace("proxy_ssl_verify on;", "proxy_ssl_verify off;")),
    ("nginx-sni-routed", _start("nginx-sni-routed").replace("proxy_ssl_verify on;", "proxy_ssl_verify off;")),
    (
        "apache-published-block",
        _start("apache-published-block")
        .replace("SSLProxyVerify require", "SSLProxyVerify none")
        .replace("SSLProxyCheckPeerName on", "SSLProxyCheckPeerName off"),
    ),
    (
        "haproxy-sni-routed",
        _start("haproxy-sni-routed").replace(
            "verify required ca-file /etc/haproxy/tls/internal-pki.pem verifyhost backend-api.internal", "verify none"
        ),
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(("cid", "text"), OTHER_FIXES, ids=[c for c, _ in OTHER_FIXES])
def test_a_correct_fix_written_differently_is_solved(local_runtime: str, tmp_path: Path, cid: str, text: str) -> None:
    assert text != _sol(cid) and text != _start(cid)
    g = C.grade(cid, _variant(tmp_path, cid, text))
    assert g.solved, g.failures or g.rejected


@pytest.mark.integration
@pytest.mark.parametrize(("cid", "text"), VERIFY_OFF_FIXES, ids=[c for c, _ in VERIFY_OFF_FIXES])
def test_turning_verification_off_is_not_yet(local_runtime: str, tmp_path: Path, cid: str, text: str) -> None:
    assert text != _start(cid)
    g = C.grade(cid, _variant(tmp_path, cid, text))
    assert not g.solved
    assert any(f["outcome"] == "spoofed" for f in g.failures), g.failures


@pytest.mark.integration
def test_the_wildcard_gets_through_every_nginx_fix(local_runtime: str, tmp_path: Path) -> None:
    """The policy challenge's claim: no nginx directive refuses *.svc.internal for api.svc.internal."""
    cid = "nginx-wildcard-policy"
    for text in (
        _sol(cid),
        _sol(cid).replace(
            "proxy_ssl_server_name on;", "proxy_ssl_server_name on;\n            proxy_ssl_name api.svc.internal;"
        ),
    ):
        g = C.grade(cid, _variant(tmp_path, cid, text))
        assert g.solved
        assert {c.identity: c.outcome.value for c in g.cells}["wildcard"] == "spoofed"


@pytest.mark.integration
def test_feedback_names_the_upstream_the_impostor_and_the_missing_check(local_runtime: str) -> None:
    """haproxy-default-server's hint asks "which one fails?": the answer is in the feedback."""
    from harness.vocab import identity_spec

    ch = C.get("haproxy-default-server")
    g = C.grade(ch, ch.start_file)
    text = C.render_grade(g, hints_left=False)
    lines = {f["line"] for f in g.failures}
    assert 19 not in lines and 20 in lines, g.failures  # api1 verifies; api2 inherits `verify none`
    assert "haproxy.cfg:20: backend api server api2" in text
    assert f"who: {identity_spec('rogue-ca').story[:40]}" in " ".join(text.split())
    assert "haproxy-verify-none" in text and "https://docs.haproxy.org/" in text
    solved = C.render_grade(C.grade(ch, ch.solution_file), hints_left=False)
    assert "SOLVED" in solved and "Lesson: " in solved and ch.sources[0] in solved


@pytest.mark.integration
def test_a_rejected_config_cites_the_learners_own_line(local_runtime: str, tmp_path: Path) -> None:
    cid = "haproxy-default-server"
    path = _variant(
        tmp_path,
        cid,
        _start(cid).replace(
            "server api2 backend-api.internal:8443", "server api2 backend-api.internal:8443 verifyhots x"
        ),
    )
    g = C.grade(cid, path)
    assert g.rejected and f"{path}:20" in g.rejected and "/lab/" not in g.rejected, g.rejected


# -- the commands ---------------------------------------------------------------------------------
def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.integration
def test_start_check_hint_solve_progress_reset(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "haproxy-no-verifyhost"
    work = tmp_path / "w"
    code, out, _ = _run(capsys, "challenge", "start", cid, "--dir", str(work))
    assert code == 0 and (work / "haproxy.cfg").read_text() == _start(cid)
    assert f"trustlab challenge check {cid}" in (work / "README.md").read_text()

    code, out, _ = _run(capsys, "challenge", "check", cid, "--dir", str(work))
    assert code == 1
    assert "wrong-name -> spoofed" in out and f"a hint exists: trustlab challenge hint {cid}" in out

    assert _run(capsys, "challenge", "hint", cid)[1].startswith("hint 1/3")
    assert _run(capsys, "challenge", "hint", cid)[1].startswith("hint 2/3")

    monkeypatch.chdir(work)  # from inside the challenge folder, without --dir
    code, out, _ = _run(capsys, "challenge", "check", cid, "--json")
    data = json.loads(out)
    assert code == 1 and data["id"] == cid and data["solved"] is False
    assert {"id", "solved", "cells", "failures"} <= set(data)
    assert {f["identity"] for f in data["failures"]} == {"wrong-name", "ip-san"}

    (work / "haproxy.cfg").write_text(_sol(cid))
    monkeypatch.setenv("TRUSTLAB_WORKSHOP_SECRET", "workshop-2026")
    code, out, _ = _run(capsys, "challenge", "check", cid, "--dir", str(work))
    assert code == 0 and f"SOLVED {cid}" in out
    assert f"flag: {C.flag(cid, 'workshop-2026')}" in out

    code, out, _ = _run(capsys, "challenge", "progress", "--json")
    prog = json.loads(out)
    assert prog["solved"] == [cid] and prog["hints"] == {cid: 2} and prog["total"] == len(ALL)
    listed = json.loads(_run(capsys, "challenge", "list", "--json")[1])["challenges"]
    assert {r["id"]: r["solved"] for r in listed}[cid] is True
    assert set(listed[0]) == {"id", "proxy", "title", "difficulty", "level", "track", "minutes", "file", "solved"}
    path = _run(capsys, "challenge", "list")[1]
    assert "haproxy track: 1/5 solved" in path and f"[x] practitioner {cid}" in path
    assert path.index("nginx track") < path.index("apache track") < path.index("haproxy track")
    assert "Next: trustlab challenge start nginx-ca-without-verify" in path

    # a restart (a new process reads the same file) keeps it; reset of one id keeps the others
    C.reset("nginx-verify-off")
    assert json.loads(_run(capsys, "challenge", "progress", "--json")[1])["solved"] == [cid]
    assert _run(capsys, "challenge", "reset", cid)[0] == 0
    assert json.loads(_run(capsys, "challenge", "progress", "--json")[1])["solved"] == []


def test_hints_record_tiers_and_can_be_switched_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "nginx-ca-without-verify"
    code, out, _ = _run(capsys, "challenge", "hint", cid, "--all")
    assert code == 0 and out.count("hint ") >= 3 and "the last hint" in out
    code, out, _ = _run(capsys, "challenge", "hint", cid)
    assert "hint 3/3" in out  # the last tier again, never past it
    with C.progress() as p:
        assert p.hints[cid] == 3
    monkeypatch.setenv("TRUSTLAB_WORKSHOP_HINTS", "off")
    code, _, err = _run(capsys, "challenge", "hint", cid)
    assert code == 2 and "hints are switched off" in err
    code, _, err = _run(capsys, "challenge", "solution", cid)
    assert code == 2 and "solutions are switched off" in err


def test_solution_is_written_and_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cid = "apache-published-block"
    code, out, _ = _run(capsys, "challenge", "solution", cid, "--dir", str(tmp_path / "s"))
    assert code == 0 and (tmp_path / "s" / "site.conf").read_text() == _sol(cid)
    assert "ProxyPreserveHost" in out and "https://" in out
    assert json.loads(_run(capsys, "challenge", "progress", "--json")[1])["solutions"] == [cid]


@pytest.mark.integration
def test_a_challenge_of_several_files_starts_and_grades_them_together(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Traffic Server reads remap.config beside records.config: start copies it, the grader reads
    the learner's copy (the fix of trafficserver-route-override is in it), solution writes both."""
    cid = "trafficserver-route-override"
    ch = C.get(cid)
    assert ch.files == ("remap.config",)
    assert _run(capsys, "challenge", "start", cid, "--dir", str(tmp_path))[0] == 0
    assert (tmp_path / "remap.config").read_text() == (ch.path / "remap.config").read_text()
    assert "`remap.config` beside it" in (tmp_path / "README.md").read_text()
    assert _run(capsys, "challenge", "check", cid, "--dir", str(tmp_path))[0] == 1
    fixed = (ch.path / "solution" / "remap.config").read_text()
    (tmp_path / "remap.config").write_text(fixed)
    code, out, _ = _run(capsys, "challenge", "check", cid, "--dir", str(tmp_path))
    assert code == 0 and f"SOLVED {cid}" in out, out
    sol = tmp_path / "sol"
    assert _run(capsys, "challenge", "solution", cid, "--dir", str(sol))[0] == 0
    assert sorted(p.name for p in sol.iterdir()) == ["records.config", "remap.config"]
    # reset puts the starting remap.config back, keeping the attempt's as a .bak
    assert _run(capsys, "challenge", "reset", cid, "--dir", str(tmp_path))[0] == 0
    assert (tmp_path / "remap.config").read_text() == (ch.path / "remap.config").read_text()
    assert [p.read_text() for p in tmp_path.glob("remap.config.*.bak")] == [fixed]


def test_files_must_be_plain_names_shipped_twice(tmp_path: Path) -> None:
    src = C.get("trafficserver-permissive").path
    cases = (([".."], "plain file names"), (["records.config"], "not the config"), (["gone.config"], "missing"))
    for bad, says in cases:
        d = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(src, d)
        text = (d / "challenge.toml").read_text().replace('files = ["remap.config"]', f"files = {json.dumps(bad)}")
        (d / "challenge.toml").write_text(text)
        with pytest.raises(C.ChallengeError, match=says):
            C.load_dir(d)


def test_start_on_an_attempt_keeps_it_and_says_how_to_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = "nginx-verify-off"
    assert _run(capsys, "challenge", "start", cid, "--dir", str(tmp_path))[0] == 0
    (tmp_path / "nginx.conf").write_text("# my edits\n")
    code, out, _ = _run(capsys, "challenge", "start", cid, "--dir", str(tmp_path))
    assert code == 0 and "already have an attempt" in out
    assert f"trustlab challenge check {cid} --dir {tmp_path}" in out and f"challenge reset {cid}" in out
    assert (tmp_path / "nginx.conf").read_text() == "# my edits\n"


def test_reset_restores_the_start_and_keeps_the_attempt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "nginx-verify-off"
    assert _run(capsys, "challenge", "start", cid, "--dir", str(tmp_path))[0] == 0
    (tmp_path / "nginx.conf").write_text("# my edits\n")
    code, out, _ = _run(capsys, "challenge", "reset", cid, "--dir", str(tmp_path))
    assert code == 0 and "restored to the starting config" in out
    assert (tmp_path / "nginx.conf").read_text() == _start(cid)
    backups = sorted(tmp_path.glob("nginx.conf.*.bak"))
    assert [b.read_text() for b in backups] == ["# my edits\n"] and str(backups[0]) in out
    # from inside the folder, and a second reset of an unchanged file keeps no empty backup
    (tmp_path / "nginx.conf").write_text("# second try\n")
    monkeypatch.chdir(tmp_path)
    assert _run(capsys, "challenge", "reset", cid)[0] == 0
    assert sorted(b.read_text() for b in tmp_path.glob("*.bak")) == ["# my edits\n", "# second try\n"]
    assert "already the starting config" in _run(capsys, "challenge", "reset", cid)[1]
    assert len(list(tmp_path.glob("*.bak"))) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["challenge", "check", "no-such-challenge"], "challenge 'no-such-challenge' is unknown"),
        (["challenge", "check", "nginx-verify-off", "/nonexistent/nginx.conf"], "no such file"),
        (["challenge", "start", "nope"], "is unknown; known:"),
        (["challenge", "reset"], "give one challenge ID or --all"),
        (["challenge", "export", "--ctfd", "x.csv"], "set TRUSTLAB_WORKSHOP_SECRET first"),
    ],
)
def test_bad_input_is_exit_2_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_corrupt_state_file_is_one_line_and_kept(capsys: pytest.CaptureFixture[str]) -> None:
    C.reset("nginx-verify-off")  # creates the state file
    path = C.state_dir() / "challenges.json"
    path.write_text('{"solved": {"nginx-verify-off": {}}, "hints": ')  # truncated
    before = path.read_text()
    for argv in (["challenge", "progress"], ["challenge", "hint", "nginx-verify-off"], ["challenge", "list"]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "progress file is corrupt" in err and err.count("\n") == 1
    assert path.read_text() == before  # never silently replaced
    assert _run(capsys, "challenge", "reset", "--all")[0] == 0
    assert json.loads(path.read_text()) == {"version": 1}


def test_state_writes_keep_other_entries_and_leave_no_temp_files() -> None:
    C.next_hint(C.get("nginx-verify-off"))
    C.record_solution(C.get("haproxy-verify-none"))
    C.next_hint(C.get("apache-verify-none"))
    with C.progress() as p:
        assert p.hints == {"nginx-verify-off": 1, "apache-verify-none": 1} and p.solutions == ["haproxy-verify-none"]
    assert sorted(os.listdir(C.state_dir())) == [".challenges.lock", "challenges.json"]


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRUSTLAB_STATE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert C.state_dir() == tmp_path / "a"
    monkeypatch.delenv("TRUSTLAB_STATE_DIR")
    assert C.state_dir() == tmp_path / "x" / "trustlab"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert C.state_dir() == tmp_path / "h" / ".local" / "state" / "trustlab"


def test_ctfd_export_has_every_challenge_with_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTLAB_WORKSHOP_SECRET", "s3cret")
    out = tmp_path / "ctfd.csv"
    code, text, _ = _run(capsys, "challenge", "export", "--ctfd", str(out))
    assert code == 0 and "Import CSV" in text
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["name"].split(":")[0] for r in rows] == IDS
    for row, ch in zip(rows, ALL, strict=True):
        assert row["type"] == "standard" and row["state"] == "visible" and int(row["value"]) > 0
        assert json.loads(row["flags"]) == [{"type": "static", "content": C.flag(ch.id, "s3cret"), "data": ""}]
        assert [h["content"] for h in json.loads(row["hints"])] == list(ch.hints)
    monkeypatch.setenv("TRUSTLAB_WORKSHOP_HINTS", "off")
    _run(capsys, "challenge", "export", "--ctfd", str(out))
    assert all(json.loads(r["hints"]) == [] for r in csv.DictReader(io.StringIO(out.read_text())))


# -- notebook helpers ------------------------------------------------------------------------------
def test_predict_refuses_a_bad_prediction_before_running() -> None:
    import harness

    with pytest.raises(LabError, match="rouge-ca unknown"):
        harness.predict("nginx/verify-off", spoofed=["rouge-ca"])
    with pytest.raises(LabError, match="must be a list"):
        harness.predict("nginx/verify-off", spoofed="rogue-ca")  # type: ignore[arg-type]


@pytest.mark.integration
def test_predict_scores_cell_by_cell(local_runtime: str) -> None:
    import harness

    table = harness.predict("nginx/ca-without-verify", spoofed=["legit", "legit-no-chain", "rogue-ca"])
    assert table.score == (3, 10)  # type: ignore[attr-defined]
    rows = {r[0]: r for r in table.rows}
    assert rows["rogue-ca"][3] == "right" and rows["self-signed"][3] == "WRONG"  # nginx does not verify at all
    assert table.score == (sum(r[3] == "right" for r in table.rows), 10)  # type: ignore[attr-defined]
    assert "predicted right" in table._repr_html_()


@pytest.mark.integration
def test_submit_shows_solved_and_not_yet(local_runtime: str) -> None:
    import harness

    good = harness.submit("nginx-sni-routed", _sol("nginx-sni-routed"))
    assert good.good and good.text.startswith("Solved: nginx-sni-routed") and "Solved" in good._repr_html_()
    with C.progress() as p:
        assert "nginx-sni-routed" in p.solved
    bad = harness.submit("nginx-sni-routed", _start("nginx-sni-routed"))
    assert not bad.good and bad.text.startswith("Not yet") and "legit" in str(bad)
    with pytest.raises(LabError, match="config_text must be"):
        harness.submit("nginx-sni-routed", "")


def test_the_docs_name_only_commands_that_exist() -> None:
    """README, docs/reference.md and docs/INSTRUCTOR.md name only real commands and challenge ids."""
    import re

    from harness.cli import build_parser

    root = Path(__file__).resolve().parents[1]
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices  # type: ignore[union-attr]
    groups = {
        g: set(next(a for a in sub[g]._actions if a.dest == f"{g}_cmd").choices)  # type: ignore[union-attr]
        for g in ("challenge", "workshop")
    }
    text = "".join((root / p).read_text() for p in ("README.md", "docs/reference.md", "docs/INSTRUCTOR.md"))
    used = re.findall(r"trustlab (challenge|workshop) ([a-z]+)", text)
    assert {"list", "start", "check", "hint", "solution", "progress", "reset", "export"} <= {
        c for g, c in used if g == "challenge"
    }
    for group, cmd in used:
        assert cmd in groups[group], f"docs name `trustlab {group} {cmd}`, which does not exist"
    for cid in set(re.findall(r"`((?:nginx|apache|haproxy)-[a-z0-9-]+)`", text)):
        assert cid in IDS, f"docs name challenge {cid!r}, which does not exist"


def test_the_instructors_guide_answers_every_challenge_and_tells_who_each_impostor_is() -> None:
    """An answer row per challenge; one identity catalogue (harness.vocab) for the grader's feedback and the docs."""
    from harness.vocab import IDENTITIES

    guide = (Path(__file__).resolve().parents[1] / "docs" / "INSTRUCTOR.md").read_text()
    for ch in ALL:
        assert f"| `{ch.id}` | {ch.proxy.value} |" in guide, f"docs/INSTRUCTOR.md: no answer row for {ch.id}"
    for spec in IDENTITIES:
        assert spec.story, spec.id
        assert f"| `{spec.id}` | {spec.story} |" in guide, f"docs/INSTRUCTOR.md: {spec.id}'s row differs from vocab"
