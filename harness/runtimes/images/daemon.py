"""Docker client access: one SDK client for the daemon the docker CLI would use, and image look-ups."""

from __future__ import annotations

import gc
import warnings
from typing import Any

from harness.errors import PrerequisiteError
from harness.runtimes import dockerhost


def client(timeout: int = 120) -> Any:
    """A docker SDK client for the daemon the docker CLI would use, or :class:`PrerequisiteError`."""
    try:
        import docker
    except ImportError:
        raise PrerequisiteError(
            "docker runtime: the docker SDK is missing; run: pip install 'trustlab[docker]'"
        ) from None
    daemon = dockerhost.find()
    hint = dockerhost.start_hint()
    sock = daemon.socket_path
    if sock is not None and not sock.exists():
        raise PrerequisiteError(f"docker runtime: no docker daemon ({sock}, from {daemon.source}, is missing); {hint}")
    problem = None
    try:
        if daemon.source == "DOCKER_HOST":
            c = docker.from_env(timeout=timeout)  # reads DOCKER_TLS_VERIFY / DOCKER_CERT_PATH itself
        else:
            c = docker.DockerClient(base_url=daemon.url, timeout=timeout, tls=_tls(daemon))
        c.ping()
    except Exception as exc:  # docker raises DockerException, requests errors, OSError ...
        problem = _one_line(exc)
    if problem is not None:
        # The SDK leaves the failed connection's socket to the garbage collector: reap it now
        # (outside the except block, whose traceback still holds it).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        raise PrerequisiteError(
            f"docker runtime: no docker daemon answers at {daemon.url} ({daemon.source}: {problem}); {hint}"
        )
    return c


def _tls(daemon: dockerhost.Daemon) -> Any:
    """The SDK's TLS settings for a context's tcp:// endpoint with TLS files, else False."""
    if daemon.tls_dir is None or not daemon.url.startswith("tcp://"):
        return False
    import docker.tls

    d = daemon.tls_dir
    cert = (str(d / "cert.pem"), str(d / "key.pem")) if (d / "cert.pem").is_file() else None
    ca = str(d / "ca.pem") if (d / "ca.pem").is_file() else None
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=ca, verify=daemon.tls_verify and (ca or True))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


def get(c: Any, ref: str) -> Any:
    """Image *ref* on client *c*'s daemon, or None when there is none."""
    import docker.errors

    try:
        return c.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def find(c: Any, **labels: str) -> list[Any]:
    """The images carrying every one of *labels* (``key=value``)."""
    return list(c.images.list(filters={"label": [f"{k}={v}" for k, v in labels.items()]}))
