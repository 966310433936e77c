"""Reliability and safety of the lab itself: bad input, footprint on the host, determinism.

The fast subset runs in CI; the full set (`make reliability`) adds 20 repeated matrices.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _signals import assert_no_trustlab_traceback

from harness import runner, scenarios
from harness.vocab import IDENTITY_IDS

ROOT = Path(__file__).resolve().parents[1]
GOOD = (ROOT / "scenarios" / "nginx" / "good.toml").read_text()


def trustlab(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


# -- bad input: every case is one line on stderr, exit 2, no traceback, nothing written ---------
def _scenario_corpus() -> dict[str, bytes]:
    rng = random.Random(1)
    cases = {
        "empty": b"",
        "whitespace": b"   \n\n",
        "binary garbage": bytes(rng.randrange(256) for _ in range(512)),
        "png header": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        "utf16": GOOD.encode("utf-16"),
        "truncated": GOOD[: len(GOOD) // 3].encode(),
        "truncated mid string": GOOD[: GOOD.index("title") + 12].encode(),
        "huge": b"# " + b"x" * 2_000_000 + b"\n",
        "json instead of toml": json.dumps({"proxy": "nginx"}).encode(),
        "yaml instead of toml": b"proxy: nginx\ntitle: x\n",
        "proxy is a number": GOOD.replace('proxy = "nginx"', "proxy = 1").encode(),
        "title is a table": GOOD.replace("title = ", "xtitle = ")
        .replace("[directives]", "[title]\n[directives]")
        .encode(),
        "sources not a list": GOOD.replace("sources = [", 'sources = "x"\nxsources = [').encode(),
        "control not an id": GOOD.replace('control = "nginx/good"', "")
        .replace('proxy = "nginx"', 'proxy = "nginx"\ncontrol = "good"')
        .encode(),
        "directives not a table": GOOD.replace("[directives]", "directives = 3\n[xdirectives]").encode(),
        "directive value a list": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = ["on"]').encode(),
        "directive with newline": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "on\\nx"').encode(),
        "directive with semicolon": GOOD.replace(
            'proxy_ssl_verify = "on"', 'proxy_ssl_verify = "on; include x"'
        ).encode(),
        "bool directive on nginx": GOOD.replace('proxy_ssl_verify = "on"', "proxy_ssl_verify = true").encode(),
        "expected not a table": GOOD.replace("[expected]", "expected = 1\n[xexpected]").encode(),
        "expected empty": GOOD[: GOOD.index("[expected]")].encode() + b"[expected]\n",
        "unknown outcome": GOOD.replace('legit = "served"', 'legit = "ok"').encode(),
        "unknown identity": GOOD.replace('legit = "served"', 'legit = "served"\nmallory = "spoofed"').encode(),
        "duplicate key": GOOD.replace('legit = "served"', 'legit = "served"\nlegit = "served"').encode(),
        "unknown seat key": (GOOD + "\n[seat]\nrouting = true\n").encode(),
        "seat flag not bool": (GOOD + '\n[seat]\nsni_routing = "yes"\n').encode(),
        "target unknown": GOOD.replace('proxy = "nginx"', 'proxy = "nginx"\ntarget = "dns"').encode(),
        # issue 9
        "nested very deep": b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n",
        "inline tables nested very deep": b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n",
        "directive with CR": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "on\\rx"').encode(),
        "directive with NUL": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "on\\u0000"').encode(),
        "control unknown": GOOD.replace('proxy = "nginx"', 'proxy = "nginx"\ncontrol = "nginx/nope"').encode(),
    }
    return cases


SCENARIO_CORPUS = _scenario_corpus()


@pytest.mark.bad_input
@pytest.mark.parametrize("case", sorted(SCENARIO_CORPUS))
def test_malformed_scenario_files(case: str, tmp_path: Path) -> None:
    bad = tmp_path / "case.toml"
    bad.write_bytes(SCENARIO_CORPUS[case])
    out = tmp_path / "out"
    proc = trustlab("run", str(bad), "--runtime", "local", "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-500:]
    assert str(bad) in lines[0]
    assert len(lines[0]) < 600
    assert not (tmp_path / "r.json").exists() and not out.exists()


@pytest.mark.bad_input
def test_unreadable_paths(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    cases = [
        (["run", str(tmp_path)], "is a directory"),
        (["run", str(tmp_path / "missing.toml")], "no such file"),
        (["run", str(tmp_path / "dangling.toml")], "no such file"),
    ]
    (tmp_path / "dangling.toml").symlink_to(tmp_path / "nowhere")
    for args, needle in cases:
        proc = trustlab(*args)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


BAD_OPTIONS = {
    "out is a file": (["matrix", "--runtime", "local", "--out", "{file}"], "not a directory"),
    "json is a directory": (["matrix", "--runtime", "local", "--json", "{dir}"], "is a directory"),
    "csv in missing dir": (["matrix", "--runtime", "local", "--csv", "{dir}/no/such/x.csv"], "does not exist"),
    "pki mint into a file": (["pki", "mint", "--out", "{file}"], "already exists"),
    "pki mint missing parent": (["pki", "mint", "--out", "{dir}/a/b/c"], "does not exist"),
    "pki show a file": (["pki", "show", "{file}"], "not found"),
    "identity list with a typo": (["run", "nginx/good", "--runtime", "local", "--identity", "legit,,wrong"], "unknown"),
    "empty scenario id": (["run", ""], "neither a scenario id"),
    "present with no lab": (["present", "legit"], "no lab is up"),
    "down unknown lab": (["down", "trustlab-nope"], "no lab"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options(case: str, tmp_path: Path) -> None:
    args, needle = BAD_OPTIONS[case]
    afile = tmp_path / "a-file"
    afile.write_text("x")
    args = [a.replace("{file}", str(afile)).replace("{dir}", str(tmp_path)) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path / "labs")}
    (tmp_path / "labs").mkdir()
    proc = trustlab(*args, env=env)
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "labs"])
    assert list((tmp_path / "labs").iterdir()) == []


# -- issue 9: every bad input that still broke trustlab -------------------------------------------
NGINX_CONF = """events {{}}
http {{
  server {{
    listen 80;
    server_name {server_name};
    location / {{
      proxy_pass https://{upstream};
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate /etc/ssl/internal-pki.pem;
      proxy_ssl_server_name on;{extra}
    }}
  }}
}}
"""


def nginx_conf(upstream: str, *, server_name: str = "www.example.com", extra: str = "") -> str:
    """A real, correct nginx config whose one location proxies to *upstream*."""
    return NGINX_CONF.format(upstream=upstream, server_name=server_name, extra=extra)


def _manifest(tmp: Path, name: str, body: str) -> str:
    (tmp / name).mkdir()
    (tmp / name / "manifest.json").write_text(body)
    return str(tmp / name)


def _fifo(tmp: Path, name: str) -> str:
    os.mkfifo(tmp / name)
    return str(tmp / name)


def _zero(tmp: Path, name: str) -> str:
    (tmp / name).symlink_to("/dev/zero")
    return str(tmp / name)


def _write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _dir_at(tmp: Path, name: str) -> str:
    (tmp / "out" / name).mkdir(parents=True)
    return str(tmp / "out")


NGINX_GOOD_CONF = nginx_conf("api.internal:8443")
LONG = "x" * 5000

#: case -> (setup(tmp) -> argv, the needle of the one-line error, needs the local runtime)
ISSUE9_CASES: dict[str, tuple[Callable[[Path], list[str]], str, bool]] = {
    "scenario symlink to /dev/zero": (
        lambda t: ["run", _zero(t, "z.toml"), "--runtime", "local"],
        "is a device",
        False,
    ),
    "config symlink to /dev/zero (check)": (lambda t: ["check", "nginx", _zero(t, "z.conf")], "is a device", False),
    "config symlink to /dev/zero (audit)": (lambda t: ["audit", _zero(t, "z.conf")], "is a device", False),
    "FIFO scenario (run)": (lambda t: ["run", _fifo(t, "f.toml"), "--runtime", "local"], "is a FIFO", False),
    "FIFO config (check)": (lambda t: ["check", "nginx", _fifo(t, "f.conf")], "is a FIFO", False),
    "FIFO config (audit)": (lambda t: ["audit", _fifo(t, "f.conf")], "is a FIFO", False),
    "5000-character scenario id": (lambda t: ["run", LONG, "--runtime", "local"], "5000 characters", False),
    "5000-character scenario file": (lambda t: ["run", LONG + ".toml", "--runtime", "local"], "cannot read", False),
    "5000-character lab id": (lambda t: ["down", LONG], "no lab", False),
    "5000-character config path": (lambda t: ["check", "nginx", LONG], "cannot read", False),
    "upstream with an underscore": (
        lambda t: ["check", "nginx", _write(t, "c.conf", nginx_conf("my_backend:8443"))],
        "holds '_'",
        True,
    ),
    "non-ASCII upstream": (
        lambda t: ["check", "nginx", _write(t, "c.conf", nginx_conf("bäckend.internal:8443"))],
        "not ASCII",
        True,
    ),
    "upstream label over 63 characters": (
        lambda t: ["check", "nginx", _write(t, "c.conf", nginx_conf("a" * 64 + ".internal:8443"))],
        "at most 63",
        True,
    ),
    "server_name with CR LF escapes": (
        lambda t: [
            "check",
            "nginx",
            _write(t, "c.conf", nginx_conf("api.internal:8443", server_name='"a\\r\\nX-Evil: 1"')),
        ],
        "not a host name a client can send",
        True,
    ),
    "run --json /proc/x.json": (
        lambda t: ["run", "nginx/good", "--runtime", "local", "--json", "/proc/x.json"],
        "--json: cannot write to /proc",
        False,
    ),
    "check --json /proc/x.json": (
        lambda t: ["check", "nginx", _write(t, "c.conf", NGINX_GOOD_CONF), "--json", "/proc/x.json"],
        "--json: cannot write to /proc",
        False,
    ),
    "matrix --out DIR whose matrix.json is a directory": (
        lambda t: ["matrix", "--runtime", "local", "--no-plot", "--out", _dir_at(t, "matrix.json")],
        "matrix.json is a directory",
        False,
    ),
    "matrix --out DIR whose matrix.csv is a directory": (
        lambda t: ["matrix", "--runtime", "local", "--no-plot", "--out", _dir_at(t, "matrix.csv")],
        "matrix.csv is a directory",
        False,
    ),
    "matrix --out /proc/out": (
        lambda t: ["matrix", "--runtime", "local", "--out", "/proc/out"],
        "--out: cannot write",
        False,
    ),
    "matrix --json X --csv X": (
        lambda t: ["matrix", "--runtime", "local", "--json", str(t / "x"), "--csv", str(t / "." / "x")],
        "both name",
        False,
    ),
    "matrix --json OUT/matrix.csv": (
        lambda t: ["matrix", "--runtime", "local", "--out", str(t), "--json", str(t / "matrix.csv")],
        "both name",
        False,
    ),
    "check --json pointed at the config": (
        lambda t: ["check", "nginx", _write(t, "c.conf", NGINX_GOOD_CONF), "--json", str(t / "c.conf")],
        "would overwrite it",
        False,
    ),
    "run --json pointed at the scenario": (
        lambda t: ["run", _write(t, "s.toml", GOOD), "--runtime", "local", "--json", str(t / "s.toml")],
        "would overwrite it",
        False,
    ),
    "pki mint --out /proc/pki": (lambda t: ["pki", "mint", "--out", "/proc/pki"], "--out: cannot create", False),
    "pki mint --backend-ip notanip": (
        lambda t: ["pki", "mint", "--out", str(t / "pki"), "--backend-ip", "notanip"],
        "not an IP address",
        False,
    ),
    "pki show: identities a list": (
        lambda t: ["pki", "show", _manifest(t, "m", '{"identities": [1]}')],
        "not a trustlab PKI manifest",
        False,
    ),
    "pki show: a row without fields": (
        lambda t: ["pki", "show", _manifest(t, "m", '{"identities": {"a": {"identity": 1}}}')],
        "not a trustlab PKI manifest",
        False,
    ),
    "pki show: wrong field types": (
        lambda t: [
            "pki",
            "show",
            _manifest(
                t,
                "m",
                json.dumps(
                    {
                        "identities": {
                            "a": {
                                "identity": "a",
                                "legitimate": True,
                                "meaning": "",
                                "subject": "",
                                "sans": "DNS:x",
                                "issuer": "",
                                "not_before": "",
                                "not_after": "",
                                "chain_served": 1,
                            }
                        }
                    }
                ),
            ),
        ],
        "not a trustlab PKI manifest",
        False,
    ),
    "pki show: a top-level list": (lambda t: ["pki", "show", _manifest(t, "m", "[]")], "not a trustlab PKI", False),
    "pki show: nested very deep": (
        lambda t: ["pki", "show", _manifest(t, "m", "[" * 100_000 + "]" * 100_000)],
        "not a trustlab PKI",
        False,
    ),
    "pki show: a FIFO manifest": (
        lambda t: ["pki", "show", (os.mkdir(t / "m"), _fifo(t / "m", "manifest.json"))[1].rsplit("/", 1)[0]],
        "is a FIFO",
        False,
    ),
    "audit --proxy haproxy on an nginx config": (
        lambda t: ["audit", "--proxy", "haproxy", _write(t, "c.conf", NGINX_GOOD_CONF)],
        "looks like a config for nginx",
        False,
    ),
    "audit --proxy apache on an haproxy config": (
        lambda t: ["audit", "--proxy", "apache", str(ROOT / "tests" / "configs" / "haproxy-good.cfg")],
        "looks like a config for haproxy",
        False,
    ),
}


def _snapshot(root: Path) -> dict[str, str]:
    """Every regular file under *root* with its digest (inputs must come out unchanged)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and not stat.S_ISFIFO(p.lstat().st_mode):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "case",
    [  # a case that needs a lab runs the proxy: the integration tier
        pytest.param(c, marks=pytest.mark.integration) if ISSUE9_CASES[c][2] else c for c in sorted(ISSUE9_CASES)
    ],
)
def test_issue9_bad_inputs(case: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    setup, needle, needs_lab = ISSUE9_CASES[case]
    if needs_lab:
        request.getfixturevalue("local_runtime")
    labs = tmp_path / "labs"
    labs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    args = setup(work)
    before = _snapshot(work)
    t0 = time.perf_counter()
    proc = trustlab(*args, env={**os.environ, "TRUSTLAB_TMPDIR": str(labs)})  # a hang fails: timeout=120
    took = time.perf_counter() - t0
    assert proc.returncode == 2, (case, proc.returncode, proc.stdout[-500:], proc.stderr[-800:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-800:]
    assert needle in lines[0], lines[0]
    assert len(lines[0]) < 600, len(lines[0])
    assert took < 30, f"{case}: {took:.1f} s"
    assert _snapshot(work) == before, "an input was changed or something was written"
    assert list(labs.iterdir()) == []


@pytest.fixture
def full_dir() -> Iterator[Path]:
    """A real file system with no space left (a 1 MB tmpfs, filled)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    path = Path(tempfile.mkdtemp(prefix="tl-full-", dir="/tmp"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)]).returncode != 0:
        path.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(path / "filler", "wb") as fh, contextlib.suppress(OSError):
            fh.write(b"\0" * 2_000_000)
        yield path
    finally:
        subprocess.run(["umount", str(path)])
        path.rmdir()


@pytest.mark.bad_input
@pytest.mark.parametrize("cmd", ["run", "check", "up"])
def test_a_full_lab_root_is_one_line_not_error_cells(
    local_runtime: str, full_dir: Path, tmp_path: Path, cmd: str
) -> None:
    args = {
        "run": ["run", "nginx/good", "--runtime", "local"],
        "check": ["check", "nginx", _write(tmp_path, "c.conf", NGINX_GOOD_CONF)],
        "up": ["up", "nginx/good", "--runtime", "local"],
    }[cmd]
    proc = trustlab(*args, env={**os.environ, "TRUSTLAB_TMPDIR": str(full_dir)})
    assert proc.returncode == 2, (proc.stdout[-500:], proc.stderr[-500:])
    assert "the lab root is full" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in full_dir.iterdir()) == ["filler"]


@pytest.mark.bad_input
@pytest.mark.parametrize("what", ["missing", "a file"])
def test_trustlab_tmpdir_missing_or_a_file(local_runtime: str, tmp_path: Path, what: str) -> None:
    target = tmp_path / "nope"
    if what == "a file":
        target.write_text("x")
    for args in (
        ["run", "nginx/good", "--runtime", "local"],
        ["check", "nginx", _write(tmp_path, "c.conf", NGINX_GOOD_CONF)],
        ["up", "nginx/good", "--runtime", "local"],
        ["status"],
        ["down"],
    ):
        proc = trustlab(*args, env={**os.environ, "TRUSTLAB_TMPDIR": str(target)})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert f"TRUSTLAB_TMPDIR={target}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.bad_input
def test_a_non_ascii_scenario_file_name_runs(local_runtime: str, tmp_path: Path) -> None:
    """Under LC_ALL=C too: the worker sent the name raw in the request line (UnicodeEncodeError)."""
    scen = tmp_path / "vérifié.toml"
    scen.write_text(GOOD)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = trustlab("run", str(scen), "--runtime", "local", "--json", str(tmp_path / "r.json"), env=env)
    assert proc.returncode == 0, proc.stderr[-800:]
    cells = json.loads((tmp_path / "r.json").read_text())["cells"]
    assert {c["identity"]: c["outcome"] for c in cells}["legit"] == "served"
    # The built-in impostors (a good also runs cn-only, which nginx's CN fallback lets through).
    assert {
        c["outcome"]
        for c in cells
        if c["identity"] in IDENTITY_IDS and c["identity"] not in ("legit", "legit-no-chain")
    } == {"blocked"}


# -- the lab's own names, and IPv6, with real nginx ------------------------------------------------
@pytest.mark.bad_input
@pytest.mark.serial  # timed: < 8 s
@pytest.mark.parametrize("upstream", ["backend-api.internal:8443", "other-svc.internal:8443"])
def test_a_correct_config_using_the_labs_own_names_passes(local_runtime: str, tmp_path: Path, upstream: str) -> None:
    """The lab's hosts file listed backend-api.internal twice (nginx round-robined: legit became
    error); and wrong-name's sibling must not be the config's own upstream."""
    from harness.check import check

    conf = tmp_path / "c.conf"
    conf.write_text(nginx_conf(upstream))
    t0 = time.perf_counter()
    result = check("nginx", conf)
    took = time.perf_counter() - t0
    assert result.ok, result.summary()
    assert result.outcome("legit") == "served" and result.outcome("wrong-name") == "blocked"
    assert took < 8, f"{took:.1f} s (the collision made it 8 s)"


@pytest.mark.bad_input
@pytest.mark.parametrize("upstream", ["[fd00::10]:8443", "[::1]:8443"])
def test_ipv6_upstreams_are_checked_for_real(local_runtime: str, tmp_path: Path, upstream: str) -> None:
    """The seat listens where the upstream points (it listened on IPv4 only: error on every cell;
    [::1] aborted the lab)."""
    from harness.check import check

    good = tmp_path / "good.conf"
    good.write_text(nginx_conf(upstream, extra="\n      proxy_ssl_name api.internal;"))
    result = check("nginx", good)
    assert result.ok, result.summary()
    assert all(c.sni == "api.internal" for c in result.cells if c.identity == "legit")
    # without proxy_ssl_name nginx checks the certificate against "[fd00::10]" (brackets and
    # all): the legitimate backend (named api.internal) is blocked, for real
    bare = tmp_path / "bare.conf"
    bare.write_text(nginx_conf(upstream))
    result = check("nginx", bare)
    assert result.outcome("legit") == "blocked" and "does not match" in result.cells[0].reason
    assert not any(c.outcome == "error" for c in result.cells), result.summary()


def test_error_cells_are_errors_in_the_summary() -> None:
    from harness.check import CheckCell, CheckResult
    from harness.vocab import Outcome

    cells = [
        CheckCell("u", "legit", Outcome.SERVED, 200, "ok", "u"),
        CheckCell("u", "rogue-ca", Outcome.ERROR, 502, "no live upstreams", "u"),
        CheckCell("u", "expired", Outcome.SPOOFED, 200, "response from impostor expired", "u"),
    ]
    summary = CheckResult("nginx", "c.conf", [], cells).summary()
    rogue, expired = (ln for ln in summary.splitlines() if "->" in ln)
    assert "error" in rogue and "impostor got through" not in rogue, rogue
    assert "impostor got through" in expired


# -- a proxy that dies before listening says how ------------------------------------------------
def _nginx_proxy(run_dir: Path, port: int, conf: Path | None = None, *, probe: int | None = None):  # type: ignore[no-untyped-def]
    """An nginx listening on *port*; its readiness is asked on *probe* (default: the same port)."""
    from harness.runtimes.contract import ProxySpec
    from harness.runtimes.nsworker import Proxy

    conf = conf or run_dir / "nginx.conf"
    conf.write_text(
        f"daemon off; master_process off; pid {run_dir}/nginx.pid; error_log {run_dir}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; return 200; }} }}\n"
    )
    return Proxy(
        ProxySpec("k", "nginx", port if probe is None else probe, str(run_dir), str(run_dir / "error.log"), str(conf))
    )


@pytest.mark.bad_input
def test_a_proxy_killed_before_listening_is_an_error_that_says_so(local_runtime: str, tmp_path: Path) -> None:
    import socket

    from harness.runtimes.contract import CellEvent

    # nginx runs (a valid config on a free port) while its readiness is asked on a port bound and
    # never listened on: only its death ends the wait. (Port 0 raced: nginx refuses it and exits
    # by itself, under load before the SIGKILL arrived.)
    with socket.socket() as free, socket.socket() as never:
        free.bind(("127.0.0.1", 0))
        never.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        proxy = _nginx_proxy(tmp_path, port, probe=never.getsockname()[1])
        proxy.start()
        assert proxy.proc is not None
        os.kill(proxy.proc.pid, signal.SIGKILL)
        event = proxy.wait_ready(time.perf_counter() + 10)
    assert not event.started and event.died, event
    assert "killed by SIGKILL" in event.message
    cell = CellEvent.never_listened(event, "legit")
    assert cell.outcome == "error" and "killed by SIGKILL" in cell.reason  # not config-rejected


@pytest.mark.bad_input
def test_a_proxy_out_of_disk_is_an_error_that_says_so(local_runtime: str, full_dir: Path, tmp_path: Path) -> None:
    run_dir = full_dir / "run"
    run_dir.mkdir()
    proxy = _nginx_proxy(run_dir, 0, conf=tmp_path / "nginx.conf")
    proxy.start()
    try:
        event = proxy.wait_ready(time.perf_counter() + 10)
    finally:
        proxy.stop()  # also closes the worker's own descriptor of its stdout (the mount is unmounted next)
    assert not event.started and event.died, event
    assert "no space left on device" in event.message


# -- interrupts: measured, with a generous bound -------------------------------------------------
def _stop_time(args: list[str], labs: Path, *, sig: int, ready: Callable[[], bool]) -> tuple[float, int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRUSTLAB_TMPDIR": str(labs)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the run
    assert proc.poll() is None, "it finished before the signal; make the run longer"
    t0 = time.perf_counter()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return time.perf_counter() - t0, proc.returncode, err


def _workers_running(labs: Path) -> bool:
    # A proxy runs: its sandbox's command line names its run directory under *labs*. (Its logs
    # are no sign: a run directory is a tmpfs in the lab worker's mount namespace, issue 26.)
    return bool(_lab_processes(str(labs)))


@pytest.mark.integration
@pytest.mark.serial  # timed: stops in < 5 s
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_check_stops_soon_after_an_interrupt(local_runtime: str, short_tmp: Path, sig: int) -> None:
    """80 upstreams take ~40 s to check; Ctrl-C used to wait for all of them (38-40 s)."""
    locations = "\n".join(
        f"    location /u{i}/ {{ proxy_pass https://svc{i}.internal:8443; proxy_ssl_verify on;\n"
        "      proxy_ssl_trusted_certificate /etc/ssl/internal-pki.pem; proxy_ssl_server_name on; }"
        for i in range(80)
    )
    conf = short_tmp / "c80.conf"
    conf.write_text(f"events {{}}\nhttp {{\n  server {{\n    listen 80;\n{locations}\n  }}\n}}\n")
    labs = short_tmp / "labs"
    labs.mkdir()
    args = ["check", "nginx", str(conf), "--runtime", "local"]
    took, code, err = _stop_time(args, labs, sig=sig, ready=lambda: _workers_running(labs))
    print(f"check (80 upstreams) stopped {took:.3f} s after {signal.Signals(sig).name}")
    assert code == 130 and "Traceback" not in err, (code, err)
    assert took < 5, f"check took {took:.1f} s to stop"
    assert list(labs.iterdir()) == []
    assert _lab_processes(str(labs)) == []


@pytest.mark.integration
@pytest.mark.serial  # timed: stops in < 5 s
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_matrix_stops_soon_after_an_interrupt(local_runtime: str, short_tmp: Path, sig: int) -> None:
    """unshare --fork ignores SIGTERM: stopping a matrix waited 5 s per worker (10-11 s)."""
    labs = short_tmp / "labs"
    labs.mkdir()
    took, code, err = _stop_time(
        ["matrix", "--runtime", "local", "--no-plot", "--out", str(short_tmp / "out")],
        labs,
        sig=sig,
        ready=lambda: _workers_running(labs),
    )
    print(f"matrix stopped {took:.3f} s after {signal.Signals(sig).name}")
    assert code == 130 and "Traceback" not in err, (code, err)
    assert took < 5, f"the matrix took {took:.1f} s to stop"
    assert list(labs.iterdir()) == []
    deadline = time.monotonic() + 5
    while _lab_processes(str(labs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lab_processes(str(labs)) == []


def test_a_config_the_proxy_rejects_is_shown_verbatim(local_runtime: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "maybe"'))
    proc = trustlab("run", str(bad), "--runtime", "local")
    assert proc.returncode == 1  # the run happened; every cell is config-rejected, not as expected
    # Verbatim, folded under its cell at 80 columns (trustlab run --wide keeps it on one line).
    assert 'invalid value "maybe" in "proxy_ssl_verify" directive' in " ".join(proc.stdout.split())


# -- footprint ----------------------------------------------------------------------------------
def _listeners() -> set[str]:
    out = subprocess.run(["ss", "-H", "-ltnu"], capture_output=True, text=True).stdout
    return {ln.split()[4] for ln in out.splitlines() if len(ln.split()) > 4}


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


HOST_FILES = ("/etc/hosts", "/etc/ssl/certs/ca-certificates.crt", "/etc/resolv.conf")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.integration
def test_no_footprint_on_the_host(local_runtime: str, short_tmp: Path) -> None:
    if not shutil.which("ss"):
        pytest.skip("ss (iproute2) is not installed")
    before_files = {f: _digest(f) for f in HOST_FILES}
    before_listen = _listeners()
    # No docker daemon here: `down --all` would otherwise also sweep a shared daemon's labs.
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(short_tmp), "DOCKER_HOST": f"unix://{short_tmp}/no-docker.sock"}
    assert trustlab("up", "nginx/good", "--runtime", "local", env=env).returncode == 0
    try:
        during = _listeners() - before_listen
        assert during == set(), f"the lab listens on the host: {during}"
        (lab,) = short_tmp.glob("trustlab.*/trustlab-*")
        assert stat.S_IMODE(lab.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(lab.stat().st_mode) == 0o700
        assert stat.S_IMODE((lab / "pki").stat().st_mode) == 0o700
        keys = list(lab.rglob("*.key"))
        assert keys and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
        # the lab's own hosts file is bind-mounted in its namespace only
        assert "backend-api.internal" not in Path("/etc/hosts").read_text()
    finally:
        trustlab("down", env=env)  # never --all in tests: it removes other people's docker labs
    assert {f: _digest(f) for f in HOST_FILES} == before_files
    # only the (empty) private held-lab directory is left
    assert [p.name for p in short_tmp.iterdir()] == [f"trustlab.{os.geteuid()}"]
    assert list(short_tmp.glob("*/*")) == []


@pytest.mark.integration
def test_host_files_unchanged_by_a_matrix(local_matrix: runner.Results) -> None:
    # local_matrix already ran; /etc/hosts never names the lab's backend
    assert "backend-api.internal" not in Path("/etc/hosts").read_text()


# -- interruption at random points ---------------------------------------------------------------
def _lab_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if marker in ln and not ln.startswith("Z") and "ps -ww" not in ln]


_POINTS = random.Random(20261127)
INTERRUPTS = [
    (cmd, sig, round(_POINTS.uniform(0.0, 1.2), 3))
    for cmd in ("run", "matrix")
    for sig in (signal.SIGINT, signal.SIGTERM)
    for _ in range(2)
]


@pytest.mark.integration
@pytest.mark.parametrize(("cmd", "sig", "delay"), INTERRUPTS)
def test_interrupt_at_a_random_point_leaves_nothing(
    local_runtime: str, short_tmp: Path, cmd: str, sig: int, delay: float
) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(short_tmp / "labs")}
    (short_tmp / "labs").mkdir()
    args = ["run", *sorted(scenarios.builtin())[:12]] if cmd == "run" else ["matrix", "--no-plot"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args, "--runtime", "local", "--json", str(short_tmp / "r.json")]
        + (["--out", str(short_tmp / "out")] if cmd == "matrix" else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    time.sleep(delay)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the whole foreground process group
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert_no_trustlab_traceback(err)
    # 0/1: it finished before the signal; -SIGINT/-SIGTERM: killed while CPython was still starting,
    # before any handler existed (nothing had been started yet); 130/143: 128 + the signal, from the
    # entry point's quiet handler while the CLI was still importing (harness/__main__.py) or the
    # CLI's own; 1 also: CPython's own start-up traceback (see assert_no_trustlab_traceback)
    allowed = (0, 1, 128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)
    assert proc.returncode in allowed, (proc.returncode, err)
    deadline = time.monotonic() + 5
    while _lab_processes(str(short_tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lab_processes(str(short_tmp)) == []
    assert list((short_tmp / "labs").iterdir()) == []
    # nothing half-written: a report is either absent or complete (written atomically), and no
    # temp file of an interrupted write is left (the signal may land after the cells, mid-reports)
    if (short_tmp / "r.json").exists():
        assert json.loads((short_tmp / "r.json").read_text())["cells"]
    assert not [p for p in short_tmp.rglob(".*") if p.is_file()]


# -- determinism (full set: make reliability) ------------------------------------------------------
@pytest.mark.slow
def test_twenty_matrices_in_random_orders_agree(local_matrix: runner.Results) -> None:
    for seed in range(20):
        again = runner.run(scenarios.select(), runtime="local", seed=seed, shards=1 + seed % 3)
        assert again.outcomes() == local_matrix.outcomes(), f"run {seed} differs"
        assert len(again.cells) == sum(len(s.identities) for s in scenarios.builtin().values())
