"""`trustlab up / status / present / down`: a lab kept running, reachable only via a unix socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _signals import assert_no_trustlab_traceback

pytestmark = pytest.mark.integration


def trustlab(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def curl(sock: str) -> dict[str, str]:
    out = subprocess.run(["curl", "-s", "-i", "--unix-socket", sock, "http://www.trustlab.test/"],
                         capture_output=True, text=True, timeout=10).stdout
    return {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()[1:] if ":" in ln)}


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short directory: unix socket paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_present_status_down(local_runtime: str, tmp_path: Path) -> None:
    # No docker daemon here: `down --all` would otherwise also sweep a shared daemon's labs.
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    up = trustlab(env, "up", "nginx/verify-off", "--runtime", "local")
    assert up.returncode == 0, up.stderr
    try:
        (state_file,) = tmp_path.glob("trustlab-*/state.json")
        state = json.loads(state_file.read_text())
        assert curl(state["socket"])["x-trustlab-identity"] == "legit"
        assert trustlab(env, "present", "rogue-ca").returncode == 0
        assert curl(state["socket"])["x-trustlab-identity"] == "rogue-ca"  # verify-off: spoofed
        status = trustlab(env, "status", "--log")
        assert "nginx/verify-off" in status.stdout and "as rogue-ca" in status.stdout
        assert "unknown" in trustlab(env, "present", "rouge-ca").stderr
    finally:
        down = trustlab(env, "down", "--all")
    assert down.returncode == 0, down.stderr
    time.sleep(0.2)
    assert list(tmp_path.glob("trustlab-*")) == []
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    assert [ln for ln in ps.splitlines() if str(tmp_path) in ln and not ln.startswith("Z")] == []


def test_up_shows_a_config_the_proxy_rejects(local_runtime: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = trustlab(env, "up", "haproxy/defaults", "--runtime", "local")
    assert proc.returncode == 2
    assert "verify is enabled by default but no CA file specified" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_interrupting_up_leaves_no_lab(local_runtime: str, tmp_path: Path, delay: float) -> None:
    # No docker daemon here: `down --all` would otherwise also sweep a shared daemon's labs.
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "apache/good", "--runtime", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert_no_trustlab_traceback(err)
    if proc.returncode == 0:  # it was up before the signal: a lab the user was told about
        assert trustlab(env, "down", "--all").returncode == 0
    else:  # interrupted: 130, or (rarely) the status of a process ended by SIGINT itself
        assert proc.returncode in (1, 130, -signal.SIGINT), err  # 1: inside CPython's start-up
    deadline = time.monotonic() + 15
    while list(tmp_path.glob("trustlab-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("trustlab-*")) == []
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    assert [ln for ln in ps.splitlines() if str(tmp_path) in ln and not ln.startswith("Z")] == []
