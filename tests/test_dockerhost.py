"""Finding the docker daemon the way the docker CLI does, on fake home directories (no daemon)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest

from harness.errors import PrerequisiteError
from harness.runtimes import dockerhost


def _context(home: Path, name: str, host: str, *, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = home / ".docker" / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    meta.joinpath("meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}})
    )
    if tls:
        d = home / ".docker" / "contexts" / "tls" / digest / "docker"
        d.mkdir(parents=True)
        for f in ("ca.pem", "cert.pem", "key.pem"):
            (d / f).write_text("x")


def _use(home: Path, name: str) -> None:
    (home / ".docker").mkdir(exist_ok=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {}, "currentContext": name}))


def _sock(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


@pytest.fixture
def no_default_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the default socket somewhere that does not exist (this machine may have one)."""
    missing = tmp_path / "no-such" / "docker.sock"
    monkeypatch.setattr(dockerhost, "LINUX_SOCKET", str(missing))
    return missing


def test_docker_host_wins_over_everything(tmp_path: Path) -> None:
    _context(tmp_path, "colima", "unix:///elsewhere.sock")
    _use(tmp_path, "colima")
    d = dockerhost.find({"DOCKER_HOST": "tcp://10.0.0.5:2376", "DOCKER_TLS_VERIFY": "1"}, tmp_path, "linux")
    assert (d.url, d.source, d.tls_verify, d.tls_dir) == (
        "tcp://10.0.0.5:2376",
        "DOCKER_HOST",
        True,
        tmp_path / ".docker",
    )


def test_current_context_from_config_json(tmp_path: Path) -> None:
    _context(tmp_path, "colima", f"unix://{tmp_path}/.colima/default/docker.sock")
    _use(tmp_path, "colima")
    d = dockerhost.find({}, tmp_path, "macos")
    assert d.url == f"unix://{tmp_path}/.colima/default/docker.sock"
    assert d.source == "docker context 'colima'"
    assert d.socket_path == tmp_path / ".colima/default/docker.sock"


def test_docker_context_env_overrides_config_json(tmp_path: Path) -> None:
    _context(tmp_path, "colima", "unix:///a.sock")
    _context(tmp_path, "remote", "tcp://build.example:2376", tls=True)
    _use(tmp_path, "colima")
    d = dockerhost.find({"DOCKER_CONTEXT": "remote"}, tmp_path, "linux")
    assert d.url == "tcp://build.example:2376"
    assert d.tls_dir == tmp_path / ".docker/contexts/tls" / hashlib.sha256(b"remote").hexdigest() / "docker"
    assert d.tls_verify


def test_docker_config_env_moves_the_config_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    _context(tmp_path, "x", "unix:///x.sock")
    (tmp_path / ".docker").rename(cfg)
    cfg.joinpath("config.json").write_text(json.dumps({"currentContext": "x"}))
    assert dockerhost.find({"DOCKER_CONFIG": str(cfg)}, tmp_path / "nohome", "linux").url == "unix:///x.sock"


def test_a_missing_context_names_it_and_the_fix(tmp_path: Path) -> None:
    _use(tmp_path, "gone")
    with pytest.raises(PrerequisiteError, match=r"context 'gone' does not exist .*docker context use default"):
        dockerhost.find({}, tmp_path, "linux")


def test_a_broken_config_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker/config.json").write_text("{not json")
    with pytest.raises(PrerequisiteError, match="config.json: unreadable"):
        dockerhost.find({}, tmp_path, "linux")


def test_default_context_uses_the_default_socket_when_it_exists(tmp_path: Path, no_default_socket: Path) -> None:
    _sock(no_default_socket)
    _use(tmp_path, "default")
    d = dockerhost.find({}, tmp_path, "linux")
    assert (d.url, d.source) == (f"unix://{no_default_socket}", "the default socket")


@pytest.mark.parametrize(
    ("platform", "rel", "source"),
    [
        ("macos", ".docker/run/docker.sock", "Docker Desktop"),
        ("linux", ".docker/desktop/docker.sock", "Docker Desktop"),
        ("macos", ".colima/default/docker.sock", "Colima"),
        ("linux", ".colima/docker.sock", "Colima"),
    ],
)
def test_laptop_sockets_are_found_when_the_default_is_missing(
    tmp_path: Path, no_default_socket: Path, platform: str, rel: str, source: str
) -> None:
    home = tmp_path / "h"  # short: a unix socket path is limited to ~104 bytes
    path = _sock(home / rel)
    d = dockerhost.find({}, home, platform)
    assert (d.url, d.source) == (f"unix://{path}", source)
    assert dockerhost.mount_source(d, platform) == "/var/run/docker.sock"  # the VM's socket


def test_rootless_socket_under_xdg_runtime_dir(tmp_path: Path, no_default_socket: Path) -> None:
    path = _sock(tmp_path / "run" / "docker.sock")
    d = dockerhost.find({"XDG_RUNTIME_DIR": str(tmp_path / "run")}, tmp_path / "h", "linux")
    assert (d.url, d.source) == (f"unix://{path}", "rootless docker")
    assert dockerhost.mount_source(d, "linux") == str(path)  # a daemon on this host: its own path


def test_windows_uses_the_named_pipe(tmp_path: Path) -> None:
    d = dockerhost.find({}, tmp_path, "windows")
    assert (d.url, d.socket_path) == ("npipe:////./pipe/docker_engine", None)


def test_nothing_found_says_what_was_looked_for_and_what_to_do(tmp_path: Path, no_default_socket: Path) -> None:
    with pytest.raises(PrerequisiteError) as mac:
        dockerhost.find({}, tmp_path, "macos")
    assert "start Docker Desktop" in str(mac.value)
    assert str(tmp_path / ".docker/run/docker.sock") in str(mac.value)
    assert "systemctl" not in str(mac.value)
    with pytest.raises(PrerequisiteError) as linux:
        dockerhost.find({}, tmp_path, "linux")
    assert "sudo systemctl start docker" in str(linux.value)
    assert "\n" not in str(linux.value)


def test_the_client_follows_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_default_socket: Path
) -> None:
    """images.client() connects where find() points: a context naming a dead socket is refused
    with that socket's path and the context's name, before any request."""
    pytest.importorskip("docker")
    from harness.runtimes import images

    _context(tmp_path, "colima", f"unix://{tmp_path}/.colima/default/docker.sock")
    _use(tmp_path, "colima")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    with pytest.raises(PrerequisiteError, match=r"\.colima/default/docker\.sock, from docker context 'colima'"):
        images.client(timeout=1)
    # A socket that exists but nobody answers: the same context, and what to do.
    _sock(tmp_path / ".colima/default/docker.sock")
    with pytest.raises(PrerequisiteError, match="no docker daemon answers at unix://"):
        images.client(timeout=1)


# -- nothing on the docker path needs a POSIX-only call (native Windows has none of these) ----------
def test_lab_dirs_work_without_signal_masks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import signal

    from harness import runner

    monkeypatch.delattr(signal, "pthread_sigmask")
    monkeypatch.setenv("TRUSTLAB_TMPDIR", str(tmp_path))
    with runner.lab_dir() as path:
        assert path.is_dir()
    assert not path.exists()


def test_liveness_and_root_without_posix_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from harness import processes as _process
    from harness.runtimes import local

    assert _process.alive(os.getpid())
    assert not _process.alive(0)
    monkeypatch.delattr(os, "geteuid")
    assert _process.is_root() is False
    assert local.namespace_mode()[1].startswith("unprivileged")
    monkeypatch.setattr(_process.Path, "read_text", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    assert _process.start_ticks(os.getpid()) == "?"


def test_windows_liveness_never_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows os.kill(pid, 0) would terminate the process: the probe must not call it."""
    import os

    from harness import processes as _process

    monkeypatch.setattr(_process, "WINDOWS", True)
    monkeypatch.setattr(_process, "_windows_alive", lambda pid: pid == 42)
    monkeypatch.setattr(os, "kill", lambda *a: pytest.fail("os.kill called on Windows"))
    assert _process.alive(42) and not _process.alive(43)
