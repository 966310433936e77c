"""The notebooks' learner-facing parts: predictions before each reveal, graded tasks on the learner's edit.

A lesson records the learner's prediction (``PREDICT_X = ...``, a placeholder until they fill it
in) before the cell that runs the proxies, and scores it after with ``harness.predict(...,
results=r)``. A graded task is a cell holding a challenge's starting config (``MY_X = r\"\"\"...\"\"\"``)
that the learner edits, and a checker cell, ``harness.submit(ID, MY_X, runtime=RUNTIME)``, which
grades that text on the real proxy through the challenge grader.

Here each task's checker is run on the cell's text as committed (it must say Not yet), on a
correct edit of it (Solved), and on the wrong edits a learner makes (a typo'd directive or name,
a fix that blocks the legitimate backend, verification on without a CA, verification off, a name
or matcher that lets a sibling in): every one must be refused. On both runtimes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import harness
from harness.course import challenges as C
from harness.errors import LabError
from harness.results import Cell, Results
from harness.vocab import Outcome

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
# Every lesson predicts (10 drives held labs through the CLI, and scores its prediction on a run of
# the scenario it holds).
PREDICTING = ALL
# The lessons that end with a graded task on the learner's own config.
GRADED = {f"{n:02d}" for n in range(15)}  # every lesson

TASK = re.compile(r'^(MY_\w+) = r"""(.*?)"""', re.S | re.M)
SUBMIT = re.compile(r'harness\.submit\("([\w-]+)", (MY_\w+), runtime=RUNTIME\)')
PLACEHOLDER = re.compile(r"^(PREDICT_\w+) = \.\.\.", re.M)
SCORE = re.compile(r'harness\.predict\("([\w/-]+)", spoofed=(PREDICT_\w+), results=(\w+)\)')


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def tasks() -> list[tuple[str, str, str]]:
    """(notebook stem, challenge id, the cell's starting text) for every graded task."""
    found = []
    for path in ALL:
        code = "\n".join(_code_cells(path))
        texts = dict(TASK.findall(code))
        for cid, var in SUBMIT.findall(code):
            found.append((path.stem, cid, texts[var]))
    return found


TASKS = tasks()


# -- predictions -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PREDICTING, ids=[p.stem for p in PREDICTING])
def test_each_lesson_records_a_prediction_before_the_run_it_scores(path: Path) -> None:
    cells = _code_cells(path)
    placed = {var: n for n, text in enumerate(cells) for var in PLACEHOLDER.findall(text)}
    scored = [(n, sid, var, res) for n, text in enumerate(cells) for sid, var, res in SCORE.findall(text)]
    assert scored, f"{path.name}: no harness.predict(..., results=...) scores a prediction"
    assert set(placed) == {var for _, _, var, _ in scored}, f"{path.name}: a prediction is never scored, or never asked"
    for n, _sid, var, res in scored:
        runs = [m for m in range(placed[var] + 1, n + 1) if re.search(rf"^{res} = ", cells[m], re.M)]
        assert placed[var] < n and runs, f"{path.name}: {var} must be asked before the cell that runs {res}"
        # (that the run holds *sid* is checked when the notebook executes: predict raises otherwise)


def _results(*cells: tuple[str, Outcome]) -> Results:
    return Results(
        meta={},
        cells=[
            Cell(
                scenario="nginx/verify-off",
                proxy="nginx",
                variant="verify-off",
                identity=i,
                outcome=o,
                expected=None,
                status=200,
                reason=f"response from {i}",
                sni=None,
                tls="TLSv1.2",
                duration_s=0.01,
            )
            for i, o in cells
        ],
    )


def test_predict_scores_against_a_run_and_names_the_surprises() -> None:
    r = _results(
        ("legit", Outcome.SERVED),
        ("rogue-ca", Outcome.SPOOFED),
        ("expired", Outcome.SPOOFED),
        ("wrong-name", Outcome.BLOCKED),
    )
    t = harness.predict("nginx/verify-off", spoofed=["legit", "rogue-ca", "wrong-name"], results=r)
    assert t.score == (2, 4)  # type: ignore[attr-defined]
    assert t.surprises == ["expired", "wrong-name"]  # type: ignore[attr-defined]
    assert "expired got through (you said stopped)" in t.caption
    assert "wrong-name stopped (you said through)" in t.caption
    right = harness.predict("nginx/verify-off", spoofed=["legit", "rogue-ca", "expired"], results=r)
    assert right.score == (4, 4) and "no surprise" in right.caption  # type: ignore[attr-defined]


def test_a_placeholder_prediction_runs_and_says_so() -> None:
    r = _results(("legit", Outcome.SERVED), ("rogue-ca", Outcome.SPOOFED))
    t = harness.predict("nginx/verify-off", spoofed=..., results=r)
    assert t.score is None and "you did not predict yet" in t.caption  # type: ignore[attr-defined]
    assert [row[2] for row in t.rows] == [Outcome.SERVED, Outcome.SPOOFED]  # the real outcomes, unscored
    # Without a run it runs nothing (no runtime is needed here) and says what to do.
    empty = harness.predict("nginx/verify-off", spoofed=...)
    assert empty.score is None and "replace ... with a list" in empty.caption  # type: ignore[attr-defined]


def test_a_scored_prediction_is_in_the_learners_one_progress_record(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    r = _results(("legit", Outcome.SERVED), ("rogue-ca", Outcome.SPOOFED), ("expired", Outcome.SPOOFED))
    harness.predict("nginx/verify-off", spoofed=..., results=r)  # a placeholder records nothing
    with C.progress() as p:
        assert p.predictions == {}
    harness.predict("nginx/verify-off", spoofed=["legit"], results=r)
    harness.predict("nginx/verify-off", spoofed=["legit", "rogue-ca"], results=r)  # the last one counts
    with C.progress() as p:
        assert {k: v for k, v in p.predictions["nginx/verify-off"].items() if k in ("right", "total")} == {
            "right": 2,
            "total": 3,
        }
    assert main(["challenge", "progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"] == {"nginx/verify-off": {"right": 2, "total": 3}}
    assert main(["challenge", "progress"]) == 0
    out = capsys.readouterr().out
    assert "notebook predictions: 1 scored, 2/3 cells right" in out and "nginx/verify-off" in out
    C.reset(None)
    with C.progress() as p:
        assert p.predictions == {}


def test_a_corrupt_progress_file_does_not_hide_the_score() -> None:
    C.state_dir().mkdir(parents=True, exist_ok=True)
    (C.state_dir() / "challenges.json").write_text('{"predictions": []}')
    r = _results(("legit", Outcome.SERVED))
    t = harness.predict("nginx/verify-off", spoofed=["legit"], results=r)
    assert t.score == (1, 1) and "not recorded" in t.caption and "corrupt" in t.caption  # type: ignore[attr-defined]


def test_predict_refuses_a_typo_and_a_scenario_not_in_the_run() -> None:
    r = _results(("legit", Outcome.SERVED), ("rogue-ca", Outcome.SPOOFED))
    with pytest.raises(LabError, match="rouge-ca unknown here"):
        harness.predict("nginx/verify-off", spoofed=["rouge-ca"], results=r)
    with pytest.raises(LabError, match="nginx/good is not in this run"):
        harness.predict("nginx/good", spoofed=[], results=r)


# -- graded tasks ------------------------------------------------------------------------------
def test_the_graded_lessons_have_tasks_that_start_from_their_challenge() -> None:
    assert {stem[:2] for stem, _, _ in TASKS} == GRADED
    for stem, cid, text in TASKS:
        assert text == C.get(cid).start_file.read_text(), f"{stem}: the {cid} cell drifted from its starting file"
    assert {cid for _, cid, _ in TASKS} == set(EDITS), "every task needs its right and wrong edits below"


def _edit(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"{old!r} is not in the starting file: the edit would test nothing"
        text = text.replace(old, new)
    return text


NGX_CA = "            proxy_ssl_trusted_certificate /etc/nginx/tls/internal-pki.pem;\n"
NGX_OFF = "            proxy_ssl_verify off;\n"
NGX_VERIFY = "            proxy_ssl_verify on;\n"
NGX_BUNDLE = "            proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;\n"
APX_VERIFY = "    SSLProxyVerify require\n"
HAP = "ca-file /etc/haproxy/tls/internal-pki.pem"
CADDY = "\treverse_proxy https://backend-api.internal:8443\n"
ENVOY_CA = "              filename: /etc/envoy/pki/internal-root.pem\n"
TRAEFIK_CA = "        - /etc/traefik/pki/internal-root.pem\n"


TRAEFIK_URL = '          - url: "https://backend-api.internal:8443/"\n'


def _traefik(*lines: str) -> tuple[str, str]:
    body = "".join(f"      {ln}\n" for ln in lines)
    return TRAEFIK_URL, TRAEFIK_URL + "        serversTransport: internal\n  serversTransports:\n    internal:\n" + body


def _caddy(*lines: str) -> tuple[str, str]:
    body = "".join(f"\t\t\t{ln}\n" for ln in lines)
    return CADDY, f"\treverse_proxy https://backend-api.internal:8443 {{\n\t\ttransport http {{\n{body}\t\t}}\n\t}}\n"


def _envoy(*lines: str) -> tuple[str, str]:
    return ENVOY_CA, ENVOY_CA + "".join(f"            {ln}\n" for ln in lines)


ATS_CA = "CONFIG proxy.config.ssl.client.CA.cert.filename STRING /etc/trafficserver/internal-root.pem\n"
ATS_POLICY = "CONFIG proxy.config.ssl.client.verify.server.policy STRING "
ATS_PROPS = "CONFIG proxy.config.ssl.client.verify.server.properties STRING "
SQUID_CA = "tls-cafile=/etc/squid/internal-root.pem\n"


def _ats(policy: str, props: str = "ALL") -> tuple[str, str]:
    return ATS_CA, f"{ATS_CA}{ATS_POLICY}{policy}\n{ATS_PROPS}{props}\n"


def _squid(options: str) -> tuple[str, str]:
    return SQUID_CA, f"tls-cafile=/etc/squid/internal-root.pem {options}\n"


HAP_DEFAULT = "default-server ssl verify none"
HAP_API2 = "server api2 backend-api.internal:8443"
NGX_ON = "            proxy_ssl_verify on;\n"


def _default_server(options: str) -> tuple[str, str]:
    return HAP_DEFAULT, f"default-server ssl verify required {options}".rstrip()


def _api2(options: str) -> tuple[str, str]:
    return HAP_API2, f"{HAP_API2} ssl verify required {options}"


def _nginx_after_verify(*lines: str) -> tuple[str, str]:
    return NGX_ON, NGX_ON + "".join(f"            {ln}\n" for ln in lines)


# challenge -> (a correct edit, {what the wrong edit is: its edit})
EDITS: dict[str, tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]] = {
    "nginx-verify-off": (
        [(NGX_OFF, NGX_VERIFY + NGX_CA)],
        {
            "verify on, no CA": [(NGX_OFF, NGX_VERIFY)],
            "a CA, verify still off": [(NGX_OFF, NGX_OFF + NGX_CA)],
            "the system bundle": [(NGX_OFF, NGX_VERIFY + NGX_BUNDLE)],
            "a typo'd directive": [(NGX_OFF, NGX_VERIFY.replace("verify", "verfy") + NGX_CA)],
        },
    ),
    "nginx-depth-zero": (
        [("proxy_ssl_verify_depth 0;", "proxy_ssl_verify_depth 1;")],
        {
            "verify off": [("proxy_ssl_verify on;", "proxy_ssl_verify off;")],
            "a typo'd directive": [("proxy_ssl_verify_depth 0;", "proxy_ssl_verify_dept 2;")],
            "depth 2, the system bundle": [
                ("proxy_ssl_verify_depth 0;", "proxy_ssl_verify_depth 2;"),
                (NGX_CA, NGX_BUNDLE),
            ],
        },
    ),
    "traefik-system-store": (
        [_traefik("rootCAs:", "  - /etc/traefik/pki/internal-root.pem")],
        {
            "skip verify": [_traefik("insecureSkipVerify: true")],
            "the OS bundle as rootCAs": [_traefik("rootCAs:", "  - /etc/ssl/certs/ca-certificates.crt")],
            "a name that blocks legit": [
                _traefik("rootCAs:", "  - /etc/traefik/pki/internal-root.pem", "serverName: other-svc.internal")
            ],
        },
    ),
    "nginx-ca-without-verify": (
        [(NGX_CA, NGX_CA + "            proxy_ssl_verify on;\n")],
        {
            "a typo'd directive": [(NGX_CA, NGX_CA + "            proxy_ssl_verfy on;\n")],
            "verify off, said out loud": [(NGX_CA, NGX_CA + "            proxy_ssl_verify off;\n")],
            "verify on, no CA": [(NGX_CA, "            proxy_ssl_verify on;\n")],
            "verify on, the system bundle": [(NGX_CA, NGX_BUNDLE + "            proxy_ssl_verify on;\n")],
            "a name that blocks legit": [
                (NGX_CA, NGX_CA + "            proxy_ssl_verify on;\n            proxy_ssl_name other-svc.internal;\n")
            ],
        },
    ),
    "apache-published-block": (
        [(APX_VERIFY, APX_VERIFY + "    SSLProxyVerifyDepth 2\n"), ("ProxyPreserveHost On", "ProxyPreserveHost Off")],
        {
            "depth only (the client's Host still checked)": [(APX_VERIFY, APX_VERIFY + "    SSLProxyVerifyDepth 2\n")],
            "Host only (depth 1 still too short)": [("ProxyPreserveHost On", "ProxyPreserveHost Off")],
            "a typo'd directive": [
                (APX_VERIFY, APX_VERIFY + "    SSLProxyVerifyDepht 2\n"),
                ("ProxyPreserveHost On", "ProxyPreserveHost Off"),
            ],
            "verification off": [
                (APX_VERIFY, "    SSLProxyVerify none\n"),
                ("SSLProxyCheckPeerName on", "SSLProxyCheckPeerName off"),
            ],
            "name check off": [
                (APX_VERIFY, APX_VERIFY + "    SSLProxyVerifyDepth 2\n"),
                ("ProxyPreserveHost On", "ProxyPreserveHost Off"),
                ("SSLProxyCheckPeerName on", "SSLProxyCheckPeerName off"),
            ],
        },
    ),
    "nginx-ip-target": (
        [(NGX_CA, NGX_CA + "            proxy_ssl_name backend-api.internal;\n")],
        {
            "a typo'd name (blocks legit)": [(NGX_CA, NGX_CA + "            proxy_ssl_name backend-api.internl;\n")],
            "the sibling's name": [(NGX_CA, NGX_CA + "            proxy_ssl_name other-svc.internal;\n")],
            "verify off": [("proxy_ssl_verify on;", "proxy_ssl_verify off;")],
            "named, no CA": [(NGX_CA, "            proxy_ssl_name backend-api.internal;\n")],
        },
    ),
    "nginx-system-bundle": (
        [(NGX_BUNDLE, NGX_CA)],
        {
            "verify off": [("proxy_ssl_verify on;", "proxy_ssl_verify off;")],
            "another OS bundle": [
                (
                    NGX_BUNDLE,
                    NGX_BUNDLE.replace("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"),
                )
            ],
            "the bundle line deleted": [(NGX_BUNDLE, "")],
        },
    ),
    "haproxy-no-verifyhost": (
        [(HAP, HAP + " verifyhost backend-api.internal")],
        {
            "a typo'd name (blocks legit)": [(HAP, HAP + " verifyhost backend-api.internl")],
            "the sibling's name": [(HAP, HAP + " verifyhost other-svc.internal")],
            "a typo'd keyword": [(HAP, HAP + " verifyhots backend-api.internal")],
            "verify none": [("verify required", "verify none")],
        },
    ),
    "nginx-upstream-name": (
        [
            (
                "            proxy_ssl_verify on;\n",
                "            proxy_ssl_verify on;\n            proxy_ssl_name backend-api.internal;\n",
            )
        ],
        {
            "verify off": [("proxy_ssl_verify on;", "proxy_ssl_verify off;")],
            "the block's name again": [
                (
                    "            proxy_ssl_verify on;\n",
                    "            proxy_ssl_verify on;\n            proxy_ssl_name backend_api;\n",
                )
            ],
            "the sibling's name": [(NGX_VERIFY, NGX_VERIFY + "            proxy_ssl_name other-svc.internal;\n")],
        },
    ),
    "caddy-system-store": (
        [_caddy("tls_trust_pool file /etc/caddy/pki/internal-root.pem")],
        {
            "skip verify": [_caddy("tls_insecure_skip_verify")],
            "the OS bundle as the pool": [_caddy("tls_trust_pool file /etc/ssl/certs/ca-certificates.crt")],
            "a name that blocks legit": [
                _caddy("tls_trust_pool file /etc/caddy/pki/internal-root.pem", "tls_server_name other-svc.internal")
            ],
        },
    ),
    "envoy-ca-without-san": (
        [_envoy("match_typed_subject_alt_names:", "- san_type: DNS", "  matcher:", "    exact: backend-api.internal")],
        {
            "a typo'd name (blocks legit)": [
                _envoy(
                    "match_typed_subject_alt_names:", "- san_type: DNS", "  matcher:", "    exact: backend-api.internl"
                )
            ],
            "a suffix that lets the sibling in": [
                _envoy("match_typed_subject_alt_names:", "- san_type: DNS", "  matcher:", "    suffix: .internal")
            ],
            "a matcher, and ACCEPT_UNTRUSTED": [
                _envoy(
                    "match_typed_subject_alt_names:",
                    "- san_type: DNS",
                    "  matcher:",
                    "    exact: backend-api.internal",
                    "trust_chain_verification: ACCEPT_UNTRUSTED",
                )
            ],
        },
    ),
    "trafficserver-permissive": (
        [_ats("ENFORCED")],
        {
            "ENFORCED, the name left out (SIGNATURE)": [_ats("ENFORCED", "SIGNATURE")],
            "PERMISSIVE, said out loud": [_ats("PERMISSIVE")],
            "DISABLED": [_ats("DISABLED")],
            "a typo'd record": [(ATS_CA, ATS_CA + ATS_POLICY.replace("verify", "verfy") + "ENFORCED\n")],
            "ENFORCED, the system bundle as the CA": [
                _ats("ENFORCED"),
                (ATS_CA, ATS_CA.replace("/etc/trafficserver/internal-root.pem", "/etc/ssl/certs/ca-certificates.crt")),
            ],
        },
    ),
    "trafficserver-signature": (
        [(ATS_PROPS + "SIGNATURE", ATS_PROPS + "ALL")],
        {
            "NAME only (the chain left out)": [(ATS_PROPS + "SIGNATURE", ATS_PROPS + "NAME")],
            "ALL, but PERMISSIVE": [
                (ATS_PROPS + "SIGNATURE", ATS_PROPS + "ALL"),
                ("STRING ENFORCED", "STRING PERMISSIVE"),
            ],
            "ALL, the policy line deleted (9.2's default)": [
                (ATS_PROPS + "SIGNATURE", ATS_PROPS + "ALL"),
                (ATS_POLICY + "ENFORCED\n", ""),
            ],
            "a typo'd value": [(ATS_PROPS + "SIGNATURE", ATS_PROPS + "AL")],
        },
    ),
    "haproxy-default-server": (
        [_default_server(f"{HAP} verifyhost backend-api.internal")],
        {
            "default-server with the CA, no name": [_default_server(HAP)],
            "default-server verify required, no CA": [_default_server("")],
            "api2 with a CA, no name": [_api2(HAP)],
            "api2 verifying the sibling's name": [_api2(f"{HAP} verifyhost other-svc.internal")],
        },
    ),
    "nginx-deep-chain": (
        [_nginx_after_verify("proxy_ssl_verify_depth 2;")],
        {
            "verify off": [("proxy_ssl_verify on;", "proxy_ssl_verify off;")],
            "depth 2, the system bundle": [_nginx_after_verify("proxy_ssl_verify_depth 2;"), (NGX_CA, NGX_BUNDLE)],
            "a typo'd directive": [_nginx_after_verify("proxy_ssl_verify_dept 2;")],
            "depth 2, the sibling's name": [
                _nginx_after_verify("proxy_ssl_verify_depth 2;", "proxy_ssl_name other-svc.internal;")
            ],
        },
    ),
    "squid-default-ca": (
        [_squid("tls-default-ca=off")],
        {
            "the system store kept, said out loud": [_squid("tls-default-ca=on")],
            "DONT_VERIFY_PEER": [_squid("tls-default-ca=off tls-flags=DONT_VERIFY_PEER")],
            "the OS bundle as the CA file": [
                (SQUID_CA, "tls-cafile=/etc/ssl/certs/ca-certificates.crt tls-default-ca=off\n")
            ],
            "no CA file, no default CA (blocks legit)": [(SQUID_CA, "tls-default-ca=off\n")],
            "a typo'd option": [_squid("tls-defualt-ca=off")],
        },
    ),
    "traefik-ip-target": (
        [(TRAEFIK_CA, TRAEFIK_CA + "      serverName: backend-api.internal\n")],
        {
            "skip verify": [(TRAEFIK_CA, TRAEFIK_CA + "      insecureSkipVerify: true\n")],
            "a typo'd name (blocks legit)": [(TRAEFIK_CA, TRAEFIK_CA + "      serverName: backend-api.internl\n")],
            "the sibling's name": [(TRAEFIK_CA, TRAEFIK_CA + "      serverName: other-svc.internal\n")],
        },
    ),
}


def _solved(cid: str, text: str, runtime: str) -> bool:
    """The checker's verdict; an attempt it cannot run (one clear LabError line) is refused too."""
    try:
        return harness.submit(cid, text, runtime=runtime).good
    except LabError as exc:
        assert "\n" not in str(exc).strip() and "Traceback" not in str(exc)
        return False


@pytest.mark.integration
@pytest.mark.parametrize(("stem", "cid", "start"), TASKS, ids=[f"{s[:2]}-{c}" for s, c, _ in TASKS])
def test_a_task_checker_refuses_the_start_and_wrong_edits_and_passes_a_right_one(
    each_runtime: str, stem: str, cid: str, start: str
) -> None:
    right, wrong = EDITS[cid]
    unchanged = harness.submit(cid, start, runtime=each_runtime)
    assert not unchanged.good and unchanged.text.startswith("Not yet"), f"{stem}: the unchanged cell passed"
    solved = harness.submit(cid, _edit(start, *right), runtime=each_runtime)
    assert solved.good, f"{stem}: a correct edit was refused: {solved}"
    passed = [what for what, pairs in wrong.items() if _solved(cid, _edit(start, *pairs), each_runtime)]
    assert not passed, f"{stem} ({cid}): wrong edits graded Solved on {each_runtime}: {passed}"


# -- a challenge whose config reads further files (Traffic Server's remap.config) ---------------
def test_submit_refuses_a_further_file_the_challenge_does_not_read() -> None:
    start = C.get("trafficserver-permissive").start_file.read_text()
    with pytest.raises(LabError, match=r"does not read sni\.yaml beside records\.config; it reads remap\.config"):
        harness.submit("trafficserver-permissive", start, files={"sni.yaml": "sni: []\n"})
    with pytest.raises(LabError, match="it reads no further file"):
        harness.submit(
            "nginx-verify-off", C.get("nginx-verify-off").start_file.read_text(), files={"remap.config": "map / /\n"}
        )
    with pytest.raises(LabError, match="each of files must be the text"):
        harness.submit("trafficserver-permissive", start, files={"remap.config": "  \n"})


@pytest.mark.integration
def test_submit_grades_the_learners_own_further_file(each_runtime: str) -> None:
    """The records.config that solves trafficserver-permissive, with a remap.config whose
    /reports/ rule turns verification off again: refused, and the route named; the challenge's
    own remap.config (given, or left out) solves it."""
    ch = C.get("trafficserver-permissive")
    records = _edit(ch.start_file.read_text(), _ats("ENFORCED"))
    remap = (ch.path / "remap.config").read_text()
    override = (
        "map http://portal.example.com/reports/ https://backend-api.internal:8443/reports/ "
        "@plugin=conf_remap.so @pparam=proxy.config.ssl.client.verify.server.policy=DISABLED\n" + remap
    )
    bad = harness.submit(ch.id, records, runtime=each_runtime, files={"remap.config": override})
    assert not bad.good and any(f["identity"] == "rogue-ca" for f in bad.item.failures)  # type: ignore[attr-defined]
    assert harness.submit(ch.id, records, runtime=each_runtime, files={"remap.config": remap}).good
    assert harness.submit(ch.id, records, runtime=each_runtime).good
