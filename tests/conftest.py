"""Shared fixtures: a hermetic environment, prerequisites declared once, one shared matrix."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator

import pytest

from harness.proxies import driver

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REQUIRE_PROXIES = IN_CI or os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1"

_LEAKY_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSLKEYLOGFILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing from the developer's shell may change a TLS verdict (or touch their challenge progress)."""
    for name in _LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in ("TRUSTLAB_WORKSHOP_SECRET", "TRUSTLAB_WORKSHOP_HINTS", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRUSTLAB_STATE_DIR", str(tmp_path_factory.mktemp("state")))


def _missing_prerequisites() -> list[str]:
    from harness.runtimes import sandbox
    from harness.runtimes.local import check_namespaces

    missing = [k for k in ("nginx", "apache", "haproxy") if not driver(k).find_binary()]
    if not shutil.which("unshare") or not shutil.which("ip"):
        missing.append("unshare/ip")
    elif problem := check_namespaces() or sandbox.available():
        missing.append(problem)
    return missing


@pytest.fixture(scope="session")
def local_runtime() -> str:
    """The local runtime, or a skip (a failure in CI: a missing proxy is never a skip there)."""
    missing = _missing_prerequisites()
    if missing:
        msg = f"local runtime unavailable: {', '.join(missing)} (run `make test` to install)"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    return "local"


@pytest.fixture(scope="session")
def local_matrix(local_runtime: str):  # type: ignore[no-untyped-def]
    """One full local matrix, shared by the tests that only read it."""
    from harness import runner, scenarios

    return runner.run(scenarios.select(), runtime=local_runtime)


REQUIRE_DOCKER = IN_CI or os.environ.get("TRUSTLAB_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="session")
def docker_ready() -> str:
    """The docker runtime (daemon + lab image), or a skip (a failure in CI, or when
    TRUSTLAB_REQUIRE_DOCKER=1: a missing daemon is never a skip there)."""
    from harness.runtimes import images

    ready, why = images.docker_ready()
    if not ready:
        if REQUIRE_DOCKER:
            pytest.fail(f"docker runtime unavailable in CI: {why}")
        pytest.skip(why)
    return "docker"


@pytest.fixture(params=["local", "docker"])
def each_runtime(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both runtimes (each with its own prerequisite fixture)."""
    return str(request.getfixturevalue("local_runtime" if request.param == "local" else "docker_ready"))


# -- tiers: every test that starts a runtime carries its marker (`make test-fast` deselects them) ----
# The markers that say "needs more than Python": proxies on the local runtime, the docker runtime,
# the notebooks' kernels, a browser. `make test-fast` runs `-m "not (any of these)"`.
RUNTIME_MARKERS = ("integration", "docker", "notebooks", "browser")

# A fixture that starts (or proves ready) a runtime marks each test that asks for it, so a test
# cannot reach a runtime through a fixture and miss its tier.
_FIXTURE_MARKERS = {
    "local_runtime": "integration",
    "local_matrix": "integration",
    "docker_ready": "docker",
    "docker_runtime": "docker",
    "docker_matrix": "docker",
    "browser": "browser",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's worker names each test's group from its markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        wanted = {marker for fixture, marker in _FIXTURE_MARKERS.items() if fixture in names}
        callspec = getattr(item, "callspec", None)
        if "each_runtime" in names and callspec is not None:
            wanted.add("integration" if callspec.params.get("each_runtime") == "local" else "docker")
        # A full matrix and what compares with it run alone: beside 3 busy workers (load 15-20
        # with other users), envoy cells of the shared matrices failed (ssl: unexpected eof).
        if names & {"local_matrix", "docker_matrix"}:
            wanted.add("serial")
        for marker in sorted(wanted - {m.name for m in item.iter_markers()}):
            item.add_marker(marker)
    _share_wide_fixtures(items)


# -- parallel: `make test` runs under pytest-xdist (`-n 4 --dist loadgroup`) ------------------------
# A session- or module-scoped fixture is made once per worker that asks for it, so tests that read
# one (the full local matrix, the docker matrix, a classroom's running container) share one worker:
# every test that asks for such a fixture, directly or through another, gets the xdist group of
# the fixtures it shares with others (connected: local_matrix and docker_matrix are one group, as
# a test compares them). A prerequisite check is cheap and shared by hundreds of tests: no group.
_CHEAP_WIDE = {
    "local_runtime",
    "docker_ready",
    "docker_runtime",
    "notebook_tools",
    "lab_cgroups",
    "caddy_runtime",
    "envoy_ready",
    "traefik",
    "proxies",
}


def _share_wide_fixtures(items: list[pytest.Item]) -> None:
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    wide_of: dict[pytest.Item, list[str]] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        wide = [  # by where it is defined too: test_hub and test_classroom each have a `room`
            f"fixture:{defs[-1].baseid.removeprefix('tests').strip('/').removesuffix('.py')}:{name}".replace("::", ":")
            for name, defs in (info.name2fixturedefs.items() if info else ())
            if name not in _CHEAP_WIDE and defs[-1].scope != "function" and defs[-1].baseid.startswith("tests")
        ]
        wide += [f"group:{m.args[0]}" for m in item.iter_markers("xdist_group") if m.args]
        for a, b in zip(wide, wide[1:], strict=False):
            parent[find(a)] = find(b)
        if wide:
            wide_of[item] = wide
    for item, wide in wide_of.items():
        root = find(wide[0])
        group = "+".join(sorted({n.split(":", 1)[1] for n in parent if find(n) == root}))
        # xdist joins every xdist_group name a test carries: the component's name replaces the
        # test's own (a module's pytestmark group stays beside it; _name_group names it alone).
        item.own_markers[:] = [m for m in item.own_markers if m.name != "xdist_group"]
        item.add_marker(pytest.mark.xdist_group(group))
        if getattr(item.config, "workerinput", None) is not None and item.config.getvalue("loadgroup"):
            _name_group(item, group)


def _name_group(item: pytest.Item, group: str) -> None:
    """What xdist's worker does for loadgroup (``nodeid@group``, read back by its scheduler), here:
    pytest 9.2 keeps a node's id in ``_id`` (a NodeId), and xdist 3.8 still sets ``_nodeid``, which
    nothing reads any more, so every test was scheduled on its own (one worker per classroom test)."""
    from _pytest.nodeid import NodeId

    if isinstance(getattr(item, "_id", None), NodeId) and not item.nodeid.endswith(f"@{group}"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")  # type: ignore[attr-defined]


# And a test that starts one without a fixture is caught where it starts: the entry points every
# runtime goes through (a local lab worker, a detached holder, a docker container or network) log
# what started, and a test that started one without any runtime marker fails in teardown.
# (Asking the docker daemon whether it is there is not starting a runtime: `check`'s auto choice
# does that in fast tests; creating a container or a network is.)
_STARTED: list[str] = []
_STARTS_AT = pytest.StashKey[int]()


def _logging(kind: str, func):  # type: ignore[no-untyped-def]
    def logged(*args, **kwargs):  # type: ignore[no-untyped-def]
        value = func(*args, **kwargs)
        _STARTED.append(kind)
        return value

    logged.__wrapped__ = func  # type: ignore[attr-defined]
    return logged


def pytest_configure(config: pytest.Config) -> None:
    from harness import held
    from harness.runtimes.local import LocalRuntime

    LocalRuntime._spawn = _logging("integration", LocalRuntime._spawn)  # type: ignore[method-assign]
    held._spawn_holder = _logging("integration", held._spawn_holder)
    try:
        from docker.models.containers import ContainerCollection
        from docker.models.networks import NetworkCollection
    except ImportError:  # pragma: no cover - docker is a locked extra
        return
    ContainerCollection.create = _logging("docker", ContainerCollection.create)  # type: ignore[method-assign]
    NetworkCollection.create = _logging("docker", NetworkCollection.create)  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # type: ignore[no-untyped-def]
    item.stash[_STARTS_AT] = len(_STARTED)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    result = yield
    started = sorted(set(_STARTED[item.stash.get(_STARTS_AT, len(_STARTED)) :]))
    # Any runtime marker will do: `check` and `challenge check` choose docker when its daemon and
    # image are there, else local, so a test marked integration may start a container in CI.
    if started and not {m.name for m in item.iter_markers()} & set(RUNTIME_MARKERS):
        pytest.fail(
            f"{item.nodeid} started a runtime ({', '.join(started)}) without a runtime marker: add "
            f"@pytest.mark.{started[0]} so `make test-fast` leaves it out (tests/conftest.py, tiers)",
            pytrace=False,
        )
    return result


# A test marked `serial` runs alone: it measures time, memory or process limits, which tests
# beside it would skew (or, for a fork bomb at its uid's process limit, be hurt by). Under xdist
# every other test holds a shared lock and a serial test the exclusive one; the turnstile keeps
# a waiting serial test from being starved by the others' stream of shared locks.
@contextlib.contextmanager
def _turn(config: pytest.Config, alone: bool) -> Iterator[None]:
    if not hasattr(config, "workerinput"):  # one process: every test runs alone anyway
        yield
        return
    where = config._tmp_path_factory.getbasetemp().parent  # type: ignore[attr-defined]  # the run's, shared by its workers
    with open(where / "serial.turnstile", "a") as gate, open(where / "serial.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    with _turn(item.config, alone=item.get_closest_marker("serial") is not None):
        return (yield)


# -- `make reliability` reports how many bad-input cases are handled as promised -----------------
_BAD_INPUT: dict[str, bool] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "bad_input" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _BAD_INPUT[report.nodeid] = _BAD_INPUT.get(report.nodeid, True) and report.passed


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _BAD_INPUT:
        handled = sum(_BAD_INPUT.values())
        terminalreporter.write_line(
            f"bad input: {handled}/{len(_BAD_INPUT)} cases handled as promised "
            "(one line, exit 2, no traceback, bounded, nothing lost)"
        )
