"""`trustlab doctor` reports what runs, and finds labs left behind by a killed run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def trustlab(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=60, env=env)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_doctor_reports_proxies_and_namespaces(local_runtime: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = trustlab(env, "doctor")
    assert proc.returncode == 0, proc.stdout
    for needle in ("nginx", "apache", "haproxy", "namespaces", "ready: the local"):
        assert needle in proc.stdout


def test_doctor_finds_a_stale_lab_and_down_all_removes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "trustlab-killed1"
    (stale / "pki").mkdir(parents=True)
    (stale / "pki" / "legit.key").write_text("secret")
    (stale / "owner.pid").write_text(f"{dead_pid()}\n")
    alive = tmp_path / "trustlab-alive01"
    alive.mkdir()
    (alive / "owner.pid").write_text(f"{os.getpid()}\n")
    # No docker daemon here: `down --all` would otherwise also sweep a shared daemon's labs.
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    doctor = trustlab(env, "doctor")
    assert "stale labs left by a killed run: 1" in doctor.stdout
    assert "trustlab down --all" in doctor.stdout
    # the local sweep `down --all` runs (the command itself would also remove every docker lab
    # on the machine, other people's included: never in a test)
    from harness import runner

    monkeypatch.setenv("TRUSTLAB_TMPDIR", str(tmp_path))
    assert [p.name for p in runner.sweep()] == [stale.name]
    assert not stale.exists()
    assert alive.exists()  # a lab whose owner is alive is never swept
