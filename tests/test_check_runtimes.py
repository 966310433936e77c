"""``trustlab check`` gives the same verdicts on both runtimes, cell by cell, for every test config.

Each config under ``tests/configs/`` runs through :func:`harness.check.check` on the local runtime
(the host's proxies in a private namespace) and on the docker runtime (the lab image's, in one
container with no network); every upstream x identity cell must have the same outcome, HTTP
status, SNI and evidence. A config the lab cannot check must fail the same way on both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from harness.check import CheckResult, check
from harness.cli import main
from harness.errors import LabError
from harness.runtimes import docker as dockerrt

_ROOT = Path(__file__).parent / "configs"
#: Every standalone config: ``<proxy>-*.conf`` at the top, or directly under ``<proxy>/``
#: (tests/configs/envoy/). Traefik's directory holds static + dynamic sets that reference each
#: other; tests/test_traefik.py runs those.
CONFIGS = sorted(p for p in _ROOT.glob("*") if p.is_file()) + sorted(
    p for d in ("caddy", "envoy") for p in (_ROOT / d).glob("*") if p.is_file()
)


def _proxy_of(path: Path) -> str:
    return path.parent.name if path.parent != _ROOT else path.name.split("-")[0]


pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _cells(result: CheckResult | str) -> dict[tuple[str, str], tuple[Any, ...]] | str:
    if isinstance(result, str):
        return result
    return {(c.upstream, c.identity): (c.outcome.value, c.status, c.sni, _timeless(c.reason)) for c in result.cells}


def _timeless(reason: str) -> str:
    """Go's expiry reason names the clock and the certificate's date ("current time
    2026-12-02T01:58:07Z is after 2026-12-01T01:58:07Z"): each runtime mints its own, a second apart."""
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", reason)


def _check(proxy: str, path: Path, runtime: str) -> CheckResult | str:
    try:
        return check(proxy, path, runtime=runtime)
    except LabError as exc:  # the same refusal on both runtimes is a verdict too
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(_ROOT)) for p in CONFIGS])
def test_same_verdicts_on_both_runtimes(local_runtime: str, docker_ready: str, path: Path) -> None:
    proxy = _proxy_of(path)
    local, docker = _check(proxy, path, "local"), _check(proxy, path, "docker")
    if isinstance(local, CheckResult) and isinstance(docker, CheckResult):
        assert (local.runtime, docker.runtime) == ("local", "docker")
        assert local.cells, f"{path.name}: no cells"
        assert local.rejected == docker.rejected
        assert local.adaptations == docker.adaptations
    a, b = _cells(local), _cells(docker)
    assert a == b, _differences(a, b)


def _differences(a: Any, b: Any) -> str:
    if isinstance(a, str) or isinstance(b, str):
        return f"local: {a}\ndocker: {b}"
    keys = sorted(set(a) | set(b))
    return "\n".join(f"{k}: local {a.get(k)} / docker {b.get(k)}" for k in keys if a.get(k) != b.get(k))


def test_docker_check_leaves_nothing_and_is_labelled(docker_ready: str) -> None:
    """The check's container carries the lab label while it runs and is gone afterwards."""
    seen: list[str] = []
    rt = dockerrt.DockerRuntime()
    real = dockerrt.SoloLab.create_solo

    def spy(self: dockerrt.SoloLab, role: str, command: list[str], **kw: Any) -> Any:
        ct = real(self, role, command, **kw)
        seen.append(self.id)
        labels = rt.client.containers.get(ct.id).labels
        assert labels[dockerrt.LABEL_LAB] == self.id and labels[dockerrt.LABEL_ROLE] == role
        attrs = rt.client.containers.get(ct.id).attrs
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        return ct

    mp = pytest.MonkeyPatch()
    mp.setattr(dockerrt.SoloLab, "create_solo", spy)
    try:
        result = check("nginx", Path(__file__).parent / "configs" / "nginx-multi-upstream.conf", runtime="docker")
    finally:
        mp.undo()
    assert result.runtime == "docker" and len(result.upstreams) == 4
    assert len(seen) == len(set(seen)) >= 2, seen  # one container per upstream group, each its own lab
    left = dockerrt.leftovers(rt.client)
    assert not [lab for lab in seen if lab in left], f"left behind: {[lab for lab in seen if lab in left]}"


def test_auto_says_which_runtime(docker_ready: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parent / "configs" / "haproxy-good.cfg"
    assert main(["check", "haproxy", str(path), "--accept", "wildcard"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("runtime: docker (")
    # The last line names the runtime, then the version that ran: "(1.26 s, docker runtime, haproxy 2.6.12 ...)".
    assert ", docker runtime, haproxy " in out.rstrip().splitlines()[-1]


# -- the pytest plugin: where its checks run ---------------------------------------------------
_PROBE = """
import os
from pathlib import Path

CFG = Path({cfg!r})


def test_where(trustlab_check):
    result = trustlab_check("haproxy", CFG, accept=("wildcard",))
    assert result.ok, result.summary()
    assert result.runtime == os.environ["EXPECT_RUNTIME"], result.runtime
"""


def _pytest_in(tmp_path: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run pytest on *tmp_path* in a fresh process, with the plugin loaded once either way."""
    registered = any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = [] if registered else ["-p", "harness.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.parametrize(
    ("ini", "env", "fixture", "expect"),
    [
        (None, "local", None, "local"),
        (None, "docker", None, "docker"),
        ("docker", None, None, "docker"),  # the ini option
        ("docker", "local", None, "local"),  # the environment beats the ini option
        (None, "docker", "local", "local"),  # trustlab_config beats both
        (None, None, None, "docker"),  # auto: docker is ready here
    ],
    ids=["env-local", "env-docker", "ini-docker", "env-over-ini", "fixture-over-env", "auto"],
)
def test_plugin_runtime_setting(
    local_runtime: str,
    docker_ready: str,
    tmp_path: Path,
    ini: str | None,
    env: str | None,
    fixture: str | None,
    expect: str,
) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "test_probe.py").write_text(_PROBE.format(cfg=str(root / "tests/configs/haproxy-good.cfg")))
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + (f"trustlab_runtime = {ini}\n" if ini else ""))
    if fixture:
        (tmp_path / "conftest.py").write_text(
            "import pytest\n\n\n@pytest.fixture(scope='session')\ndef trustlab_config():\n"
            f"    return {{'runtime': {fixture!r}}}\n"
        )
    environ = {k: v for k, v in os.environ.items() if k != "TRUSTLAB_RUNTIME"}
    environ.update(EXPECT_RUNTIME=expect, PYTHONPATH=os.pathsep.join([str(root), environ.get("PYTHONPATH", "")]))
    if env:
        environ["TRUSTLAB_RUNTIME"] = env
    proc = _pytest_in(tmp_path, environ)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


def test_plugin_unknown_runtime_is_a_clear_failure(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "test_probe.py").write_text(_PROBE.format(cfg=str(root / "tests/configs/haproxy-good.cfg")))
    environ = {
        **os.environ,
        "TRUSTLAB_RUNTIME": "podman",
        "EXPECT_RUNTIME": "-",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    proc = _pytest_in(tmp_path, environ)
    assert proc.returncode == 1
    assert "runtime 'podman' is unknown" in proc.stdout and "auto, local, docker" in proc.stdout


# -- challenges: graded by check, so on either runtime -----------------------------------------
#: One per proxy kind plus the grader's special cases: an optional identity (legit-deep),
#: an SNI-routed backend, an IP target. (All 19 were compared once: 402 cells, 0 differences.)
CHALLENGES = ["nginx-deep-chain", "nginx-sni-routed", "haproxy-ip-target", "apache-published-block"]


@pytest.mark.parametrize("cid", CHALLENGES)
def test_challenge_grades_the_same_on_both_runtimes(local_runtime: str, docker_ready: str, cid: str) -> None:
    from harness.course import challenges

    ch = challenges.get(cid)
    for path, solved in ((ch.start_file, False), (ch.solution_file, True)):
        local = challenges.grade(ch, path, runtime="local")
        docker = challenges.grade(ch, path, runtime="docker")
        assert (local.solved, docker.solved) == (solved, solved), (path.name, local.failures, docker.failures)
        assert [(c.upstream, c.identity, c.outcome, c.status, c.sni) for c in local.cells] == [
            (c.upstream, c.identity, c.outcome, c.status, c.sni) for c in docker.cells
        ]
