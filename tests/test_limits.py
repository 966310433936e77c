"""Limits for a lab as a whole (issue 26 item 5) and docker clean-up under signals (item 6).

A hostile config that forks without bound or allocates memory is stopped by its *lab's* limit
(the lab worker's cgroup locally, the container on docker), and the cells say so ("the lab hit
its process limit"), not a later symptom. Each test can fail: without the lab's cgroup
(``LocalRuntime(lab_limits=False)``) the same payload runs into nothing but its per-process
rlimits, and the reason names no lab limit (``test_without_the_cgroup_no_lab_limit_is_hit``).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.runtimes import limits, local, sandbox
from harness.runtimes.local import LocalRuntime
from harness.scenarios import Scenario
from harness.vocab import Outcome
from tests._signals import assert_no_trustlab_traceback
from tests.conftest import REQUIRE_PROXIES
from tests.test_sandbox import _bounded_run, _planting

# Each test fills a lab to its memory or process limit, or times a stop: alone under xdist.
pytestmark = pytest.mark.serial

#: <linux/capability.h>
CAPS = {
    "chown": 0,
    "dac_override": 1,
    "dac_read_search": 2,
    "fowner": 3,
    "kill": 5,
    "setgid": 6,
    "setuid": 7,
    "setpcap": 8,
    "net_bind_service": 10,
    "net_admin": 12,
    "sys_chroot": 18,
    "sys_admin": 21,
}
#: Forks past any one-proxy lab's process limit (600 tries), each holding a process for 2 s: the lab
#: hits its limit, then recovers (a lab starved for good would time its cells out, 10 s each).
FORK_BOMB = "i=0; while [ $i -lt 600 ]; do sleep 2 & i=$((i+1)); done 2>/dev/null"
#: 600 MiB in one process (below the sandbox's 2 GiB address-space rlimit, above a small lab's
#: memory limit); written, so every page is charged.
MEMORY_HOG = "python3 -c 'import time; b = b\"a\" * (600 << 20); time.sleep(60)'"


@pytest.fixture(scope="module")
def lab_cgroups(local_runtime: str) -> str:
    """Lab cgroups can be made here, or a skip (a failure in CI: CI runs as root)."""
    version, why = limits.support()
    if version is None:
        if REQUIRE_PROXIES:
            pytest.fail(f"no lab cgroups here: {why}")
        pytest.skip(f"no lab cgroups here: {why}")
    return version


def _hostile(case: str, payload: str) -> Scenario:
    """An Apache whose piped error log runs *payload* (base64: no quoting inside Apache's)
    as it starts, then reads its log lines without writing them: the impostor's cell waits for
    a verification line that never comes, and errs."""
    sc = _planting(case, ":", when="never-matches")
    run = f"echo {base64.b64encode(payload.encode()).decode()} | base64 -d | sh;"
    return dataclasses.replace(sc, config=sc.config.replace("cd $HOME;", f"cd $HOME; {run}"))


#: What a lab of one proxy says when it hits each limit: the limit sized for it, by name.
ONE = limits.for_proxies(1)
PROCESS_LIMIT = f"the lab hit its process limit ({ONE.pids} processes)"
MEMORY_LIMIT = f"the lab hit its memory limit ({ONE.memory >> 20} MiB)"


@pytest.mark.integration
@pytest.mark.parametrize(
    "payload, said",
    [pytest.param(FORK_BOMB, PROCESS_LIMIT, id="fork-bomb"), pytest.param(MEMORY_HOG, MEMORY_LIMIT, id="memory-hog")],
)
def test_a_hostile_config_is_stopped_by_its_lab_limit(lab_cgroups: str, payload: str, said: str) -> None:
    sc = _hostile(f"limits-{said.split()[4]}", payload)
    _, results = _bounded_run([sc], timeout=90, runtime=LocalRuntime(), identities=IMPOSTORS)
    _assert_said(results.cells, said)


#: Cells that each wait up to a second for a verification line that never comes: the payload
#: hits the limit (a fraction of a second after the proxy starts) before the last one is done.
IMPOSTORS = ("rogue-ca", "self-signed", "expired")


def _assert_said(cells: list[Any], said: str) -> None:
    assert {c.outcome for c in cells} == {Outcome.ERROR}, cells
    assert any(said in c.reason for c in cells), cells
    assert not any("sigprocmask" in c.reason for c in cells), cells


@pytest.mark.integration
@pytest.mark.parametrize(
    "payload", [pytest.param(FORK_BOMB, id="fork-bomb"), pytest.param(MEMORY_HOG, id="memory-hog")]
)
def test_without_the_cgroup_no_lab_limit_is_hit(local_runtime: str, payload: str) -> None:
    """The control: the same payloads with the lab's cgroup off (``lab_limits=False``) are stopped
    by nothing of the lab (the fork bomb only by its uid's 512 processes, the hog not at all),
    so the reason names no lab limit: the tests above see the cgroup, not something else."""
    sc = _hostile("limits-off", payload)
    _, results = _bounded_run([sc], timeout=90, runtime=LocalRuntime(lab_limits=False), identities=IMPOSTORS)
    assert {c.outcome for c in results.cells} == {Outcome.ERROR}, results.cells
    assert not any("the lab hit" in c.reason for c in results.cells), results.cells


@pytest.mark.integration
def test_the_lab_cgroup_holds_the_worker_and_is_gone_after(lab_cgroups: str) -> None:
    """Every process of the lab (worker, proxies) is in its cgroup, with the limits for its
    proxy count; the cgroup is removed when the lab ends."""
    seen: dict[str, object] = {}
    rt = LocalRuntime()
    create = limits.LabCgroup.create

    def created(lim: limits.LabLimits) -> limits.LabCgroup | None:
        group = create(lim)
        seen["group"] = group
        return group

    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""  # a process that ended meanwhile

    def look(event: object) -> None:
        group = seen["group"]
        assert isinstance(group, limits.LabCgroup)
        d = group.dirs.get("pids") or group.dirs[""]
        pids = (d / "cgroup.procs").read_text().split()
        seen["comms"] = {read(f"/proc/{p}/comm").strip() for p in pids} - {""}
        # The run directory is the worker's bounded tmpfs (test_a_run_directory_is_a_bounded_tmpfs).
        seen["tmpfs"] = [
            line.split()[4]
            for p in pids
            for line in read(f"/proc/{p}/mountinfo").splitlines()
            if " - tmpfs trustlab-run " in line
        ]
        seen["max"] = (d / "pids.max").read_text().strip()
        seen["bounding"] = {
            int(m.group(1), 16)
            for p in pids
            if read(f"/proc/{p}/comm").startswith("python")
            and (m := re.search(r"CapBnd:\s+([0-9a-f]+)", read(f"/proc/{p}/status")))
        }

    mp = pytest.MonkeyPatch()
    mp.setattr(limits.LabCgroup, "create", staticmethod(created))
    try:
        _bounded_run([_hostile("limits-inside", ":")], timeout=60, runtime=rt, look=look, identities=("legit",))
    finally:
        mp.undo()
    group = seen["group"]
    assert isinstance(group, limits.LabCgroup)
    assert {"python3", "apache2"} <= seen["comms"] or {"python", "apache2"} <= seen["comms"], seen  # type: ignore[operator]
    assert seen["max"] == str(limits.for_proxies(1).pids)
    if sandbox.host_root():  # the worker (root) keeps only the capabilities it uses
        assert seen["bounding"] == {sum(1 << CAPS[c] for c in local.WORKER_CAPS)}, seen
    assert any(m.endswith("/proxies/apache--payload-plant-limits-inside") for m in seen["tmpfs"]), seen  # type: ignore[attr-defined]
    assert not any(d.exists() for d in group.dirs.values()), group.dirs


@pytest.mark.docker
@pytest.mark.parametrize(
    "payload, said",
    [pytest.param(FORK_BOMB, PROCESS_LIMIT, id="fork-bomb"), pytest.param(MEMORY_HOG, MEMORY_LIMIT, id="memory-hog")],
)
def test_docker_a_hostile_config_is_stopped_by_its_lab_limit(docker_ready: str, payload: str, said: str) -> None:
    """The same payloads in a docker lab: its worker container is held to the lab's limits
    (sized to its proxies, as a local lab's cgroup), and the worker reads the container's
    counters the same way."""
    from harness.runtimes.docker import DockerRuntime

    sc = _hostile(f"docker-limits-{said.split()[4]}", payload)
    _, results = _bounded_run([sc], timeout=120, runtime=DockerRuntime(), identities=IMPOSTORS)
    _assert_said(results.cells, said)


# -- docker clean-up under signals (issue 26 item 6) --------------------------------------------
def _hung_check(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], Any]:
    """A ``trustlab check`` on docker whose HAProxy holds every request (its lab would run until
    its deadline, a minute), started as its own process; returns it once its container runs,
    with the label filter of what it owns (only this process's lab: the daemon is shared)."""
    import docker

    from harness.runtimes.docker import LABEL_OWNER, owner_tag
    from tests.test_untrusted_configs import TARPIT

    cfg = tmp_path / "slow.cfg"
    cfg.write_text(TARPIT)
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "check", "haproxy", str(cfg), "--runtime", "docker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    client = docker.from_env()
    flt = {"label": f"{LABEL_OWNER}={owner_tag(proc.pid)}"}
    until = time.monotonic() + 60
    while not client.containers.list(filters={**flt, "status": "running"}):
        assert proc.poll() is None and time.monotonic() < until, "the check's container never ran"
        time.sleep(0.1)
    time.sleep(1)  # its cells are under way: the worker is waiting on the tarpit
    return proc, flt, client


@pytest.mark.docker
def test_docker_check_stops_on_sigterm_and_removes_its_containers(docker_ready: str, tmp_path: Path) -> None:
    proc, flt, client = _hung_check(tmp_path)
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - t0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert took < 2, f"{took:.1f} s to stop on SIGTERM"
        assert proc.returncode == 130, (proc.returncode, err)
        assert_no_trustlab_traceback(err)
        assert client.containers.list(all=True, filters=flt) == []
        assert client.networks.list(filters=flt) == [] and client.volumes.list(filters=flt) == []
    finally:
        _remove_own(proc, client, flt)


@pytest.mark.docker
def test_docker_lab_stops_by_itself_after_sigkill(docker_ready: str, tmp_path: Path) -> None:
    """Nothing of trustlab runs any more to remove the lab: its container stops by itself (it
    holds its owner's stdin; :mod:`harness.runtimes.tether`), within seconds."""
    proc, flt, client = _hung_check(tmp_path)
    try:
        proc.kill()
        proc.wait(timeout=30)
        t0 = time.monotonic()
        while client.containers.list(filters={**flt, "status": "running"}):
            assert time.monotonic() - t0 < 5, "the lab's container still runs 5 s after its owner was killed"
            time.sleep(0.1)
    finally:
        _remove_own(proc, client, flt)


def _remove_own(proc: subprocess.Popen[bytes], client: Any, flt: dict[str, str]) -> None:
    """Remove what this test's trustlab left (its owner label only), and the process."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()
    for ct in client.containers.list(all=True, filters=flt):
        ct.remove(force=True)
    for net in client.networks.list(filters=flt):
        net.remove()
    for vol in client.volumes.list(filters=flt):
        vol.remove(force=True)
    client.close()


# -- the pieces, without a lab ------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_watch_says_which_limit_the_lab_hit(tmp_path: Path, layout: str) -> None:
    """The counters of either cgroup version: silent while they stay, then the limit named."""
    if layout == "v2":
        mem = pids = tmp_path
        (mem / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")
        (mem / "memory.max").write_text(f"{300 << 20}\n")
    else:
        mem, pids = tmp_path / "memory", tmp_path / "pids"
        mem.mkdir()
        pids.mkdir()
        (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
        (mem / "memory.limit_in_bytes").write_text(f"{300 << 20}\n")
    (pids / "pids.events").write_text("max 0\n")
    (pids / "pids.max").write_text("192\n")
    watch = limits.Watch(tuple(dict.fromkeys([str(mem), str(pids)])))
    assert watch.hit() is None and watch.explain("timed out") == "timed out"
    (pids / "pids.events").write_text("max 5\n")
    assert watch.hit() == "the lab hit its process limit (192 processes): a fork was refused"
    if layout == "v2":
        (mem / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    else:
        (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    said = watch.explain("timed out")
    assert said.startswith("the lab hit its memory limit (300 MiB)") and "process limit" in said, said
    assert said.endswith("(timed out)")
    assert limits.Watch(()).hit() is None  # a lab without a cgroup reads nothing (not the host's)


def test_without_cgroups_the_runtime_warns_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A host where no lab cgroup can be made: one warning line per process, saying what is open,
    and doctor says the same."""
    from harness import doctor

    monkeypatch.setattr(limits, "ROOT", tmp_path)  # no cgroup file system at all
    monkeypatch.setattr(local, "_warned_no_cgroup", False)
    assert limits.support()[0] is None
    assert LocalRuntime()._cgroup(1) is None and LocalRuntime()._cgroup(3) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trustlab: warning: labs run without a cgroup"), err
    assert limits.OPEN_WITHOUT in err[0]
    lines: list[str] = []
    doctor.diagnose(lines.append)
    assert any(line.strip().startswith("--    lab limits: none") for line in lines), lines


@pytest.mark.integration
def test_a_run_directory_is_a_bounded_tmpfs(local_runtime: str, tmp_path: Path) -> None:
    """The worker's tmpfs over a run directory keeps what the host wrote there, and refuses
    past its size and its file count (ENOSPC), in the worker's mount namespace only."""
    run_dir = tmp_path / "proxies" / "p"
    run_dir.mkdir(parents=True)
    (run_dir / "nginx.conf").write_text("the config\n")
    script = f"""
import errno, os, sys
from pathlib import Path
from harness.runtimes.nsworker import bounded_run_dir
d = Path({str(run_dir)!r})
bounded_run_dir(d)
assert (d / "nginx.conf").read_text() == "the config\\n"
chunk = b"x" * (1 << 20)
try:
    with open(d / "big", "wb") as f:
        for _ in range(80):
            f.write(chunk)
            f.flush()
    print("size: unbounded")
except OSError as exc:
    print("size:", errno.errorcode[exc.errno])
os.remove(d / "big")
try:
    for i in range(5000):
        (d / f"f{{i}}").touch()
    print("files: unbounded")
except OSError as exc:
    print("files:", errno.errorcode[exc.errno])
"""
    flags = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    proc = subprocess.run(
        ["unshare", *flags, "--mount", "--propagation", "private", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["size: ENOSPC", "files: ENOSPC"], proc.stdout
    assert [p.name for p in run_dir.iterdir()] == ["nginx.conf"]  # the host's view is untouched


def test_cgroup_v2_support_is_decided_from_delegation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cgroup v2 (not this CI host's layout, so read from a copy of its files): trustlab's own
    cgroup is used when it delegates memory and pids; otherwise, as root, /sys/fs/cgroup/trustlab
    when the root delegates them; otherwise none, with what to do."""
    own = tmp_path / "user.slice" / "session-1.scope"
    own.mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu io\n")
    (own / "cgroup.subtree_control").write_text("memory pids cpu\n")
    monkeypatch.setattr(limits, "ROOT", tmp_path)
    monkeypatch.setattr(limits, "_own", lambda path="": {"": "/user.slice/session-1.scope"})
    assert limits.support() == ("v2", f"cgroup v2 under trustlab's own cgroup {own}")
    (own / "cgroup.subtree_control").write_text("\n")
    version, why = limits.support()
    assert version is None and "Delegate=yes" in why and str(own) in why, why
    assert not (tmp_path / "trustlab").exists()  # the root does not delegate memory: nothing made
