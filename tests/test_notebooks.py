"""The teaching notebooks are tested source: each runs top to bottom, on each runtime.

Every notebook picks its runtime with :func:`harness.choose_runtime` (``auto``, overridden by
``TRUSTLAB_RUNTIME``), so each one is executed twice: ``TRUSTLAB_RUNTIME=local`` and
``TRUSTLAB_RUNTIME=docker`` (a missing docker daemon or image is a failure in CI).

A notebook cell that shows a spoof or a block asserts it, so a change in a proxy's real
behaviour fails here, in the notebook that teaches it. Notebooks are committed without
outputs; ``make notebooks`` renders executed copies to ``notebooks/_build/``.

Missing notebook tooling (nbclient, ipykernel) is a skip on a developer machine and a
failure in CI (``CI=true``), like a missing proxy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
# As in conftest.py: in CI a missing part is a failure, never a skip.
REQUIRED = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1"
TOOLS = ("nbclient", "nbformat", "ipykernel", "jupyter_client", "matplotlib_inline")


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_runtime_is_chosen_not_pinned(path: Path) -> None:
    """Each notebook asks harness.choose_runtime(); none pins a runtime in its code."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "RUNTIME = harness.choose_runtime()" in code
    assert 'runtime="local"' not in code and 'runtime="docker"' not in code
    assert '== "local"' not in code and '== "docker"' not in code


def test_notebooks_exist() -> None:
    names = [p.name[:2] for p in ALL]
    # 00-07 lessons, 08 check your own config, 09 mTLS, reuse and revocation, 10 held labs, 11 versions,
    # 12 Caddy and Traefik, 13 Envoy, 14 Traffic Server and Squid
    assert names == [f"{n:02d}" for n in range(15)], names


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_committed_without_outputs(path: Path) -> None:
    """Committed notebooks are source: no outputs, no execution counts, a kernel any venv has."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for n, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {n} has outputs; clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {n} has an execution count"


@pytest.fixture(scope="session")
def notebook_tools() -> None:
    missing = [m for m in TOOLS if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"notebook tooling missing: {', '.join(missing)} (pip install -e '.[notebooks]')"
        if REQUIRED:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_runs(path: Path, each_runtime: str, notebook_tools: None) -> None:
    """Run in a child process (its kernel and ZMQ sockets never touch this one), this interpreter."""
    if path.name.startswith("11-"):
        _two_nginx_versions(each_runtime)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.course.render", "execute", "--timeout", "120", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "TRUSTLAB_RUNTIME": each_runtime},
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, f"{path.name} failed on the {each_runtime} runtime:\n{proc.stderr[-6000:]}"
    # Each notebook is meant to take seconds; a slow one fails loudly rather than creeping up.
    # 10 starts and stops four held labs through the CLI, each a fresh process (about 35 s alone);
    # 07 runs the whole matrix (about 1500 cells, eight proxies) and 11 a matrix per nginx version.
    budget = {"10": 120, "07": 240, "11": 240}.get(path.name[:2], 60)
    assert elapsed < budget, f"{path.name} took {elapsed:.1f} s on the {each_runtime} runtime"


def _two_nginx_versions(runtime: str) -> None:
    """Notebook 11 diffs two nginx releases: the local runtime must have them in CI; the lab image
    carries one nginx (Debian's), so on docker it runs only where an image carries two."""
    from harness import versions_of

    found = versions_of("nginx", runtime=runtime)
    if len(found) >= 2:
        return
    why = f"notebook 11 needs two nginx versions on the {runtime} runtime; it has {', '.join(found) or 'none'}"
    # In CI the local runtime has every declared version once `trustlab proxies install` exists
    # (harness.proxies.install; .ci/run installs them): then a missing one is a failure.
    if REQUIRED and runtime == "local" and importlib.util.find_spec("harness.proxies.install") is not None:
        pytest.fail(f"{why} (trustlab proxies install --all)")
    pytest.skip(why)


def test_a_bare_image_output_is_flagged() -> None:
    """The alt-text check the executor applies can fail."""
    nbformat = pytest.importorskip("nbformat")
    from harness.course.render import images_without_alt

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("fig"), nbformat.v4.new_code_cell("pic")]
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})]
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"text/html": "<img src='x' alt='a grid'>"})]
    assert images_without_alt(nb) == [0]
