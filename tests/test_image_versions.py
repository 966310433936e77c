"""The two lab images: the default one carries each kind's default installation only, the
versions image (``images build --versions``, FROM the default one) every other installed version,
and the docker runtime starts the one a run's installations need.

Both are built into a throwaway repository (``trustlab-test-PID/lab``, ``.../lab-versions``):
``current`` on a shared daemon is never rebuilt, retagged or removed here. In CI the inputs equal
``current``'s, so the builds only tag the images .ci/docker-setup made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest

from harness import runner, scenarios
from harness.errors import PrerequisiteError
from harness.proxies import driver, kinds
from harness.runtimes import images
from harness.runtimes.docker import DockerRuntime
from harness.versions import parse_selector

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def built(docker_ready: str) -> Any:
    """``(lab, versions)``: both images, built for this module's own tags; removed afterwards."""
    repo = f"trustlab-test-{os.getpid()}/lab"
    lab, versions = f"{repo}:current", images.versions_image(f"{repo}:current")
    images.build(image=lab, versions=True, progress=lambda _: None)
    yield lab, versions
    c = images.client()
    for name in (repo, versions.rpartition(":")[0]):
        for img in c.images.list(name=name):
            for tag in img.tags:
                if tag.startswith(f"{name}:"):
                    c.images.remove(tag)


@pytest.fixture
def on(built: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The runtime's images are this module's (TRUSTLAB_IMAGE; the versions image follows it)."""
    monkeypatch.setenv("TRUSTLAB_IMAGE", built[0])
    monkeypatch.delenv("TRUSTLAB_VERSIONS_IMAGE", raising=False)
    return built


def _extras() -> list[images.ImageEntry]:
    _, extras = images.split_plan(images.image_plan())
    if not extras:
        pytest.skip("no installation beyond the defaults on this host (trustlab proxies install --all)")
    return extras


def test_the_lab_image_has_exactly_each_kinds_default(built: Any) -> None:
    c = images.client()
    records = images.image_proxies(c, built[0])
    # One installation per kind, at the driver's image path: nothing else.
    assert sorted((r["kind"], r["binary"]) for r in records) == sorted(
        (k.value, driver(k).image_binary) for k in kinds()
    )
    # Each binary answers its version probe inside the image with the version its label records.
    script = "; ".join(
        f"echo {r['kind']}; {r['binary']} {' '.join(driver(r['kind']).version_args)} 2>&1" for r in records
    )
    out = c.containers.run(built[0], ["sh", "-c", script], remove=True, network_mode="none").decode()
    said = dict(re.findall(r"^(\w+)\n(.*?)(?=^\w+\n|\Z)", out, flags=re.M | re.S))
    for r in records:
        m = re.search(driver(r["kind"]).version_regex, said.get(r["kind"], ""))
        assert m and m.group(1) == r["version"], (r, said.get(r["kind"]))


def test_the_versions_image_adds_every_other_installation(built: Any) -> None:
    c = images.client()
    lab, versions = (c.images.get(ref) for ref in built)
    # FROM the lab image: every one of its layers is shared.
    assert lab.history()[0]["Id"] in {h["Id"] for h in versions.history()}
    defaults = images.image_proxies(c, built[0])
    carried = images.image_proxies(c, built[1])
    extras = [e.record() for e in images.split_plan(images.image_plan())[1]]
    key = lambda r: (r["kind"], r["version"], r["binary"])  # noqa: E731
    assert sorted(map(key, carried)) == sorted(map(key, [*defaults, *extras]))
    assert not {key(r) for r in defaults} & {key(r) for r in extras}


def test_a_run_of_a_version_the_lab_image_lacks_uses_the_versions_image(on: Any) -> None:
    extra = next((e for e in _extras() if e.kind == "nginx"), None)
    if extra is None:
        pytest.skip("no extra nginx version on this host (trustlab proxies install nginx@trixie)")
    rt = DockerRuntime()
    picked = next(i for i in rt.installations("nginx") if i.version == extra.version)
    assert rt.image_for([None]) == on[0]
    assert rt.image_for([picked]) == on[1]
    scs = scenarios.builtin()
    sel = parse_selector(f"nginx@{extra.version}", kinds=tuple(k.value for k in kinds()))
    res = runner.run([scs["nginx/good"]], runtime=rt, selectors=[sel])
    assert {c.proxy_version for c in res.cells} == {extra.version}
    assert [c for c in res.cells if c.outcome != c.expected] == []
    # The binary that answered: nginx before 1.23.4 (the lab image's 1.22) offers a backend TLS 1.2 only.
    newer = tuple(int(x) for x in extra.version.split(".")) >= (1, 23, 4)
    assert {c.tls for c in res.cells if c.tls} == ({"TLSv1.3"} if newer else {"TLSv1.2"})


def test_a_missing_versions_image_is_one_line_naming_it_and_what_it_lacks(
    on: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = next((e for e in _extras() if e.kind == "nginx"), None)
    if extra is None:
        pytest.skip("no extra nginx version on this host (trustlab proxies install nginx@trixie)")
    absent = f"trustlab-test-{os.getpid()}/absent:none"  # never built: the image a user lacks
    env = {**os.environ, "TRUSTLAB_VERSIONS_IMAGE": absent}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "matrix",
            "--runtime",
            "docker",
            "--proxy",
            f"nginx@{extra.version}",
            "--identity",
            "legit",
            "--no-plot",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert absent in lines[0] and f"nginx {extra.version}" in lines[0], lines[0]
    assert images.VERSIONS_BUILD in lines[0], lines[0]
    # A run handed a host installation (trustlab check's prepared proxies) stops the same way,
    # before any container starts; a default run on the same images needs no versions image.
    monkeypatch.setenv("TRUSTLAB_VERSIONS_IMAGE", absent)
    rt = DockerRuntime()
    host = next(i for i in driver("nginx").installations() if i.version == extra.version)
    with pytest.raises(
        PrerequisiteError,
        match=rf"image {re.escape(absent)} is missing .*lacks nginx "
        rf"{re.escape(extra.version)}\); run: {re.escape(images.VERSIONS_BUILD)}$",
    ):
        rt.image_for([None, host])
    assert rt.image_for([None, None]) == on[0]
