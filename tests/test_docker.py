"""The docker runtime: same verdicts as the local runtime, and nothing left behind.

Needs a docker daemon and the lab image (``python -m harness.runtimes.images build``). Without them the
tests skip with the reason, declared once in :func:`docker_runtime`; with
``TRUSTLAB_REQUIRE_DOCKER=1`` (CI) a missing daemon or image is a failure instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import processes as _process
from harness import runner, scenarios
from harness.runtimes import docker as dockerrt
from harness.runtimes import images
from harness.vocab import Outcome

pytestmark = pytest.mark.docker
# Image builds, saves and loads run one after another on one xdist worker: each is CPU- and
# disk-heavy, and they share the daemon's build cache and this worker's scratch repository.
IMAGES = pytest.mark.xdist_group("images")


@pytest.fixture(scope="session")
def docker_runtime(docker_ready: str) -> str:
    """The docker runtime: conftest's docker_ready (a skip saying why; a failure in CI)."""
    return docker_ready


@pytest.fixture(scope="session")
def docker_matrix(docker_runtime: str) -> runner.Results:
    """One full docker matrix (shuffled), shared by the tests that only read it."""
    return runner.run(scenarios.select(), runtime=docker_runtime, seed=20)


def _lab_of(pid: int) -> dict[str, Any] | None:
    for lab in dockerrt.leftovers().values():
        if lab["owner"].split(":")[1:2] == [str(pid)]:
            return lab
    return None


def _role(ct: Any) -> str:
    return str((ct.attrs.get("Labels") or {}).get(dockerrt.LABEL_ROLE))


def _trustlab(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def _wait_for_running_lab(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait until *proc* has a lab whose worker container runs (the cells are under way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lab = _lab_of(proc.pid)
        if lab and "worker" in {_role(ct) for ct in lab["containers"]}:
            return lab
        if proc.poll() is not None:
            pytest.fail(f"trustlab exited before its lab started: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    pytest.fail("the docker lab never started")


# -- verdicts --------------------------------------------------------------------------------
def test_every_cell_matches_its_scenario(docker_matrix: runner.Results) -> None:
    assert len(docker_matrix.cells) == sum(len(s.identities) for s in scenarios.builtin().values())
    assert [c for c in docker_matrix.cells if c.outcome is Outcome.ERROR] == []
    assert docker_matrix.mismatches == []
    assert docker_matrix.meta["runtime"] == "docker"


def test_docker_outcomes_equal_local_outcomes_cell_by_cell(
    docker_matrix: runner.Results, local_matrix: runner.Results
) -> None:
    def evidence(r: runner.Results) -> dict[tuple[str, str], tuple[object, ...]]:
        return {(c.scenario, c.identity): (c.outcome, c.status, c.sni) for c in r.cells}

    assert evidence(docker_matrix) == evidence(local_matrix)


def test_meta_reports_the_image_versions(docker_matrix: runner.Results) -> None:
    versions = images.image_versions()
    assert {k: docker_matrix.meta["versions"][k] for k in versions} == versions
    assert all(versions[k] for k in ("nginx", "apache", "haproxy", "openssl"))


def test_lab_is_internal_labelled_and_publishes_nothing(docker_runtime: str, tmp_path: Path) -> None:
    """A lab is one container, the worker, on an internal network at the lab's address with the
    backend's names (its seat runs in it), publishing nothing; every object carries the lab's
    label, keys inside are the lab user's alone, and all of it is gone afterwards. Seen on a
    held lab, so the worker is still there to look into."""
    from harness.pki import LabPKI
    from harness.runtimes.base import ScenarioJob

    (scenario,) = scenarios.select(["nginx/good"])
    job = ScenarioJob(scenarios=(scenario,), identities=(), mint=lambda ip: LabPKI.mint(backend_ip=ip), hold="legit")
    with dockerrt.DockerRuntime().hold(job, lab_dir=tmp_path) as held:
        lab = _lab_of(os.getpid())
        assert lab, "no labelled lab found while it ran"
        [worker] = lab["containers"]
        inspected = images.client().containers.get(worker.id)
        cmd = ["stat", "-c", "%a %u %n", "/lab", "/lab/pki", "/lab/pki/identities/legit.key"]
        modes = inspected.exec_run(cmd).output.decode()
        [endpoint] = inspected.attrs["NetworkSettings"]["Networks"].values()
        assert held.container == inspected.name
    assert _role(worker) == "worker"
    assert endpoint["IPAMConfig"]["IPv4Address"].endswith(".10")
    assert {"backend-api.internal", "other-svc.internal"} <= set(endpoint["Aliases"])
    [net] = lab["networks"]
    assert net.attrs["Internal"] is True
    assert worker.attrs["Labels"][dockerrt.LABEL_LAB] == net.attrs["Labels"][dockerrt.LABEL_LAB]
    assert not worker.attrs.get("Ports")  # nothing published on the host
    assert len(lab["volumes"]) == 1
    # Keys are the lab user's alone inside the lab (every lab container runs as 10001, none as
    # root); the volume's root is root's and holds only the lab's own entries.
    assert modes.split("\n")[:3] == ["755 0 /lab", "700 10001 /lab/pki", "600 10001 /lab/pki/identities/legit.key"]
    assert _lab_of(os.getpid()) is None  # and all of it is gone afterwards


def test_per_variant_layout_gives_the_same_outcomes(
    docker_runtime: str, docker_matrix: runner.Results, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = scenarios.select(proxies=["haproxy"])
    rt = dockerrt.DockerRuntime(layout="per-variant")
    monkeypatch.setattr(runner, "get_runtime", lambda name: rt)
    result = runner.run(chosen, runtime=docker_runtime)
    ids = {s.id for s in chosen}
    assert result.outcomes() == {k: v for k, v in docker_matrix.outcomes().items() if k[0] in ids}


def test_two_docker_labs_at_once_agree(docker_runtime: str) -> None:
    chosen = scenarios.select(proxies=["nginx"])
    results: list[runner.Results] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(runner.run(chosen, runtime=docker_runtime))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    a, b = results
    assert a.outcomes() == b.outcomes()
    assert a.mismatches == b.mismatches == []


def test_a_docker_lab_and_a_local_lab_at_once_agree(docker_runtime: str, local_runtime: str) -> None:
    chosen = scenarios.select(proxies=["apache", "haproxy"])
    results: dict[str, runner.Results] = {}
    errors: list[BaseException] = []

    def one(rt: str) -> None:
        try:
            results[rt] = runner.run(chosen, runtime=rt)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(rt,)) for rt in (docker_runtime, local_runtime)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert results["docker"].outcomes() == results["local"].outcomes()
    assert results["docker"].mismatches == results["local"].mismatches == []


@IMAGES
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_image_build_leaves_nothing(docker_runtime: str, sig: int) -> None:
    import re

    current = images.client().images.get(images.LAB_IMAGE).id
    env = {**os.environ, "TRUSTLAB_IMAGE": f"trustlab-test-{os.getpid()}/lab:interrupted"}  # never `current`
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "images", "build", "--force"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Interrupt once mmdebstrap runs (a fixed sleep landed in the imports on a loaded machine).
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if not line or "I: " in line:
            break
    time.sleep(0.5)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    # Only this build's own scratch directory and processes: other builds may run on this machine.
    ours = set(re.findall(r"(/\S+/trustlab-image-[A-Za-z0-9_]+)", err))
    assert ours, err
    assert [d for d in ours if Path(d).exists()] == []
    ps = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    mine = [ln for ln in ps.splitlines() if ln.split()[0] == str(proc.pid)]
    assert [ln for ln in mine if "mmdebstrap" in ln and ln.split()[1][0] != "Z"] == []
    assert images.client().images.get(images.LAB_IMAGE).id == current  # the shared image is untouched


def test_up_present_down_on_docker(docker_runtime: str) -> None:
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp)}

    def tl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120, env=env
        )

    def through_proxy(state: dict[str, Any]) -> str:
        out = subprocess.run(["sh", "-c", state["curl"] + " -i"], capture_output=True, text=True, timeout=30)
        marker = [ln for ln in out.stdout.splitlines() if ln.lower().startswith("x-trustlab-identity:")]
        return marker[0].split(":", 1)[1].strip() if marker else out.stdout

    state: dict[str, Any] = {}
    try:
        up = tl("up", "haproxy/ca-only", "--runtime", "docker")
        assert up.returncode == 0, up.stderr
        (state_file,) = tmp.glob("trustlab.*/trustlab-*/state.json")  # the per-user held-lab dir
        state = json.loads(state_file.read_text())
        assert state["runtime"] == "docker"
        assert through_proxy(state) == "legit"
        assert tl("present", "wrong-name").returncode == 0
        assert through_proxy(state) == "wrong-name"  # ca-only: no name check, spoofed
        status = tl("status", "--log")
        assert "as wrong-name" in status.stdout, status.stdout
    finally:
        # Its own lab by name: --all would stop every other lab on this (shared) daemon too.
        down = tl("down", state["lab"]) if state else tl("down")
        shutil.rmtree(tmp, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    names = [ct.name for lab in dockerrt.leftovers().values() for ct in lab["containers"]]
    assert state["container"] not in names


def test_down_removes_a_killed_docker_lab(docker_runtime: str, tmp_path: Path) -> None:
    """A holder killed with SIGKILL cannot clean up: `down LAB` must remove its containers,
    network and volume (and only that lab's)."""
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}

    def tl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120, env=env
        )

    up = tl("up", "nginx/good", "--runtime", "docker")
    assert up.returncode == 0, up.stderr
    lab_id = None
    try:
        (state_file,) = tmp_path.glob("trustlab.*/trustlab-*/state.json")  # the per-user held-lab dir
        state = json.loads(state_file.read_text())
        lab_id = dockerrt.lab_id(Path(state["dir"]))
        os.kill(int(state["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _process.alive(int(state["pid"])) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = dockerrt.leftovers()[lab_id]
        assert left["containers"] and left["networks"] and left["volumes"]
        assert "DEAD" in tl("status").stdout
        down = tl("down", state["lab"])
        assert down.returncode == 0, down.stderr
        assert state["lab"] in down.stdout
        assert lab_id not in dockerrt.leftovers()
        assert not Path(state["dir"]).exists()
    finally:
        if lab_id is None:  # failed before the kill: the holder is alive, let it clean up
            tl("down")
        else:
            dockerrt.remove_lab(lab_id)


# -- cleanup ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_every_container_network_and_volume(docker_runtime: str, tmp_path: Path, sig: int) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = _trustlab(
        "matrix", "--runtime", "docker", "--no-plot", "--out", str(tmp_path / "out"), env=env, start_new_session=True
    )
    _wait_for_running_lab(proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground process group
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _lab_of(proc.pid) is None
    assert list(tmp_path.glob("trustlab-*")) == []


def test_sigkill_leftovers_are_removed_by_down(docker_runtime: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = _trustlab("matrix", "--runtime", "docker", "--no-plot", "--out", str(tmp_path / "out"), env=env)
    _wait_for_running_lab(proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert _lab_of(proc.pid) is not None  # a hard kill cannot clean up: the sweep must
    removed = dockerrt.down(all_labs=False)  # the owner is dead: its lab goes
    assert _lab_of(proc.pid) is None
    assert removed


def test_down_keeps_labs_whose_owner_lives(docker_runtime: str) -> None:
    mine = dockerrt.owner_tag()
    assert dockerrt.owner_alive(mine)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    where = mine.split(":")[0]
    host, _, ns = where.partition("/")
    assert ns and host
    assert not dockerrt.owner_alive(f"{where}:{dead}:1")
    assert dockerrt.owner_alive(f"some-other-host/{ns}:{dead}:1")  # not ours to judge
    # Same hostname, another pid namespace (a sandbox or container sharing this daemon): its
    # pids mean nothing here, so its labs are never swept from here.
    assert dockerrt.owner_alive(f"{host}/4026599999:{dead}:1")
    assert dockerrt.owner_alive(f"{host}:{dead}:1")  # an older tag without a namespace


# -- images ----------------------------------------------------------------------------------
@IMAGES
def test_rebuild_with_nothing_changed_is_a_no_op(scratch_repo: str) -> None:
    # Into a throwaway repository: `current` on a shared daemon may have been built from another
    # checkout's lab layer, and this test must never build over it.
    ref = f"{scratch_repo}:current"
    images.build(image=ref, progress=lambda _: None)
    lines: list[str] = []
    t = time.perf_counter()
    result = images.build(image=ref, progress=lines.append)
    assert result.skipped, lines
    assert time.perf_counter() - t < 2
    assert ref in result.tags
    assert any(tag.startswith(f"{scratch_repo}:nginx") for tag in result.tags)


def _scratch() -> str:
    return f"trustlab-test-{os.getpid()}/lab"


@pytest.fixture
def scratch_repo(docker_runtime: str) -> Any:
    """A throwaway repository name; every tag in it is removed afterwards (shared daemon)."""
    repo = _scratch()
    yield repo
    c = images.client()
    for img in c.images.list(name=repo):
        for tag in img.tags:
            if tag.startswith(f"{repo}:"):
                c.images.remove(tag)


@pytest.fixture(scope="module")
def saved_lab(docker_runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``saved_lab(name)``: the lab image saved once per archive name (``{scratch}:current``, the
    alias untagged again), shared by the round trip and the loaded-image build test: saving
    lab.tar.gz (~20 s) was done twice."""
    where = tmp_path_factory.mktemp("saved")
    done: dict[str, Path] = {}

    def saved(name: str) -> Path:
        if name not in done:
            c = images.client()
            ref = f"{_scratch()}:current"
            c.images.get(images.LAB_IMAGE).tag(*ref.rsplit(":", 1))
            try:
                done[name] = images.save(where / name, refs=[ref], progress=lambda _: None)
            finally:
                c.images.remove(ref)  # untag our alias only; the image keeps its real tags
        assert not list(where.glob("*.partial"))
        return done[name]

    return saved


@IMAGES
@pytest.mark.parametrize("name", ["lab.tar", "lab.tar.gz"])
def test_save_load_round_trip(scratch_repo: str, saved_lab: Any, name: str) -> None:
    c = images.client()
    current = c.images.get(images.LAB_IMAGE)
    ref = f"{scratch_repo}:current"
    path = saved_lab(name)
    raw = path.read_bytes()[:2]
    assert (raw == b"\x1f\x8b") is name.endswith(".gz")  # gzip magic only where asked
    assert path.stat().st_size > 10_000_000
    assert not c.images.list(name=scratch_repo)  # nothing of it here before the load
    assert images.load(path, progress=lambda _: None) == [ref]
    assert c.images.get(ref).id == current.id
    # A loaded `current` is marked, so a build will not silently move it (see below).
    assert c.images.get(f"{scratch_repo}:loaded").id == current.id
    assert c.images.get(images.LAB_IMAGE).id == current.id  # the shared alias never moved


@IMAGES
def test_build_refuses_to_replace_a_loaded_image(
    scratch_repo: str, saved_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = images.client()
    current = c.images.get(images.LAB_IMAGE)
    ref = f"{scratch_repo}:current"
    assert images.load(saved_lab("lab.tar.gz"), progress=lambda _: None) == [ref]
    assert c.images.get(f"{scratch_repo}:loaded").id == current.id
    # Inputs that differ from the loaded image's (another machine's apt sources, say).
    monkeypatch.setattr("harness.runtimes.images.builder.lab_inputs", lambda base, proxies="": "0" * 64)
    with pytest.raises(images.LabError, match=r"was loaded from a file .* pass --force"):
        images.build(image=ref, progress=lambda _: None)
    assert c.images.get(ref).id == current.id
    # Inputs that match: the loaded image is the up-to-date one, nothing moves.
    monkeypatch.undo()
    assert images.build(image=ref, progress=lambda _: None).skipped
    assert c.images.get(ref).id == current.id


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(images.LabError, match="no such file"):
        images.load(tmp_path / "missing.tar")


# -- image definition (no daemon needed) -----------------------------------------------------
def test_both_builds_share_the_package_list_and_the_lab_layer() -> None:
    pkgs = images.packages()
    assert {"nginx", "apache2-bin", "haproxy", "python3"} <= set(pkgs)
    dockerfile = (images.docker_dir() / "Dockerfile").read_text()
    assert "packages.txt" in dockerfile
    layer = images.lab_layer("trustlab/base:x")
    assert layer.startswith("FROM trustlab/base:x\n")
    assert layer.splitlines()[1] in dockerfile
    assert "FROM debian" not in layer


def test_in_lab_code_needs_only_the_stdlib(tmp_path: Path) -> None:
    for rel, data in dockerrt.lab_code().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    # -S -I: no site-packages (no trustme, cryptography, matplotlib), as in the lab image.
    probe = "import harness.runtimes.seat, harness.runtimes.dockerworker, harness.runtimes.probe, harness.proxies"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {probe}"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_inputs_hash_changes_with_the_lab_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    base = "0" * 64
    before = images.lab_inputs(base)
    monkeypatch.setattr("harness.runtimes.images.plan.lab_layer", lambda b: "FROM x\nRUN true\n")
    assert images.lab_inputs(base) != before


def test_upstream_versions() -> None:
    assert images.upstream("1.22.1-9+deb12u11") == "1.22.1"
    assert images.upstream("1:2.4.71-1~deb12u1") == "2.4.71"
    assert images.version_tag({"nginx": "1.22.1", "apache": "2.4.71", "haproxy": "2.6.12"}) == (
        "nginx1.22.1-apache2.4.71-haproxy2.6.12"
    )


@IMAGES
def test_json_of_the_cli_build_command_is_parseable(scratch_repo: str) -> None:
    env = {**os.environ, "TRUSTLAB_IMAGE": f"{scratch_repo}:current"}  # never over the shared `current`
    for skipped in (None, True):
        out = subprocess.run(
            [sys.executable, "-m", "harness.runtimes.images", "build"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert f"{scratch_repo}:current" in data["tags"]
        if skipped:
            assert data["skipped"] is True


# -- the Dockerfile path (Docker Desktop users), built in CI -----------------------------------
# Not in IMAGES: it reads docker_matrix, so it is `serial` (nothing runs beside it, no other build
# either) and in the matrices' group; IMAGES too chained every image test (~100 s in CI) behind the
# matrices on one worker.
def test_dockerfile_image_builds_offline_and_matches_the_offline_image(
    scratch_repo: str,
    docker_matrix: runner.Results,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """labs/docker/Dockerfile, built with its base already present (here: this host's packages
    through mmdebstrap, imported under the Dockerfile's base name), gives an image labelled like
    the offline build whose full matrix equals the offline image's on every cell."""
    c = images.client()
    base, created = images.import_dockerfile_base(progress=lambda _: None)
    try:
        lines: list[str] = []
        ref = f"{scratch_repo}:dockerfile"
        r = images.build(method="dockerfile", image=ref, force=True, progress=lines.append)
        assert any(f"base {base} is present: not pulling it" in ln for ln in lines), lines
        img = c.images.get(ref)
        assert img.labels[images.LABEL_KIND] == "lab"
        assert json.loads(img.labels[images.LABEL_VERSIONS]) == r.versions
        assert r.versions == images.image_versions()  # the same Debian packages as the offline image
        with capsys.disabled():
            print(f"\n[dockerfile] build {r.steps['dockerfile_s']:.1f} s (with labels {r.duration_s:.1f} s)")
        monkeypatch.setenv("TRUSTLAB_IMAGE", ref)
        assert images.lab_image() == ref
        result = runner.run(scenarios.select(), runtime="docker", seed=21)
        assert result.meta["versions"]["nginx"] == r.versions["nginx"]

        def evidence(res: runner.Results) -> dict[tuple[str, str], tuple[object, ...]]:
            return {(cl.scenario, cl.identity): (cl.outcome, cl.status, cl.sni) for cl in res.cells}

        offline, dockerfile = evidence(docker_matrix), evidence(result)
        differences = {
            k: (offline.get(k), dockerfile.get(k))
            for k in offline.keys() | dockerfile.keys()
            if offline.get(k) != dockerfile.get(k)
        }
        with capsys.disabled():
            print(f"[dockerfile] {len(result.cells)} cells, {len(differences)} differences from the offline image")
        # The dockerfile run's reason per differing cell: a proxy that failed to start says why.
        why = {
            k: next((c.reason for c in result.cells if (c.scenario, c.identity) == k), None)
            for k in sorted(differences)[:5]
        }
        assert differences == {}, why
    finally:
        if created:  # never leave a stand-in `debian:bookworm-slim` behind for someone to run
            c.images.remove(base)


@IMAGES
def test_every_library_the_lab_image_links_is_there(docker_runtime: str) -> None:
    """The base's TRIM (harness/runtimes/images/rootfs.py) removes files no lab reads; nothing that stays
    may name a removed library (ICU went with the two Apache modules that linked it). Control:
    the same scan in the same throwaway container finds nginx once libssl is gone."""
    scan = (
        'for f in $(find / -xdev -type f \\( -perm -u+x -o -name "*.so*" \\) 2>/dev/null); do '
        'ldd "$f" 2>/dev/null | grep -q "not found" && echo "$f"; done; true'
    )
    script = f"{scan}; echo ---; rm /usr/lib/*-linux-gnu/libssl.so.3; {scan}"
    out = images.client().containers.run(
        images.lab_image(), ["sh", "-c", script], remove=True, network_mode="none", user="root"
    )
    before, _, after = out.decode().partition("---\n")
    # Known and harmless: perl's full interpreter (its libperl is in TRIM; dpkg's perl-base
    # /usr/bin/perl stays and runs) and iproute2's ATM qdisc plugin (libatm1 is only suggested).
    known = re.compile(r"/usr/bin/perl5\.[\d.]+-[\w-]+|/usr/lib/[\w-]+/tc/q_atm\.so")
    assert [f for f in before.split() if not known.fullmatch(f)] == []
    assert "/usr/sbin/nginx" in after.split()


@IMAGES
def test_a_hand_built_image_without_labels_still_reports_versions(scratch_repo: str) -> None:
    """`docker build -t trustlab/lab:current labs/docker` carries no trustlab labels: doctor and
    `images status` read the versions inside the image instead of showing nothing."""
    import io

    c = images.client()
    # Blank the inherited labels, so no build ever takes this image for an up-to-date lab image.
    dockerfile = f"FROM {images.LAB_IMAGE}\nLABEL trustlab.versions= trustlab.inputs= trustlab.image=\n"
    plain, _ = c.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=f"{scratch_repo}:plain", network_mode="none", rm=True
    )
    assert not (plain.labels or {}).get(images.LABEL_VERSIONS)
    assert images.image_versions_of(c, plain) == images.image_versions()


def test_down_all_never_removes_a_lab_whose_owner_runs(docker_runtime: str, tmp_path: Path) -> None:
    """`trustlab down --all` on a shared daemon (another user's check, a test suite, a classroom
    server): a running lab stays, a dead owner's leftover goes. It removed both, and a running
    check's container vanished mid-run in CI."""
    c = images.client()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    where = dockerrt.owner_tag().split(":")[0]
    tag = f"trustlab-test-{os.getpid()}"
    live = c.volumes.create(
        name=f"{tag}-live", labels={dockerrt.LABEL_LAB: f"{tag}-live", dockerrt.LABEL_OWNER: dockerrt.owner_tag()}
    )
    gone = c.volumes.create(
        name=f"{tag}-gone", labels={dockerrt.LABEL_LAB: f"{tag}-gone", dockerrt.LABEL_OWNER: f"{where}:{dead}:1"}
    )
    try:
        env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
        out = _trustlab("down", "--all", env=env)
        out.communicate(timeout=60)
        names = {v.name for v in c.volumes.list(filters={"label": dockerrt.LABEL_LAB})}
        assert live.name in names and gone.name not in names
    finally:
        for vol in (live, gone):
            with contextlib.suppress(Exception):
                vol.remove(force=True)
