"""`trustlab up / status / present / down`: a lab kept running, reachable only via a unix socket."""

from __future__ import annotations

import json
import os
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

pytestmark = pytest.mark.integration


def trustlab(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=60, env=env)


def curl(sock: str) -> dict[str, str]:
    out = subprocess.run(
        ["curl", "-s", "-i", "--unix-socket", sock, "http://www.trustlab.test/"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
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
        # held labs live in the caller's private directory, never directly in the lab root
        (state_file,) = tmp_path.glob(f"trustlab.{os.geteuid()}/trustlab-*/state.json")
        assert stat.S_IMODE(state_file.parent.parent.stat().st_mode) == 0o700
        assert list(tmp_path.glob("trustlab-*")) == []
        state = json.loads(state_file.read_text())
        assert curl(state["socket"])["x-trustlab-identity"] == "legit"
        assert trustlab(env, "present", "rogue-ca").returncode == 0
        assert curl(state["socket"])["x-trustlab-identity"] == "rogue-ca"  # verify-off: spoofed
        status = trustlab(env, "status", "--log")
        assert "nginx/verify-off" in status.stdout and "as rogue-ca" in status.stdout
        assert "unknown" in trustlab(env, "present", "rouge-ca").stderr
    finally:
        # never `down --all` in tests: it also removes other people's docker labs
        down = trustlab(env, "down")
    assert down.returncode == 0, down.stderr
    time.sleep(0.2)
    assert list(tmp_path.glob("trustlab-*")) == list(tmp_path.glob("trustlab.*/trustlab-*")) == []
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "up", "apache/good", "--runtime", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert_no_trustlab_traceback(err)
    if proc.returncode == 0:  # it was up before the signal: a lab the user was told about
        assert trustlab(env, "down").returncode == 0
    else:  # interrupted: 130, or (rarely) the status of a process ended by SIGINT itself
        assert proc.returncode in (1, 130, -signal.SIGINT), err  # 1: inside CPython's start-up
    deadline = time.monotonic() + 15
    while list(tmp_path.glob("trustlab*/trustlab-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("trustlab*/trustlab-*")) == []
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    assert [ln for ln in ps.splitlines() if str(tmp_path) in ln and not ln.startswith("Z")] == []


@pytest.mark.parametrize(
    ("scenario", "identity"),
    [
        ("haproxy/ca-only", "wrong-name"),  # rogue-ca is blocked there: it would hide the point
        ("nginx/verify-off", "rogue-ca"),
        ("apache/seed-recipe", "legit"),  # an outage: the legitimate backend is refused
        ("reported/nginx-1409", "legit-deep"),
        ("nginx/subdomain-backend", "wildcard-parent"),
        ("reported/ingress-nginx-4928-fixed", "rogue-ca"),  # every impostor blocked: any shows it
        ("nginx/good", "cn-only"),  # good's hidden hole: a CN-only certificate from the internal CA
    ],
)
def test_the_suggested_identity_shows_the_scenario_point(scenario: str, identity: str) -> None:
    from harness.held import point
    from harness.scenarios import resolve

    assert point(resolve(scenario))[0] == identity


def test_held_lab_shows_verdicts_paths_and_keeps_the_id(local_runtime: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    try:
        up = trustlab(env, "up", "apache/seed-recipe", "--runtime", "local")
        assert up.returncode == 0, up.stderr
        assert "AH02040" in up.stdout and "Certificate Chain too long" in up.stdout  # the reason, not just a 500
        assert "httpd.conf" in up.stdout and "error.log" in up.stdout
        status = trustlab(env, "status", "--log")
        assert "None" not in up.stdout + status.stdout
        assert "proxy: AH02040" in status.stdout
        assert trustlab(env, "down").returncode == 0

        up = trustlab(env, "up", "reported/nginx-1409-fixed", "--runtime", "local")
        assert up.returncode == 0, up.stderr
        assert "reported/nginx-1409-fixed" in up.stdout and "nginx/nginx-1409" not in up.stdout
        present = trustlab(env, "present", "legit-deep")
        assert present.returncode == 0, present.stderr
        assert "answered by legit-deep" in present.stdout
        refused = trustlab(env, "present", "cn-only")  # not among this scenario's identities
        assert refused.returncode == 2 and "unknown for reported/nginx-1409-fixed" in refused.stderr
    finally:
        trustlab(env, "down", "--all")


def test_up_holds_your_own_config(local_runtime: str, tmp_path: Path) -> None:
    """`up --config FILE --proxy KIND` (issue 19): the lab runs the config as check does; present
    and curl work on it. nginx's CN fallback shows on a config that check calls good."""
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    conf = str(Path(__file__).parent / "configs" / "nginx-upstream-good.conf")
    try:
        up = trustlab(env, "up", "--config", conf, "--proxy", "nginx", "--runtime", local_runtime)
        assert up.returncode == 0, up.stderr
        assert "200, answered by legit" in up.stdout and "line 44" in up.stdout  # the upstream held
        curl = next(ln.split(": ", 1)[1] for ln in up.stdout.splitlines() if "through the proxy:" in ln)
        assert "--unix-socket" in curl and "https://www.example.com/api/" in curl  # the config's own route
        impostor = trustlab(env, "present", "rogue-ca")
        assert impostor.returncode == 0 and "refused" in impostor.stdout and "verify error" in impostor.stdout
        cn_only = trustlab(env, "present", "cn-only")
        assert "answered by cn-only" in cn_only.stdout and "IMPOSTOR" in cn_only.stdout
        assert trustlab(env, "down").returncode == 0
    finally:
        trustlab(env, "down", "--all")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--config", "tests/configs/nginx-upstream-good.conf"], "one of the two"),  # no --proxy
        (["nginx/good", "--config", "tests/configs/nginx-upstream-good.conf", "--proxy", "nginx"], "one of the two"),
        (
            ["--config", "tests/configs/nginx-upstream-good.conf", "--proxy", "nginx", "--runtime", "docker"],
            "runs on the local runtime",
        ),
        (
            ["--config", "tests/configs/nginx-upstream-good.conf", "--proxy", "nginx", "--identity", "rouge-ca"],
            "'rouge-ca' is unknown",
        ),
        (["--config", "tests/configs/nope.conf", "--proxy", "nginx"], "is not a file"),
        (["--config", "tests/configs/apache-vhost-good.conf", "--proxy", "haproxy"], "looks like"),
    ],
)
def test_up_config_bad_input_is_one_line(local_runtime: str, tmp_path: Path, args: list[str], says: str) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]
    proc = trustlab(env, "up", *(str(root / a) if a.startswith("tests/") else a for a in args))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert trustlab(env, "status").stdout.strip() == "no lab is up"


# -- planted state: nothing another user wrote is trusted ----------------------------------------
NOBODY = 65534


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process and a directory a planted state file points at: neither may be touched."""
    proc = subprocess.Popen(["sleep", "60"])
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data").write_text("keep me")
    yield proc, target
    proc.kill()
    proc.wait()


def _plant(lab: Path, *, pid: int, target: Path, owner: int | None, pid_start: str = "1") -> None:
    lab.mkdir(parents=True, mode=0o700)
    os.chmod(lab.parent, 0o700)
    state = {
        "lab": lab.name,
        "dir": str(target),
        "pid": pid,
        "pid_start": pid_start,
        "runtime": "local",
        "scenario": "nginx/good",
        "identity": "legit",
        "started": "2026-01-01T00:00:00",
        "curl": "curl",
        "control": str(target / "control.sock"),
    }
    (lab / "state.json").write_text(json.dumps(state))
    if owner is not None:
        for p in (lab.parent, lab, lab / "state.json"):
            os.chown(p, owner, owner)


def _untouched(victim: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, target = victim
    time.sleep(0.1)
    assert proc.poll() is None, "the planted pid was signalled"
    assert (target / "data").read_text() == "keep me", "the planted directory was removed"


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("planting a file as another uid needs root (chown)")


@pytest.mark.bad_input
@pytest.mark.usefixtures("as_root")
def test_down_refuses_a_held_root_planted_by_another_user(tmp_path: Path, victim: tuple) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    root = tmp_path / f"trustlab.{os.geteuid()}"
    _plant(root / "trustlab-evil", pid=victim[0].pid, target=victim[1], owner=NOBODY)
    os.chmod(root, 0o777)
    for args in (["down"], ["down", "trustlab-evil"], ["status"], ["present", "rogue-ca"]):
        proc = trustlab(env, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "owned by uid 65534, not by you" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        _untouched(victim)


@pytest.mark.bad_input
@pytest.mark.usefixtures("as_root")
def test_down_ignores_a_state_file_planted_by_another_user(tmp_path: Path, victim: tuple) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    root = tmp_path / f"trustlab.{os.geteuid()}"
    root.mkdir(mode=0o700)
    _plant(root / "trustlab-evil", pid=victim[0].pid, target=victim[1], owner=None)
    os.chown(root / "trustlab-evil" / "state.json", NOBODY, NOBODY)
    status = trustlab(env, "status")
    assert status.returncode == 0 and "not a private file of yours; ignored" in status.stdout, status.stdout
    down = trustlab(env, "down")
    assert down.returncode == 0 and "nothing to stop" in down.stdout, (down.stdout, down.stderr)
    _untouched(victim)
    # a planted lab directory (not the state file) is just as untrusted
    os.chown(root / "trustlab-evil", NOBODY, NOBODY)
    assert "owned by uid 65534" in trustlab(env, "status").stdout
    assert "nothing to stop" in trustlab(env, "down").stdout
    _untouched(victim)


@pytest.mark.bad_input
@pytest.mark.usefixtures("as_root")
def test_a_planted_lab_in_the_shared_lab_root_is_neither_trusted_nor_swept(
    tmp_path: Path, victim: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old layout: trustlab-*/state.json directly in /tmp (what `nobody` planted)."""
    from harness import held, runner

    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    _plant(tmp_path / "trustlab-evil", pid=victim[0].pid, target=victim[1], owner=NOBODY)
    os.chmod(tmp_path, 0o1777)
    os.utime(tmp_path / "trustlab-evil", (0, 0))  # old enough to look stale
    down = trustlab(env, "down")
    assert down.returncode == 0 and "nothing to stop" in down.stdout, down.stderr
    monkeypatch.setenv("TRUSTLAB_TMPDIR", str(tmp_path))
    assert held.labs() == [] and runner.sweep() == []  # what `down --all` sweeps in the lab root
    _untouched(victim)
    assert (tmp_path / "trustlab-evil" / "state.json").exists()  # not ours: not swept either


@pytest.mark.bad_input
def test_a_recycled_pid_is_never_signalled(tmp_path: Path, victim: tuple) -> None:
    """Our own state file, but its holder is gone and the pid now belongs to another process."""
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    root = tmp_path / f"trustlab.{os.geteuid()}"
    root.mkdir(mode=0o700)
    lab = root / "trustlab-recycled"
    _plant(lab, pid=victim[0].pid, target=victim[1], owner=None, pid_start="12345")
    status = trustlab(env, "status")
    assert "DEAD" in status.stdout, status.stdout  # the pid runs, but it is not the holder
    down = trustlab(env, "down")
    assert down.returncode == 0 and "trustlab-recycled" in down.stdout, down.stderr
    _untouched(victim)
    assert not lab.exists()  # its own directory (where the state file was) is removed


@pytest.mark.bad_input
@pytest.mark.parametrize("content", ['{"pid": "x"}', "[1, 2]", "{not json", '{"lab": "trustlab-c", "pid": 1}', ""])
def test_a_corrupt_state_file_is_one_line(tmp_path: Path, content: str) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    root = tmp_path / f"trustlab.{os.geteuid()}"
    (root / "trustlab-c").mkdir(parents=True, mode=0o700)
    os.chmod(root, 0o700)
    (root / "trustlab-c" / "state.json").write_text(content)
    for args in (["status"], ["present", "legit"], ["down"]):
        proc = trustlab(env, *args)
        assert "Traceback" not in proc.stderr and proc.returncode in (0, 2), (args, proc.stderr)
    assert "corrupt state file" in trustlab(env, "status").stdout
    assert trustlab(env, "down").returncode == 0
