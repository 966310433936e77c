"""The classroom server: JupyterHub with one JupyterLab per attendee, and grading they cannot fake.

``trustlab classroom serve`` starts, on the instructor's machine (Linux + Docker), a JupyterHub
(PyPI ``jupyterhub``; its proxy is Debian's ``node-configurable-http-proxy``) that spawns one
server per attendee from the classroom image with DockerSpawner, behind one TLS port. Attendees
sign in with per-attendee codes (``classroom attendees add N``); the instructor is admin.

What runs where::

    room ──TLS──> proxy (CHP, BIND:PORT) ──> hub API (GATEWAY:hub_port)
                                         ├─> attendee servers (containers, network trustlab-hub-ID)
                                         └─> grader service (GATEWAY:svc_port, /services/grader/)
    attendee server ──(its JUPYTERHUB_API_TOKEN)──> grader: POST /services/grader/grade
                                                    └─> grader: POST /services/grader/run (its notebooks' labs)

Design (issue 22 item 2, option a): attendee servers run with no docker socket, no privilege and
every capability dropped; they cannot run labs themselves. The grader, a JupyterHub *service*
started by the hub on the host, grades ``trustlab challenge check`` attempts on the real proxies
(docker runtime by default: today's hardened lab containers), records attempts, hints and solves
per attendee in ``grader.sqlite`` and alone holds the flag secret. The same service runs the
attendees' notebook labs: the spawner sets ``TRUSTLAB_RUNTIME=remote``, and each
``run_scenario``/``run_matrix`` sends built-in scenario and identity ids to its ``run`` route
(:mod:`harness.runtimes.remote`), which runs them on the docker runtime labelled with the
attendee. Attendee containers share one docker network whose inter-container traffic is switched
off (``enable_icc=false``): each reaches the hub and the grader on the gateway, never another
attendee's server. Why not option (b), the local runtime inside each attendee server under a
seccomp profile: it needs user namespaces in the container (``unshare``/``clone`` with
CLONE_NEWUSER|NEWNET), i.e. the kernel's largest attack surface handed to every attendee, and the
flag secret would still need a server to grade.

Hub state lives in ``<state dir>/hub`` (0700): ``settings.json``, ``jupyterhub.sqlite``,
``jupyterhub_cookie_secret``, ``codes.json`` (salted SHA-256 of each sign-in code),
``grader-secret``, ``grader.sqlite``, ``admin-token`` (the instructor's API token for the CLI),
``tls/`` (the certificate minted when none is given), ``hub.log``, ``hub.pid``.

::

    trustlab classroom serve [--port 8443] [--bind 0.0.0.0] [--cert F --key F]
    trustlab classroom serve --stop
    trustlab classroom attendees add N
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import LabError, PrerequisiteError

LABEL = "trustlab.hub"
#: ``<host>:<state directory>`` of the hub a network serves (:func:`sweep`).
LABEL_STATE = "trustlab.hub.state"
DEFAULT_PORT = 8443
DEFAULT_BIND = "0.0.0.0"
INSTRUCTOR = "instructor"
SERVICE = "grader"
ADMIN_SERVICE = "trustlab-admin"
#: Servers idle this long are stopped by jupyterhub-idle-culler.
CULL_IDLE_S = 3600
#: Configurable-http-proxy from Debian (node-configurable-http-proxy) keeps its modules here; a
#: Node.js that is not Debian's (NodeSource's) does not look there by itself.
DEBIAN_NODE_PATH = "/usr/share/nodejs"
#: The attendee's JupyterLab: the classroom image's notebooks.
NOTEBOOK_DIR = "/workshop/notebooks"
#: Per attendee server: memory and processes (a runaway notebook stays its own problem).
MEM_LIMIT = "1G"
PIDS_LIMIT = 256

Progress = Callable[[str], None]
#: The hubs this process started: kept (so no Popen is collected while its hub runs) and reaped by stop().
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def hub_dir(state: Path | None = None) -> Path:
    """The hub's private state directory (``<trustlab state dir>/hub``, created 0700)."""
    from harness.course.challenges import state_dir

    d = (state or state_dir()) / "hub"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
    except OSError as exc:
        raise LabError(
            f"{d}: cannot create the hub's state directory ({exc.strerror}); set TRUSTLAB_STATE_DIR"
        ) from None
    return d


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _secret_file(path: Path, nbytes: int = 32) -> str:
    """A random secret kept in *path* (0600), created on first use."""
    if not path.exists():
        _write_private(path, secrets.token_hex(nbytes) + "\n")
    return path.read_text().strip()


# -- sign-in codes ---------------------------------------------------------------------------
#: Codes are read off a sheet: no 0/o, 1/l/i.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_code() -> str:
    """A sign-in code: 12 random characters (about 59 bits) in groups of four."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return "-".join(raw[i : i + 4] for i in (0, 4, 8))


def _hash(code: str, salt: str) -> str:
    # The codes are random (59 bits), not passwords people choose: a salted SHA-256 makes the
    # file useless to whoever reads it without a slow KDF on every sign-in.
    return hashlib.sha256(f"{salt}:{code.strip().lower()}".encode()).hexdigest()


def read_codes(directory: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((directory / "codes.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LabError(
            f"{directory / 'codes.json'}: unreadable sign-in codes ({exc}); remove it to start over"
        ) from None
    return data if isinstance(data, dict) else {}


def add_codes(directory: Path, names: list[str]) -> dict[str, str]:
    """New codes for *names* (existing names get a fresh code); returns ``{name: code}``."""
    codes = read_codes(directory)
    out = {}
    for name in names:
        code, salt = new_code(), secrets.token_hex(8)
        codes[name] = {"salt": salt, "sha256": _hash(code, salt)}
        out[name] = code
    _write_private(directory / "codes.json", json.dumps(codes, indent=2, sort_keys=True) + "\n")
    return out


def check_code(directory: Path, name: str, code: str) -> bool:
    entry = read_codes(directory).get(name)
    if not isinstance(entry, dict) or "salt" not in entry or "sha256" not in entry:
        return False
    return hmac.compare_digest(entry["sha256"], _hash(code, entry["salt"]))


def add_attendees(count: int, *, state: Path | None = None) -> dict[str, str]:
    """``classroom attendees add N``: N new attendees (``attendee-NN``, after the existing ones)."""
    if not 1 <= count <= 500:
        raise LabError(f"attendees add: {count} is not a number of attendees (1-500)")
    d = hub_dir(state)
    existing = [n for n in read_codes(d) if n.startswith("attendee-")]
    start = max((int(n.split("-")[1]) for n in existing if n.split("-")[1].isdigit()), default=0)
    names = [f"attendee-{n:02d}" for n in range(start + 1, start + count + 1)]
    return add_codes(d, names)


def sheet(codes: dict[str, str], *, url: str | None) -> str:
    """The sign-in sheet: one line per attendee, to cut into slips."""
    head = [f"Sign in at {url}" if url else "Sign in at the classroom URL your instructor shows", ""]
    return "\n".join([*head, *(f"  {name:<14} code: {code}" for name, code in codes.items())])


# -- TLS --------------------------------------------------------------------------------------
def fingerprint(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def mint_cert(directory: Path, *, names: list[str]) -> tuple[Path, Path]:
    """A certificate for *names* (DNS names and IPs), minted once into ``tls/``: a leaf from a
    throwaway CA (``tls/ca.crt``, its key never written) made with trustme, as the lab's own PKI.
    A bare self-signed leaf is refused as its own trust anchor by OpenSSL 3 clients."""
    import trustme

    tls = directory / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    cert_path, key_path = tls / "hub.crt", tls / "hub.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    ca = trustme.CA(organization_name="trustlab classroom")
    leaf = ca.issue_cert(*dict.fromkeys(names), organization_name="trustlab classroom")
    _write_private(key_path, leaf.private_key_pem.bytes().decode())
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    (tls / "ca.crt").write_bytes(ca.cert_pem.bytes())
    return cert_path, key_path


# -- settings ---------------------------------------------------------------------------------
@dataclass
class Settings:
    """What ``serve`` decided; the hub's config file (``jupyterhub_config.py``) reads it back."""

    instance: str
    bind: str
    port: int
    cert: str
    key: str
    image: str
    network: str
    gateway: str
    hub_port: int
    service_port: int
    grade_runtime: str
    cull_idle_s: int = CULL_IDLE_S
    instructor: str = INSTRUCTOR
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind
        return f"https://{host}:{self.port}"

    @property
    def grader_url(self) -> str:
        """Where attendee servers reach the grader (directly on the network's gateway)."""
        return f"http://{self.gateway}:{self.service_port}/services/{SERVICE}"


def load_settings(directory: Path) -> Settings:
    try:
        data = json.loads((directory / "settings.json").read_text())
    except FileNotFoundError:
        raise LabError(f"{directory}: no classroom server was started here (no settings.json)") from None
    return Settings(**data)


def instance_id(directory: Path) -> str:
    """A short id of this state directory: names and labels of what its hub starts."""
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:8]


# -- docker -----------------------------------------------------------------------------------
def _client() -> Any:
    from harness.runtimes import images

    return images.client()


def _network(c: Any, name: str, instance: str, directory: Path) -> tuple[Any, str]:
    """The attendees' network: internal (no way out but the gateway), no container-to-container
    traffic (``enable_icc=false``: an attendee cannot reach another's server). Labelled with the
    host and the state directory whose hub it serves (:func:`sweep`)."""
    import docker.errors

    try:
        net = c.networks.get(name)
    except docker.errors.NotFound:
        net = _docker_call(
            f"classroom serve: cannot create the docker network {name}",
            c.networks.create,
            name,
            driver="bridge",
            internal=True,
            options={"com.docker.network.bridge.enable_icc": "false"},
            labels={LABEL: instance, LABEL_STATE: f"{socket.gethostname()}:{directory.resolve()}"},
        )
    net.reload()
    configs = net.attrs.get("IPAM", {}).get("Config") or []
    gateway = next((cfg.get("Gateway") for cfg in configs if cfg.get("Gateway")), None)
    if not gateway:
        raise LabError(f"classroom serve: docker network {name} has no gateway address")
    return net, str(gateway)


def sweep(c: Any, *, min_age: float = 120) -> list[str]:
    """Remove what a hub of this host left on the daemon when it was killed and its state is gone
    (its state directory deleted, or no hub running from it): its attendees' containers and its
    network. Only networks labelled with this host's name and a state directory, made more than
    *min_age* seconds ago (a hub being served has its network a moment before its process):
    another host's hub on a shared daemon, or one that runs or is starting, is left alone."""
    gone: list[str] = []
    host = f"{socket.gethostname()}:"
    for net in c.networks.list(filters={"label": LABEL}):
        labels = net.attrs.get("Labels") or {}
        where = labels.get(LABEL_STATE, "")
        if not where.startswith(host) or _age(net.attrs.get("Created", "")) < min_age:
            continue
        if _hub_pids(Path(where[len(host) :])):
            continue
        for ct in c.containers.list(all=True, filters={"label": f"{LABEL}={labels[LABEL]}"}):
            with contextlib.suppress(Exception):
                ct.remove(force=True)
                gone.append(ct.name)
        with contextlib.suppress(Exception):
            net.remove()
            gone.append(f"network {net.name}")
    return gone


def _age(created: str) -> float:
    """Seconds since a docker ``Created`` time (``2026-12-08T01:19:32.123456789Z``); 0 if unreadable."""
    import datetime

    try:
        when = datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", created).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds()


def _docker_call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """*fn* (a docker SDK call), its error as one line saying *what* failed."""
    import docker.errors

    try:
        return fn(*args, **kwargs)
    except docker.errors.ContainerError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise LabError(f"{what}: {tail[-1] if tail else f'exit {exc.exit_status}'}") from None
    except docker.errors.DockerException as exc:
        why = getattr(exc, "explanation", None) or str(exc)
        raise LabError(f"{what}: {why}") from None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- serve / stop -------------------------------------------------------------------------------
@dataclass
class Served:
    url: str
    fingerprint: str
    instructor_code: str | None
    settings: Settings
    start_s: float
    directory: Path


def _procs() -> dict[int, tuple[int, int, bytes]]:
    """Every process: ``{pid: (ppid, pgid, cmdline)}`` from /proc."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        # /proc/PID/stat: "pid (comm) state ppid pgrp ...": the fields after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2:
            out[int(proc.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return out


def _hub_pids(directory: Path) -> list[int]:
    """The hub processes started from *directory*: by the pid file, and by the state directory
    their command line names (so a lost pid file still finds them)."""
    marker = f"--JupyterHub.pid_file={directory / 'jupyterhub.pid'}".encode()
    procs = _procs()
    found = [pid for pid, (_, _, cmd) in procs.items() if marker in cmd.split(b"\0")]
    try:
        pid = int((directory / "hub.pid").read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid in procs and b"jupyterhub" in procs[pid][2] and pid not in found:
        found.append(pid)
    return sorted(found)


def _descendants(roots: list[int]) -> list[int]:
    procs, out, todo = _procs(), [], list(roots)
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _) in procs.items():
            if ppid == parent and pid not in out:
                out.append(pid)
                todo.append(pid)
    return out


def _pid(directory: Path) -> int | None:
    """The running hub started from *directory*, if any."""
    pids = _hub_pids(directory)
    return pids[0] if pids else None


def serve(
    *,
    port: int = DEFAULT_PORT,
    bind: str = DEFAULT_BIND,
    cert: Path | None = None,
    key: Path | None = None,
    image: str | None = None,
    grade_runtime: str = "docker",
    cull_idle_s: int = CULL_IDLE_S,
    state: Path | None = None,
    timeout: float = 90,
    progress: Progress | None = None,
) -> Served:
    """Start the hub (in the background) and return once it answers on its TLS port."""
    say = progress or (lambda line: print(line, file=sys.stderr))
    if (cert is None) != (key is None):
        raise LabError("classroom serve: give both --cert and --key, or neither (a self-signed one is minted)")
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        raise LabError(
            f"--bind: {bind!r} is not an IP address (e.g. 0.0.0.0, or 127.0.0.1 for this machine only)"
        ) from None
    if not 0 < port < 65536:
        raise LabError(f"--port: {port} is not a port number (1-65535)")
    for f, flag in ((cert, "--cert"), (key, "--key")):
        if f is not None and not Path(f).is_file():
            raise LabError(f"{flag}: {f}: no such file")
    try:
        import dockerspawner  # noqa: F401
        import jupyterhub  # noqa: F401
    except ImportError:
        raise PrerequisiteError("classroom serve: needs the hub extra: pip install 'trustlab[hub]'") from None
    chp = _which("configurable-http-proxy")
    if not chp:
        raise PrerequisiteError(
            "classroom serve: configurable-http-proxy is missing; run: apt-get install node-configurable-http-proxy"
        )
    d = hub_dir(state)
    if _pid(d):
        raise LabError(f"classroom serve: a hub already runs from {d}; stop it first: trustlab classroom serve --stop")
    from harness.course import classroom
    from harness.runtimes import images

    c = _client()
    image = image or classroom.IMAGE
    if images.get(c, image) is None:
        raise PrerequisiteError(f"classroom serve: {image} is missing; run: trustlab classroom build")
    instance = instance_id(d)
    t0 = time.perf_counter()
    image_labs = _image_labs(c, image)
    sweep(c)  # a killed hub's attendees and network, whose state is gone
    _, gateway = _network(c, f"trustlab-hub-{instance}", instance, d)
    try:
        if cert is None or key is None:
            names = ["localhost", "127.0.0.1", socket.gethostname()]
            if bind not in ("0.0.0.0", "::"):
                names.append(bind)
            cert, key = mint_cert(d, names=names)
        settings = Settings(
            instance=instance,
            bind=bind,
            port=port,
            cert=str(Path(cert).resolve()),
            key=str(Path(key).resolve()),
            image=image,
            network=f"trustlab-hub-{instance}",
            gateway=gateway,
            hub_port=free_port(gateway),
            service_port=free_port(gateway),
            grade_runtime=grade_runtime,
            cull_idle_s=cull_idle_s,
            extra={"image_labs": image_labs},
        )
        _write_private(d / "settings.json", json.dumps(asdict(settings), indent=2) + "\n")
        _secret_file(d / "grader-secret")
        _secret_file(d / "admin-token")
        instructor_code = None
        if INSTRUCTOR not in read_codes(d):
            instructor_code = add_codes(d, [INSTRUCTOR])[INSTRUCTOR]
        env = {**os.environ, "TRUSTLAB_HUB_DIR": str(d), "NODE_PATH": _node_path()}
        config = Path(__file__).with_name("jupyterhub_config.py")
        log = open(d / "hub.log", "ab")  # noqa: SIM115 (handed to the child)
        proc = subprocess.Popen(
            # The pid file's path on the command line names the state directory: stop() finds the
            # hub by it even when hub.pid is gone.
            [sys.executable, "-m", "jupyterhub", "-f", str(config), f"--JupyterHub.pid_file={d / 'jupyterhub.pid'}"],
            cwd=d,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        _CHILDREN[proc.pid] = proc
        (d / "hub.pid").write_text(f"{proc.pid}\n")
        fp = fingerprint(Path(settings.cert).read_bytes())
        _wait_ready(settings, proc, d, timeout=timeout)
    except BaseException:
        stop(state=state)
        raise
    start_s = time.perf_counter() - t0
    say(f"hub answers after {start_s:.1f}s")
    return Served(settings.url, fp, instructor_code, settings, start_s, d)


def _image_labs(c: Any, image: str) -> str:
    """Where the classroom image keeps trustlab's labs/ (its solutions are hidden under it)."""
    out = _docker_call(
        f"classroom serve: {image} has no trustlab in it (is it the classroom image? trustlab classroom build)",
        c.containers.run,
        image,
        [
            "python3",
            "-c",
            "import shutil; from harness.assets import asset_dir; "
            "print(bool(shutil.which('jupyterhub-singleuser')), asset_dir('labs'))",
        ],
        entrypoint=[],
        remove=True,
        network_mode="none",
        labels={LABEL: "probe"},
    )
    has_singleuser, labs = out.decode().strip().splitlines()[-1].split(" ", 1)
    if has_singleuser != "True":
        raise PrerequisiteError(
            f"classroom serve: {image} has no jupyterhub-singleuser (an image built before the classroom "
            "server); rebuild it: trustlab classroom build"
        )
    return labs


def hidden_solutions(image_labs: str) -> dict[str, str]:
    """An empty read-only tmpfs over every challenge's ``solution/`` in the attendee's image: the
    reference solutions stay on the grader's side (an attendee with no capability cannot unmount)."""
    from harness.course.challenges import load_all

    return {f"{image_labs}/challenges/{ch.id}/solution": "ro,size=4k,mode=0555" for ch in load_all()}


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def _node_path() -> str:
    parts = [p for p in os.environ.get("NODE_PATH", "").split(":") if p]
    if Path(DEBIAN_NODE_PATH).is_dir() and DEBIAN_NODE_PATH not in parts:
        parts.append(DEBIAN_NODE_PATH)
    return ":".join(parts)


def _tls_context() -> ssl.SSLContext:
    # Readiness only: the hub's own certificate (minted or the instructor's) on our own address.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _wait_ready(settings: Settings, proc: subprocess.Popen[bytes], d: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"{settings.url}/hub/api/"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2, context=_tls_context()) as resp:
                if resp.status == 200 and _service_up(settings):
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    tail = _log_tail(d)
    state = f"exit {proc.returncode}" if proc.returncode is not None else f"no answer in {timeout:.0f}s"
    raise LabError(f"classroom serve: the hub did not come up ({state}); {d / 'hub.log'}: {tail}")


def _service_up(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.grader_url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(d: Path, n: int = 4) -> str:
    try:
        lines = (d / "hub.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(ln.strip() for ln in lines[-n:])


def stop(*, state: Path | None = None, timeout: float = 30) -> list[str]:
    """``classroom serve --stop``: the hub (its proxy and services), then every container and the
    network labelled with this state directory's instance; nothing else. Returns what went."""
    d = hub_dir(state)
    instance = instance_id(d)
    gone: list[str] = []
    hubs = _hub_pids(d)
    # The hub starts its proxy and services in sessions of their own: note them now, while they
    # are still its children, to stop whatever its own shutdown leaves.
    children = _descendants(hubs)
    for pid in hubs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the hub stops its servers, proxy and services on SIGTERM
    left = _wait_gone(hubs, timeout) + _wait_gone(children, 5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(left, 5)
    gone += [f"hub (pid {pid})" for pid in hubs]
    for child_pid, child in list(_CHILDREN.items()):
        if child.poll() is not None or child_pid in hubs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
            _CHILDREN.pop(child_pid, None)
    with contextlib.suppress(FileNotFoundError):
        (d / "hub.pid").unlink()
    try:
        c = _client()
    except LabError:
        return gone
    for ct in c.containers.list(all=True, filters={"label": f"{LABEL}={instance}"}):
        with contextlib.suppress(Exception):
            ct.remove(force=True)
            gone.append(ct.name)
    for net in c.networks.list(filters={"label": f"{LABEL}={instance}"}):
        with contextlib.suppress(Exception):
            net.remove()
            gone.append(f"network {net.name}")
    return gone


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of *pids* runs (reaping our own children), at most *timeout* seconds;
    returns those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[0] != "Z":  # a zombie has finished: its parent reaps it
                alive.append(pid)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


# -- the instructor's API (the admin token) --------------------------------------------------------
def admin_token(state: Path | None = None) -> str:
    return (hub_dir(state) / "admin-token").read_text().strip()


def api(settings: Settings, token: str, method: str, path: str, body: Any = None, *, timeout: float = 30) -> Any:
    """A call on the hub's REST API (``/hub/api/...``) or the grader's (``/services/grader/...``)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        settings.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", **({"Content-Type": "application/json"} if data else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_tls_context()) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # its status stays readable; its socket goes now
        raise
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
