""".ci/docker-setup decides what to install by what is really missing: the daemon, not the client.

A fresh machine of the project's kind has a docker *client* on PATH and no daemon; the set-up once
looked for `docker`, found the client, never installed docker.io and failed after 86 s. These tests
run its `--plan` mode against fake machines built from stub executables.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / ".ci" / "docker-setup"


def _stub(bindir: Path, name: str, *, rc: int = 0) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(f"#!/bin/sh\nexit {rc}\n")
    path.chmod(0o755)


def plan(tmp_path: Path, *, on_path: dict[str, int], in_sbin: tuple[str, ...] = ()) -> list[str]:
    """The packages docker-setup would install on a machine with exactly these executables."""
    bindir, sbin = tmp_path / "bin", tmp_path / "sbin"
    bindir.mkdir(exist_ok=True)
    for name, rc in on_path.items():
        _stub(bindir, name, rc=rc)
    for name in in_sbin:
        _stub(sbin, name)
    proc = subprocess.run(
        ["/bin/bash", str(SETUP), "--plan"],
        env={"PATH": str(bindir), "TRUSTLAB_SETUP_SBIN": str(sbin)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_a_client_without_a_daemon_gets_the_daemon_installed(tmp_path: Path) -> None:
    # `docker info` fails: the state of a fresh machine (client preinstalled, no daemon).
    assert plan(tmp_path, on_path={"docker": 1}) == ["docker.io", "mmdebstrap"]


def test_an_installed_daemon_that_is_not_running_is_not_reinstalled(tmp_path: Path) -> None:
    packages = plan(tmp_path, on_path={"docker": 1, "mmdebstrap": 0}, in_sbin=("dockerd", "containerd"))
    assert packages == []


def test_a_running_daemon_needs_nothing(tmp_path: Path) -> None:
    assert plan(tmp_path, on_path={"docker": 0, "mmdebstrap": 0}) == []


@pytest.mark.parametrize("missing", ["dockerd", "containerd"])
def test_half_a_daemon_is_completed(tmp_path: Path, missing: str) -> None:
    present = tuple(n for n in ("dockerd", "containerd") if n != missing)
    assert plan(tmp_path, on_path={"docker": 1, "mmdebstrap": 0}, in_sbin=present) == ["docker.io"]


def test_no_client_at_all(tmp_path: Path) -> None:
    assert plan(tmp_path, on_path={}) == ["docker.io", "mmdebstrap"]
