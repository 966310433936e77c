"""`trustlab classroom`: JupyterLab with the notebooks in one container, its labs on docker.

Needs the docker runtime (daemon + lab image) and the host's pip index for the first build of
``trustlab/classroom:current`` (a no-op afterwards). Every container this module starts has its
own name and is removed, with the labs it started, at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.course import classroom
from harness.runtimes import docker as dockerrt
from harness.runtimes import images

# One xdist worker for test_hub and test_classroom: both fixtures build (or find up to date) the
# classroom image, and two builds at once on one daemon fail (the hub's fixture did, in parallel).
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("classroom")]


@pytest.fixture(scope="module")
def room(request: pytest.FixtureRequest, docker_ready: str) -> Any:
    built = classroom.build(progress=lambda _: None)
    name = f"trustlab-classroom-test-{os.getpid()}"
    started = classroom.start(port=0, name=name, progress=lambda _: None)
    c = images.client()
    size = c.images.get(classroom.IMAGE).attrs["Size"]
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        verb = "up to date" if built.skipped else f"built in {built.duration_s:.1f} s {built.steps}"
        print(
            f"\n[classroom] image {size / 1e6:.0f} MB ({verb}); JupyterLab answered {started.start_s:.1f} s after start"
        )
    yield started
    classroom.stop(name=name)


def _get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_jupyterlab_answers_on_loopback_only_and_only_with_its_token(room: classroom.Started) -> None:
    base = f"http://127.0.0.1:{room.port}"
    assert _get(f"{base}/api/contents", room.token) == 200
    assert _get(f"{base}/api/contents") == 403  # no token, no notebook server
    assert _get(f"{base}/lab?token={room.token}") == 200
    ct = images.client().containers.get(room.container)
    bindings = ct.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for v in bindings.values() for b in v} == {"127.0.0.1"}


def test_a_second_start_under_the_same_name_is_refused(room: classroom.Started) -> None:
    with pytest.raises(classroom.LabError, match="is already running; stop it first"):
        classroom.start(port=0, name=room.container, progress=lambda _: None)
    assert images.client().containers.get(room.container).status == "running"


def test_the_notebooks_and_trustlab_are_in_it(room: classroom.Started) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{room.port}/api/contents", headers={"Authorization": f"token {room.token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        names = {item["name"] for item in json.load(resp)["content"]}
    shipped = {p.name for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")}
    assert shipped and shipped <= names


def test_a_notebook_executes_inside_on_the_docker_runtime(room: classroom.Started) -> None:
    """02-nginx runs top to bottom inside the container; its labs are sibling containers on the
    same daemon, and none is left once it finished."""
    nb = "/workshop/notebooks/02-nginx.ipynb"
    # Notebooks that pin RUNTIME = "local" (before they honour TRUSTLAB_RUNTIME) run from a copy
    # pinned to docker: the local runtime cannot make namespaces in an unprivileged container.
    script = (
        f"if grep -q TRUSTLAB_RUNTIME {nb}; then f={nb}; else f=/tmp/02-nginx.ipynb; "
        f'sed \'s/RUNTIME = \\\\"local\\\\"/RUNTIME = \\\\"docker\\\\"/\' {nb} > $f; fi; '
        "python3 -m harness.course.render execute --timeout 300 $f"
    )
    out = subprocess.run(
        ["docker", "exec", room.container, "sh", "-c", script], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert out.stdout.startswith("ok "), out.stdout
    hostname = images.client().containers.get(room.container).attrs["Config"]["Hostname"]
    owners = [lab["owner"] for lab in dockerrt.leftovers().values()]
    assert not [o for o in owners if o.startswith(f"{hostname}/")]


def test_stop_removes_the_container_and_its_labs(room: classroom.Started) -> None:
    """A lab left running by the classroom (a held one here) goes when the classroom stops."""
    name = f"{room.container}-stop"
    other = classroom.start(port=0, name=name, progress=lambda _: None)
    up = subprocess.run(
        ["docker", "exec", name, "trustlab", "up", "nginx/good", "--runtime", "docker"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr
    hostname = images.client().containers.get(name).attrs["Config"]["Hostname"]
    assert [o for o in (lab["owner"] for lab in dockerrt.leftovers().values()) if o.startswith(f"{hostname}/")]
    gone = classroom.stop(name=other.container)
    assert gone[0] == name and len(gone) == 2
    assert not [o for o in (lab["owner"] for lab in dockerrt.leftovers().values()) if o.startswith(f"{hostname}/")]
    assert name not in {ct.name for ct in images.client().containers.list(all=True)}


def test_cli_rejects_a_bad_port() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness", "classroom", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["trustlab: error: --port: 70000 is not a port number (1-65535)"]
