"""The test tiers (tests/conftest.py): a test that starts a runtime carries its marker, so
`make test-fast` (`-m "not integration and not docker and ..."`) runs only what needs no proxy,
docker daemon or browser. Shown on a throwaway suite that uses this conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

INNER = """
import pytest
from harness import runner, scenarios


def _one_cell():
    return runner.run([scenarios.resolve("nginx/good")], runtime="local", identities=("legit",))


def test_unmarked_starts_a_lab():
    assert _one_cell().cells


@pytest.mark.integration
def test_marked_starts_a_lab():
    assert _one_cell().cells


def test_asks_for_the_local_runtime(local_runtime):
    assert local_runtime == "local"


def test_pure():
    assert scenarios.resolve("nginx/good").id == "nginx/good"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    integration\n    docker\n    notebooks\n    browser\n    serial\n")
    pytester.makepyfile(test_inner=INNER)
    return pytester


@pytest.mark.integration
def test_a_test_that_starts_a_lab_without_its_marker_fails(suite: pytest.Pytester, local_runtime: str) -> None:
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_unmarked_starts_a_lab*",
            "*test_unmarked_starts_a_lab started a runtime (integration) without a runtime marker*",
        ]
    )


def test_the_fast_tier_leaves_out_a_test_that_asks_for_a_runtime_fixture(suite: pytest.Pytester) -> None:
    """Collection only: the runtime fixture marks its test, so `-m "not integration"` deselects it."""
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-m", "not integration")
    result.stdout.fnmatch_lines(["*test_unmarked_starts_a_lab*", "*test_pure*", "*2/4 tests collected (2 deselected)*"])
    assert "test_asks_for_the_local_runtime" not in result.stdout.str()


SERIAL = """
import json, os, time
import pytest


def _span(name):
    t0 = time.monotonic()
    time.sleep(0.5)
    with open(os.environ["TIERS_LOG"], "a") as f:
        f.write(json.dumps([name, t0, time.monotonic()]) + "\\n")


@pytest.mark.parametrize("i", range(8))
def test_other(i):
    _span(f"other{i}")


@pytest.mark.serial
def test_alone():
    _span("alone")
"""


def test_a_serial_test_runs_with_no_other_beside_it(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under xdist the others run side by side, and the `serial` one in a gap they leave."""
    import json

    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    integration\n    docker\n    notebooks\n    browser\n    serial\n")
    pytester.makepyfile(test_serial=SERIAL)
    log = tmp_path / "spans.jsonl"
    monkeypatch.setenv("TIERS_LOG", str(log))
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "3").assert_outcomes(passed=9)
    spans = {name: (t0, t1) for name, t0, t1 in map(json.loads, log.read_text().splitlines())}
    (a0, a1) = spans.pop("alone")
    assert [n for n, (t0, t1) in spans.items() if t0 < a1 and a0 < t1] == []
    assert any(t0 < u1 and u0 < t1 for n, (t0, t1) in spans.items() for m, (u0, u1) in spans.items() if n < m)
