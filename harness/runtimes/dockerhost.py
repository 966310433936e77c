"""Where the docker daemon is: found the way the docker CLI finds it, plus the usual sockets.

Order (the first that applies wins; :func:`find` says which one it used):

1. ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` / ``DOCKER_CERT_PATH``, as the CLI reads them);
2. the docker context: ``DOCKER_CONTEXT``, else ``currentContext`` in ``$DOCKER_CONFIG/config.json``
   (``~/.docker`` by default); a named context's endpoint is ``Endpoints.docker.Host`` in
   ``contexts/meta/<sha256(name)>/meta.json`` and its TLS files are under ``contexts/tls/<sha256>/docker``;
3. the platform's default endpoint when it exists: ``/var/run/docker.sock`` (Linux, and macOS when
   Docker Desktop made the link), the named pipe ``npipe:////./pipe/docker_engine`` (Windows);
4. sockets that the default context does not name but a laptop often has: Docker Desktop's
   (``~/.docker/run/docker.sock`` on macOS, ``~/.docker/desktop/docker.sock`` on Linux), Colima's
   (``~/.colima/default/docker.sock``, ``~/.colima/docker.sock``), rootless docker's
   (``$XDG_RUNTIME_DIR/docker.sock``).

Nothing here talks to the daemon; :func:`harness.runtimes.images.client` connects to what it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PrerequisiteError

WINDOWS_PIPE = "npipe:////./pipe/docker_engine"
LINUX_SOCKET = "/var/run/docker.sock"
#: Where Docker Desktop's and Colima's daemons (in their VM) have their socket: what a bind mount names.
VM_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class Daemon:
    """A docker endpoint: its URL and why it was chosen."""

    url: str
    source: str
    #: TLS files (ca.pem, cert.pem, key.pem) for a tcp:// endpoint that uses TLS, else None.
    tls_dir: Path | None = None
    tls_verify: bool = False

    @property
    def socket_path(self) -> Path | None:
        """The unix socket's path, for a ``unix://`` endpoint."""
        return Path(self.url[len("unix://") :]) if self.url.startswith("unix://") else None


def platform_name() -> str:
    """``linux``, ``macos`` or ``windows`` (what the hints are written for)."""
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith(("win", "cygwin")):
        return "windows"
    return "linux"


def start_hint(platform: str | None = None) -> str:
    """What to do when no daemon answers, for this platform (one clause)."""
    platform = platform or platform_name()
    if platform == "macos":
        return "start Docker Desktop (or `colima start`) and wait until it says it is running"
    if platform == "windows":
        return "start Docker Desktop and wait until it says it is running"
    return (
        "start it: sudo systemctl start docker (rootless docker: systemctl --user start docker; "
        "a fresh Debian machine: bash .ci/docker-setup), or use --runtime local"
    )


def config_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    e = os.environ if env is None else env
    if e.get("DOCKER_CONFIG"):
        return Path(e["DOCKER_CONFIG"])
    return (home or Path.home()) / ".docker"


def current_context(env: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """The context the docker CLI would use: ``DOCKER_CONTEXT``, else config.json's, else default."""
    e = os.environ if env is None else env
    if e.get("DOCKER_CONTEXT"):
        return e["DOCKER_CONTEXT"]
    path = config_dir(env, home) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return "default"
    except (OSError, ValueError) as exc:
        raise PrerequisiteError(f"docker runtime: {path}: unreadable ({exc}); fix or remove it") from None
    name = data.get("currentContext") if isinstance(data, dict) else None
    return str(name) if name else "default"


def context_endpoint(name: str, env: Mapping[str, str] | None = None, home: Path | None = None) -> Daemon:
    """The docker endpoint of the named (non-default) context."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    contexts = config_dir(env, home) / "contexts"
    meta = contexts / "meta" / digest / "meta.json"
    try:
        data = json.loads(meta.read_text())
        endpoint = data["Endpoints"]["docker"]
        host = str(endpoint["Host"])
    except FileNotFoundError:
        raise PrerequisiteError(
            f"docker runtime: docker context {name!r} does not exist ({meta} is missing); "
            "choose another: docker context use default"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise PrerequisiteError(
            f"docker runtime: docker context {name!r}: {meta} has no Endpoints.docker.Host"
        ) from None
    tls = contexts / "tls" / digest / "docker"
    skip_verify = bool(endpoint.get("SkipTLSVerify")) if isinstance(endpoint, dict) else False
    return Daemon(host, f"docker context {name!r}", tls if tls.is_dir() else None, tls.is_dir() and not skip_verify)


def candidates(platform: str, env: Mapping[str, str], home: Path) -> list[tuple[str, str]]:
    """The default endpoint and the well-known sockets, in the order they are tried."""
    if platform == "windows":
        return [(WINDOWS_PIPE, "Docker Desktop's named pipe")]
    found = [(f"unix://{LINUX_SOCKET}", "the default socket")]
    if platform == "macos":
        found.append((f"unix://{home}/.docker/run/docker.sock", "Docker Desktop"))
    else:
        found.append((f"unix://{home}/.docker/desktop/docker.sock", "Docker Desktop"))
    found += [
        (f"unix://{home}/.colima/default/docker.sock", "Colima"),
        (f"unix://{home}/.colima/docker.sock", "Colima"),
    ]
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        found.append((f"unix://{runtime_dir}/docker.sock", "rootless docker"))
    return found


def find(env: Mapping[str, str] | None = None, home: Path | None = None, platform: str | None = None) -> Daemon:
    """The endpoint to connect to, or :class:`PrerequisiteError` naming what was looked for.

    Args:
        env: the environment (default ``os.environ``); tests pass their own.
        home: the home directory (default ``Path.home()``).
        platform: ``linux``, ``macos`` or ``windows`` (default: this one).
    """
    env = dict(os.environ if env is None else env)
    home = home or Path.home()
    platform = platform or platform_name()
    if env.get("DOCKER_HOST"):
        cert = env.get("DOCKER_CERT_PATH")
        verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
        tls_dir = Path(cert) if cert else (config_dir(env, home) if verify else None)
        return Daemon(env["DOCKER_HOST"], "DOCKER_HOST", tls_dir, verify)
    name = current_context(env, home)
    if name != "default":
        return context_endpoint(name, env, home)
    tried = candidates(platform, env, home)
    for url, source in tried:
        if url.startswith("npipe:") or Path(url[len("unix://") :]).exists():
            return Daemon(url, source)
    looked = ", ".join(url[len("unix://") :] for url, _ in tried)
    raise PrerequisiteError(
        f"docker runtime: no docker daemon found (DOCKER_HOST unset, docker context 'default', "
        f"no socket at {looked}); {start_hint(platform)}"
    )


def mount_source(daemon: Daemon, platform: str | None = None) -> str:
    """The daemon-side path of its socket, to bind into a container that drives the daemon.

    A bind mount's source is a path on the daemon's machine. For a daemon on this Linux host that
    is the socket we connect to; Docker Desktop and Colima run the daemon in a VM whose socket
    is ``/var/run/docker.sock`` whatever the laptop's own socket is called.
    """
    platform = platform or platform_name()
    path = daemon.socket_path
    in_vm = path is not None and any(part in str(path) for part in ("/.docker/", "/.colima/"))
    if platform == "linux" and path is not None and not in_vm:
        return str(path)
    return VM_SOCKET
