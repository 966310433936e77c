"""``trustlab workshop``: preflight says READY on a machine that can grade, and the offline bundle installs.

The bundle test is the CI check of the instructor's kit: it builds a bundle, installs trustlab
from its wheelhouse with ``pip install --no-index`` into a fresh venv, and runs that venv's
``trustlab workshop preflight`` on the real servers.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.course.workshop import preflight


@pytest.mark.integration
def test_preflight_is_ready_here(local_runtime: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workshop", "preflight", "--runtime", "local"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("READY (local runtime")
    assert out.count("smoke run:") == 3 and "FIX" not in out


def test_preflight_names_what_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harness.proxies import driver

    drv = type(driver("haproxy"))
    monkeypatch.setattr(drv, "find_binary", lambda self: None)
    report = preflight(runtime="local")
    assert not report.ready
    fixes = [line for line in report.lines if "FIX" in line]
    assert fixes and "sudo apt-get install haproxy" in fixes[0]
    assert report.lines[-1].startswith("NOT READY")


def test_bundle_refuses_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "x").write_text("x")
    assert main(["workshop", "bundle", str(tmp_path / "kit")]) == 2
    assert "not an empty directory" in capsys.readouterr().err


@pytest.mark.integration
def test_bundle_installs_offline_and_preflight_is_ready(local_runtime: str, tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    assert main(["workshop", "bundle", str(kit), "--extras", "", "--no-images", "--no-notebooks"]) == 0
    assert not (tmp_path / "kit.partial").exists()
    manifest = json.loads((kit / "manifest.json").read_text())
    assert any(name.startswith("wheelhouse/trustlab-") for name in manifest["files"])
    readme, install = (kit / "README.md").read_text(), (kit / "install.sh").read_text()
    assert "pip install -q --no-index --find-links wheelhouse" in install
    # The wheelhouse says where it installs, and install.sh refuses elsewhere in one line (issue 21).
    here = f"{platform.system()} {platform.machine()} with Python {sys.version_info[0]}.{sys.version_info[1]}"
    assert here in readme and "docker load -i trustlab-images.tar" in readme
    for var, value in (("TRUSTLAB_KIT_OS", "Darwin"), ("TRUSTLAB_KIT_ARCH", "arm64"), ("TRUSTLAB_KIT_PYTHON", "3.9")):
        refused = subprocess.run(
            ["sh", str(kit / "install.sh")], capture_output=True, text=True, timeout=60, env={**os.environ, var: value}
        )
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "classroom image" in refused.stderr and not (kit / "trustlab-venv").exists()
    assert (kit / "docs" / "INSTRUCTOR.md").is_file()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(kit / "wheelhouse"), "trustlab"],
        check=True,
        timeout=900,
        env=env,
    )
    # Outside the checkout: the installed package must carry its own challenges and templates.
    proc = subprocess.run(
        [str(venv / "bin" / "trustlab"), "workshop", "preflight", "--runtime", "local"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "READY" in proc.stdout.splitlines()[-1]
    listed = subprocess.run(
        [str(venv / "bin" / "trustlab"), "challenge", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    assert len(json.loads(listed.stdout)["challenges"]) >= 15
