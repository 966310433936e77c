"""`trustlab down` needs the docker SDK only when there is a docker lab to stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Runs trustlab with `import docker` failing, as on an install without the [docker] extra.
_WITHOUT_SDK = """
import sys
class _NoDocker:
    def find_spec(self, name, path=None, target=None):
        if name == "docker" or name.startswith("docker."):
            raise ImportError("No module named 'docker'")
        return None
sys.meta_path.insert(0, _NoDocker())
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["down"], ["down", "--all"], ["status"]])
def test_down_and_status_work_without_the_docker_sdk(tmp_path: Path, args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SDK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TRUSTLAB_TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.strip() in ("nothing to stop", "no lab is up")


def test_down_of_an_unknown_lab_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SDK, "down", "trustlab-nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TRUSTLAB_TMPDIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "trustlab: error: no lab 'trustlab-nosuch' is up; `trustlab status` lists them"
    ]
