"""Shared fixtures: a hermetic environment, prerequisites declared once, one shared matrix."""

from __future__ import annotations

import os
import shutil

import pytest

from harness.proxies import driver

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REQUIRE_PROXIES = IN_CI or os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1"

_LEAKY_ENV = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "SSLKEYLOGFILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
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
    from harness import sandbox
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
    from harness import images

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
