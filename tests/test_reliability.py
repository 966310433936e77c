"""Reliability and safety of the lab itself: bad input, footprint on the host, determinism.

The fast subset runs in CI; the full set (`make reliability`) adds 20 repeated matrices.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from pathlib import Path

import pytest
from _signals import assert_no_trustlab_traceback

from harness import runner, scenarios

ROOT = Path(__file__).resolve().parents[1]
GOOD = (ROOT / "scenarios" / "nginx" / "good.toml").read_text()


def trustlab(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


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
        "title is a table": GOOD.replace('title = ', 'xtitle = ').replace("[directives]", "[title]\n[directives]")
        .encode(),
        "sources not a list": GOOD.replace("sources = [", 'sources = "x"\nxsources = [').encode(),
        "control not an id": GOOD.replace('control = "nginx/good"', "") .replace('proxy = "nginx"',
                                                                                    'proxy = "nginx"\ncontrol = "good"')
        .encode(),
        "directives not a table": GOOD.replace("[directives]", "directives = 3\n[xdirectives]").encode(),
        "directive value a list": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = ["on"]').encode(),
        "directive with newline": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "on\\nx"').encode(),
        "directive with semicolon": GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "on; include x"')
        .encode(),
        "bool directive on nginx": GOOD.replace('proxy_ssl_verify = "on"', "proxy_ssl_verify = true").encode(),
        "expected not a table": GOOD.replace("[expected]", "expected = 1\n[xexpected]").encode(),
        "expected empty": GOOD[: GOOD.index("[expected]")].encode() + b"[expected]\n",
        "unknown outcome": GOOD.replace('legit = "served"', 'legit = "ok"').encode(),
        "unknown identity": GOOD.replace('legit = "served"', 'legit = "served"\nmallory = "spoofed"').encode(),
        "duplicate key": GOOD.replace('legit = "served"', 'legit = "served"\nlegit = "served"').encode(),
        "unknown seat key": (GOOD + "\n[seat]\nrouting = true\n").encode(),
        "seat flag not bool": (GOOD + "\n[seat]\nsni_routing = \"yes\"\n").encode(),
        "target unknown": GOOD.replace('proxy = "nginx"', 'proxy = "nginx"\ntarget = "dns"').encode(),
    }
    return cases


SCENARIO_CORPUS = _scenario_corpus()


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
    "identity list with a typo": (["run", "nginx/good", "--runtime", "local", "--identity", "legit,,wrong"],
                                  "unknown"),
    "empty scenario id": (["run", ""], "neither a scenario id"),
    "present with no lab": (["present", "legit"], "no lab is up"),
    "down unknown lab": (["down", "trustlab-nope"], "no lab"),
}


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


def test_a_config_the_proxy_rejects_is_shown_verbatim(local_runtime: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('proxy_ssl_verify = "on"', 'proxy_ssl_verify = "maybe"'))
    proc = trustlab("run", str(bad), "--runtime", "local")
    assert proc.returncode == 1  # the run happened; every cell is config-rejected, not as expected
    assert 'invalid value "maybe" in "proxy_ssl_verify" directive' in proc.stdout


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
        (lab,) = short_tmp.glob("trustlab-*")
        assert stat.S_IMODE(lab.stat().st_mode) == 0o700
        assert stat.S_IMODE((lab / "pki").stat().st_mode) == 0o700
        keys = list(lab.rglob("*.key"))
        assert keys and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
        # the lab's own hosts file is bind-mounted in its namespace only
        assert "backend-api.internal" not in Path("/etc/hosts").read_text()
    finally:
        trustlab("down", "--all", env=env)
    assert {f: _digest(f) for f in HOST_FILES} == before_files
    assert list(short_tmp.iterdir()) == []


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
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    time.sleep(delay)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the whole foreground process group
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert_no_trustlab_traceback(err)
    # 0/1: it finished before the signal; -SIGTERM: killed while Python was still starting,
    # before the CLI installed its handler (nothing had been started yet)
    assert proc.returncode in (0, 1, 130, -signal.SIGTERM), (proc.returncode, err)  # 1: CPython's own
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
