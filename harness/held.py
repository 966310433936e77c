"""Labs kept running to explore by hand: ``trustlab up`` / ``status`` / ``present`` / ``down``.

``up`` starts a detached *holder* process (``python -m harness.held hold ...``) that owns
the lab directory and a lab worker in hold mode. The proxy is reachable through a unix socket
in the lab directory that relays into the lab's namespace, so nothing listens on a host TCP
port::

    curl --unix-socket /tmp/trustlab.0/trustlab-XXXX/proxy.sock http://www.trustlab.test/

``down`` stops holders with SIGTERM (the lab unwinds and deletes itself); ``down --all`` also
sweeps labs left by killed runs.

Held labs live in a per-user directory only that user can write (:func:`held_root`:
``$TRUSTLAB_TMPDIR/trustlab.<uid>``, else ``$XDG_RUNTIME_DIR/trustlab``, else
``/tmp/trustlab.<uid>``), never directly in a shared temp directory: a state file is trusted
only when it, its lab directory and that root are owned by the caller and private (0700, no
symlinks), and a holder is signalled only when its pid still has the start time recorded in
the state file (a recycled pid is never signalled). The directory removed is the one the state
file was found in, never a path the file names.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import processes as _process
from harness.errors import LabError
from harness.runner import LAB_PREFIX, check_space, lab_root, sweep
from harness.runtimes.sandbox import read_planted

if TYPE_CHECKING:
    from harness.runtimes.base import Held, Job

STATE_FILE = "state.json"
#: Largest state file read (a real one is under 1 KB).
_STATE_LIMIT = 64_000
#: Why state files were not trusted during the last :func:`labs` call (for ``trustlab status``).
ignored: list[str] = []


def held_root(*, create: bool = False) -> Path:
    """The caller's private directory for held labs (see the module doc); checked every time.

    A directory someone else owns, or one others can write, is refused (:class:`LabError`), never
    used: anything in it could have been planted.
    """
    uid = os.geteuid()
    if os.environ.get("TRUSTLAB_TMPDIR"):
        root = lab_root() / f"trustlab.{uid}"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        runtime_dir = Path(os.environ["XDG_RUNTIME_DIR"])
        _check_private(runtime_dir, what="XDG_RUNTIME_DIR", group_ok=False)
        root = runtime_dir / "trustlab"
    else:
        root = lab_root() / f"trustlab.{uid}"
    if create:
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LabError(f"{root}: cannot create the held-lab directory ({exc.strerror})") from None
    if create or os.path.lexists(root):
        _check_private(root, what="the held-lab directory", group_ok=False)
    return root


def _check_private(path: Path, *, what: str, group_ok: bool) -> os.stat_result:
    """*path* is a real directory owned by the caller that nobody else can write, or LabError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise LabError(f"{what} {path} does not exist; create it or unset the variable") from None
    except OSError as exc:
        raise LabError(f"{what} {path}: cannot inspect it ({exc.strerror})") from None
    fix = "remove it (it is not yours to trust) or set TRUSTLAB_TMPDIR to a directory of your own"
    if stat.S_ISLNK(st.st_mode):
        raise LabError(f"{what} {path} is a symbolic link; {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise LabError(f"{what} {path} is not a directory; {fix}")
    if st.st_uid != os.geteuid():
        raise LabError(f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); {fix}")
    if st.st_mode & (0o022 if group_ok else 0o077):
        raise LabError(f"{what} {path} is open to others (mode {stat.S_IMODE(st.st_mode):o}, want 700); {fix}")
    return st


def process_start(pid: int) -> str | None:
    """An identity for a running process that changes when its pid is reused (its start time),
    or ``None`` when no such process is visible."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except OSError:
        return None
    else:
        # Field 22 (starttime, clock ticks since boot); the command name (field 2) may hold spaces.
        fields = raw.rpartition(")")[2].split()
        return fields[19] if len(fields) > 19 else None
    # No /proc (macOS with the docker runtime): ps names the start time to the second.
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def identities_of(scenario: Any) -> tuple[str, ...]:
    """Every identity a held lab of *scenario* can present: the built-ins and its optional ones."""
    from harness.vocab import IDENTITY_IDS

    return IDENTITY_IDS + tuple(scenario.optional_identities)


def point(scenario: Any) -> tuple[str, str]:
    """The identity that shows what *scenario* is about, and why (from its ``[expected]`` table).

    The first impostor it expects to get through (optional identities first); else the first
    legitimate identity it expects
    refused (an outage: ``apache/seed-recipe``); else ``rogue-ca`` (every impostor is blocked)."""
    from harness.vocab import LEGITIMATE_IDS, Outcome

    # The optional identities a scenario opts into come first: it runs them for a reason.
    ranked = sorted(scenario.expected.items(), key=lambda kv: kv[0] not in scenario.optional_identities)
    for ident, outcome in ranked:
        if ident not in LEGITIMATE_IDS and outcome is Outcome.SPOOFED:
            return ident, f"{scenario.id} expects this impostor to get through (spoofed)"
    for ident, outcome in ranked:
        # legit-no-chain refused is what a verifying proxy does (the backend's own mistake).
        if ident in LEGITIMATE_IDS and ident != "legit-no-chain" and outcome is not Outcome.SERVED:
            return ident, f"{scenario.id} expects the legitimate backend {outcome.value}: an outage"
    return "rogue-ca", f"{scenario.id} expects every impostor blocked; any of them shows it"


def up(ref: str, *, identity: str = "legit", runtime: str = "local", timeout: float = 30) -> dict[str, Any]:
    """Start a held lab for one scenario; return its state once the proxy listens."""
    from harness.scenarios import builtin, resolve

    if runtime not in ("local", "docker"):
        raise LabError(f"--runtime: {runtime!r} is unknown; choose local or docker")
    scenario = resolve(ref)
    known = identities_of(scenario)
    if identity not in known:
        raise LabError(f"--identity: {identity!r} is unknown for {scenario.id}; known: {', '.join(known)}")
    # A built-in keeps its id (reported/nginx-1409-fixed); a user's file is passed by path.
    ref_arg = scenario.id if scenario.id in builtin() else str(scenario.path or ref)
    return _spawn_holder(["hold", ref_arg, identity, runtime], scenario.id, timeout)


def _spawn_holder(args: list[str], what: str, timeout: float) -> dict[str, Any]:
    """Start the detached holder (``python -m harness.held ARGS``); its state once it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.held", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
    except BaseException:
        # Interrupted before the lab was ready: the detached holder must not stay up unseen.
        proc.terminate()
        proc.wait(timeout=30)
        raise
    finally:
        proc.stdout.close()
    if not line:
        proc.wait(timeout=timeout)
        raise LabError(f"the lab for {what} exited before it was ready (exit {proc.returncode})")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise LabError(reply.get("error", "the lab failed to start"))
    return dict(reply["state"])


def up_config(
    proxy: str, config: str | Path, *, identity: str = "legit", runtime: str = "local", timeout: float = 30
) -> dict[str, Any]:
    """``trustlab up --config FILE --proxy KIND``: hold a lab running *config* (your own, or a
    challenge attempt) as ``check`` runs it, so ``present`` and ``curl`` work on your own fix.

    The local runtime holds the config's first HTTPS upstream that a request can reach."""
    from harness.check import HELD_OPTIONAL, kind_of
    from harness.vocab import IDENTITY_IDS

    if runtime != "local":
        raise LabError(f"--runtime {runtime}: up --config runs on the local runtime (trustlab check runs either)")
    kind = kind_of(proxy)
    path = Path(config)
    if not path.is_file():
        raise LabError(f"--config: {path} is not a file; give your proxy config")
    if identity not in IDENTITY_IDS + HELD_OPTIONAL:
        raise LabError(f"--identity: {identity!r} is unknown here; known: {', '.join(IDENTITY_IDS + HELD_OPTIONAL)}")
    return _spawn_holder(["hold-config", kind.value, str(path.resolve()), identity, runtime], str(path), timeout)


def labs() -> list[dict[str, Any]]:
    """The caller's held labs (state plus whether its holder is alive); untrusted or corrupt
    state files are skipped, each with its reason in :data:`ignored`."""
    ignored.clear()
    root = held_root()
    if not os.path.lexists(root):
        return []
    found = []
    for path in sorted(root.glob(f"{LAB_PREFIX}*")):
        try:
            state = _read_state(path)
        except LabError as exc:
            ignored.append(str(exc))
            continue
        if state is None:  # being created or removed: no state file yet
            continue
        state["alive"] = _holder_alive(state)
        found.append(state)
    return found


_STATE_FIELDS = {
    "lab": str,
    "pid": int,
    "pid_start": str,
    "runtime": str,
    "scenario": str,
    "identity": str,
    "started": str,
    "curl": str,
    "control": str,
}


def _read_state(path: Path) -> dict[str, Any] | None:
    """The state of the held lab at *path*, trusted only when private to the caller."""
    _check_private(path, what="lab directory", group_ok=False)
    state_path = path / STATE_FILE
    try:
        fd = os.open(state_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabError(f"{state_path}: cannot read it ({exc.strerror}); remove the directory") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise LabError(f"{state_path}: not a private file of yours; ignored (remove {path})")
        raw = fh.read(_STATE_LIMIT + 1)
    try:
        state = json.loads(raw) if len(raw) <= _STATE_LIMIT else None
    except ValueError:
        state = None
    bad = not isinstance(state, dict) or any(
        not isinstance(state.get(k), t) or isinstance(state.get(k), bool) for k, t in _STATE_FIELDS.items()
    )
    if bad or state["lab"] != path.name:  # type: ignore[index]
        raise LabError(f"{state_path}: corrupt state file; remove {path} (trustlab down --all does)")
    assert isinstance(state, dict)
    # Paths come from where the file was found, never from its contents.
    state["dir"] = str(path)
    if state["runtime"] == "local":
        state["control"] = str(path / "control.sock")
    return state


def _holder_alive(state: dict[str, Any]) -> bool:
    """The holder still runs: its pid is alive *and* started when the state file says."""
    pid = state["pid"]
    return pid > 0 and _process.alive(pid) and process_start(pid) == state["pid_start"]


def present(identity: str, *, lab: str | None = None) -> dict[str, Any]:
    """Make a held lab's seat answer as *identity* from now on."""
    state = _one(lab)
    known = state.get("identities") or []
    if known and identity not in known:
        raise LabError(f"identity {identity!r} is unknown for {state['scenario']}; known: {', '.join(known)}")
    reply = _control(state, f"present {identity}")
    if not reply.get("ok"):
        raise LabError(f"present: {reply.get('error')}")
    state["identity"] = identity
    _write_state(Path(state["dir"]), state)
    return state


def seat_log(*, lab: str | None = None) -> list[dict[str, Any]]:
    """What the held lab's seat has seen so far (SNI, TLS version, request per connection)."""
    return list(_control(_one(lab), "log"))


def try_once(*, lab: str | None = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one request through a held lab's proxy; return its status, who answered, and the
    proxy's own verdict line (the verification failure it logged), or ``""`` when none."""
    from harness.proxies import driver

    state = state or _one(lab)
    before = _read_log(state)
    status, served_by = _request(state)
    drv = driver(state["kind"])
    verdict = ""
    until = time.monotonic() + 1.0
    while True:  # the verdict line can land a moment after the response (HAProxy: at stream end)
        text = _read_log(state)[len(before) :]
        verdict = drv.block_reason(text) or ""
        if verdict or served_by or time.monotonic() > until:
            break
        time.sleep(0.02)
    if not verdict and not served_by:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        verdict = lines[-1] if lines else ""
    return {"status": status, "served_by": served_by, "verdict": verdict}


def verdict_lines(*, lab: str | None = None, state: dict[str, Any] | None = None, last: int = 5) -> list[str]:
    """The last verification lines the held lab's proxy logged (what ``blocked`` rests on)."""
    from harness.proxies import driver

    state = state or _one(lab)
    drv = driver(state["kind"])
    found = [r for r in (drv.block_reason(ln) for ln in _read_log(state).splitlines()) if r]
    return found[-last:]


def _read_log(state: dict[str, Any]) -> str:
    if state.get("runtime") == "docker":
        from harness.runtimes import images

        try:
            ct = images.client().containers.get(state["container"])
            code, out = ct.exec_run(["cat", state["log"]])
        except Exception as exc:  # noqa: BLE001 - docker SDK errors vary; one line for the user
            raise LabError(f"lab {state['lab']}: its worker container does not answer ({exc})") from None
        return out.decode("utf-8", "replace") if code == 0 else ""
    # The proxy owns its run directory: its log is read without following links, bounded.
    log = Path(state["log"])
    return read_planted(log, log.parent)[0].decode("utf-8", "replace")


def _request(state: dict[str, Any]) -> tuple[int | None, str]:
    """One GET / through the held proxy: (HTTP status, the identity that answered or "")."""
    from harness.runtimes.seat import IDENTITY_HEADER
    from harness.vocab import PUBLIC_HOST

    if state.get("runtime") == "docker":
        from harness.runtimes import images

        ct = images.client().containers.get(state["container"])
        _, out = ct.exec_run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-m",
                "10",
                "-H",
                f"Host: {PUBLIC_HOST}",
                f"http://127.0.0.1:{state['port']}/",
            ]
        )
        head = out.decode("latin-1")
    else:
        # A held config's own route (Host, path, method, headers, TLS); a scenario's: GET / as the public site.
        req = state.get("request") or {"host": PUBLIC_HOST, "path": "/", "tls": False, "method": "GET", "headers": []}
        head_lines = "".join(f"{k}: {v}\r\n" for k, v in req["headers"] if k.lower() not in ("host", "connection"))
        text = f"{req['method']} {req['path']} HTTP/1.1\r\nHost: {req['host']}\r\n{head_lines}Connection: close\r\n\r\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            try:
                raw.connect(state["socket"])
                sock = raw
                if req["tls"]:  # the client side of the user's own `listen 443 ssl`: not what the lab tests
                    ctx = ssl.create_default_context()
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                    sock = ctx.wrap_socket(raw, server_hostname=req["host"])
                sock.sendall(text.encode())
                data = b""
                while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
                    data += chunk
            except OSError as exc:
                raise LabError(f"the lab's proxy socket {state['socket']} does not answer ({exc})") from None
        head = data.decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split() if lines else []
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    served_by = next(
        (ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith(IDENTITY_HEADER.lower() + ":")), ""
    )
    return status, served_by


def down(*, lab: str | None = None, all_labs: bool = False) -> list[str]:
    """Stop held labs (one by id, or every one with ``all_labs``) and sweep leftovers."""
    stopped = []
    found = labs()
    if not lab and not all_labs and len(found) > 1:
        raise LabError("several labs are up; name one (trustlab down LAB) or use --all")
    for state in found:
        if lab and state["lab"] != lab:
            continue
        _stop(state)
        stopped.append(state["lab"])
    if lab and not stopped:
        shown = lab if len(lab) <= 60 else lab[:57] + "..."
        raise LabError(f"no lab {shown!r} is up; `trustlab status` lists them")
    if all_labs:
        from harness.runtimes import docker as docker_rt

        stopped += [p.name for p in sweep()]
        root = held_root()
        if os.path.lexists(root):
            stopped += [p.name for p in sweep(root=root)]
        stopped += [name for name in docker_rt.sweep_all_if_reachable() if name not in stopped]
    return stopped


# -- internals ----------------------------------------------------------------------------------
def _one(lab: str | None) -> dict[str, Any]:
    running = [s for s in labs() if s["alive"] and (lab is None or s["lab"] == lab)]
    if not running:
        raise LabError("no lab is up; start one with `trustlab up nginx/verify-off`")
    if len(running) > 1:
        raise LabError(f"several labs are up ({', '.join(s['lab'] for s in running)}); pass --lab")
    return running[0]


#: Run inside a docker lab's worker container: one command to the lab's control socket.
_IN_CONTAINER = (
    "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
    "s.sendall(sys.argv[2].encode()+b'\\n');f=s.makefile('rb');sys.stdout.write(f.readline().decode())"
)


def _control(state: dict[str, Any], command: str) -> Any:
    if state.get("runtime") == "docker":
        from harness.runtimes import images

        try:
            ct = images.client().containers.get(state["container"])
            code, out = ct.exec_run(["python3", "-c", _IN_CONTAINER, state["control"], command])
        except Exception as exc:  # noqa: BLE001 - docker SDK errors vary; one line for the user
            raise LabError(f"lab {state['lab']}: its worker container does not answer ({exc})") from None
        if code != 0:
            raise LabError(f"lab {state['lab']}: control failed: {out.decode(errors='replace').strip()[-200:]}")
        return json.loads(out)
    return _control_socket(state["control"], command)


def _control_socket(path: str, command: str) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
        except OSError as exc:
            raise LabError(f"the lab's control socket {path} does not answer ({exc.strerror})") from None
        sock.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _stop(state: dict[str, Any]) -> None:
    # state["dir"] is where the (trusted) state file was found: see _read_state.
    path = Path(state["dir"])
    pid = int(state["pid"])
    if state["alive"]:
        os.kill(pid, signal.SIGTERM)  # on Windows: TerminateProcess, so the docker sweep below matters
        deadline = time.monotonic() + 10
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if path.exists() and _holder_alive(state):
            os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    if state.get("runtime") == "docker":
        # A holder that was killed (or had to be) left its containers, network and volume.
        from harness.errors import PrerequisiteError
        from harness.runtimes import docker as docker_rt

        try:
            docker_rt.remove_lab(_docker_lab_id(state))
        except PrerequisiteError as exc:
            raise LabError(f"lab {state['lab']}: its docker containers could not be removed: {exc}") from None
    if path.exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def _docker_lab_id(state: dict[str, Any]) -> str:
    from harness.runtimes.docker import lab_id

    return lab_id(Path(state["dir"]))


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path / f".{STATE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({k: v for k, v in state.items() if k != "alive"}, indent=2))
    os.replace(tmp, path / STATE_FILE)


def _hold(ref: str, identity: str, runtime: str) -> int:
    """The detached holder: start one scenario's lab, report its state on stdout, and keep it
    up until SIGTERM (`trustlab down`), which unwinds and removes everything."""
    from harness.scenarios import resolve

    fields: dict[str, Any] = {}  # filled once the scenario resolves (a bad id is a reply, not a crash)

    def start(path: Path) -> contextlib.AbstractContextManager[tuple[dict[str, Any], Callable[[], object]]]:
        scenario = resolve(ref)
        suggest, why = point(scenario)
        fields.update(
            {
                "scenario": scenario.id,
                "kind": scenario.proxy.value,
                "identities": list(identities_of(scenario)),
                "point": suggest,
                "point_why": why,
            }
        )
        return (_start_docker if runtime == "docker" else _start_local)(scenario, identity, path)

    return _serve(start, fields, identity, runtime)


def _hold_config(kind: str, config: str, identity: str, runtime: str) -> int:
    """The detached holder of ``up --config``: as :func:`_hold`, for a user's config."""
    fields = {
        "scenario": f"{kind} config {config}",
        "kind": kind,
        "point": "rogue-ca" if identity != "rogue-ca" else "wrong-name",
        "point_why": "an impostor: does your config refuse it?",
    }
    return _serve(lambda path: _start_local_config(kind, Path(config), identity, path), fields, identity, runtime)


def _serve(
    start: Callable[[Path], contextlib.AbstractContextManager[tuple[dict[str, Any], Callable[[], object]]]],
    fields: dict[str, Any],
    identity: str,
    runtime: str,
) -> int:
    """Start a lab with *start* in a private directory, write its state (with *fields*, which
    *start* may fill), report it on stdout, and hold it until SIGTERM unwinds everything."""
    from harness.runner import lab_dir

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        check_space(lab_root())  # before the private directory is made: a full disk leaves nothing
        root = held_root(create=True)
        with lab_dir(root=root) as path, start(path) as (state, wait):
            state.update(
                {
                    "lab": path.name,
                    "dir": str(path),
                    "pid": os.getpid(),
                    "pid_start": process_start(os.getpid()) or "",
                    "runtime": runtime,
                    "identity": identity,
                    **fields,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
            _write_state(path, state)
            reply({"ok": True, "state": state})
            sys.stdout.close()
            wait()
    except KeyboardInterrupt:
        return 0
    except LabError as exc:
        reply({"ok": False, "error": str(exc)})
        return 2
    return 0


_Started = Iterator[tuple[dict[str, Any], Callable[[], object]]]


@contextlib.contextmanager
def _start_local(scenario: Any, identity: str, path: Path) -> _Started:
    from harness.vocab import PUBLIC_HOST

    with _held(scenario, identity, path, "local") as held:
        state = {
            "socket": held.socket,
            "control": held.control,
            "config": held.config,
            "log": held.log,
            "curl": f"curl -s --unix-socket {held.socket} http://{PUBLIC_HOST}/",
        }
        yield state, held.wait


@contextlib.contextmanager
def _held(scenario: Any, identity: str, path: Path, runtime: str) -> Iterator[Held]:
    """*scenario*'s lab on *runtime*, held with its seat as *identity*."""
    from harness.pki import LabPKI
    from harness.runtimes.base import ScenarioJob

    optional, backends = tuple(scenario.optional_identities), (scenario.backend,)
    job = ScenarioJob(
        scenarios=(scenario,),
        identities=(),
        mint=lambda ip: LabPKI.mint(backend_ip=ip, optional=optional, backends=backends),
        hold=identity,
    )
    with _holding(job, scenario.proxy.value, path, runtime, scenario.id) as held:
        yield held


@contextlib.contextmanager
def _holding(job: Job, kind: str, path: Path, runtime: str, what: str) -> Iterator[Held]:
    """*job* held on *runtime* through its one door; what goes wrong names *what*."""
    from harness.runner import get_runtime

    rt = get_runtime(runtime)
    rt.preflight({kind})
    try:
        with rt.hold(job, lab_dir=path) as held:
            yield held
    except LabError as exc:
        raise LabError(f"{what}: {exc}") from None


@contextlib.contextmanager
def _start_local_config(kind: str, config: Path, identity: str, path: Path) -> _Started:
    from harness.check import held_config
    from harness.runtimes.base import ConfigJob

    held = held_config(kind, config, path)
    job = ConfigJob(
        proxies=(held.proxy,),
        cells=(),
        pki_dir=held.pki_dir,
        hosts=held.hosts,
        addresses=tuple(held.addresses),
        seat_ports=tuple(held.seat_ports),
        hold=identity,
    )
    with _holding(job, kind, path, "local", f"{config}: {kind}, as adapted for the lab") as running:
        r = held.upstream.route
        assert r is not None  # held_config holds a routed upstream
        scheme = "https" if r.tls else "http"
        extra = "".join(f" -H '{k}: {v}'" for k, v in r.headers) + (f" -X {r.method}" if r.method != "GET" else "")
        state = {
            "socket": running.socket,
            "control": running.control,
            "identities": list(held.identities),
            "config": running.config,
            "log": running.log,
            "upstream": held.upstream.label,
            "others": held.others,
            "request": {
                "host": r.host,
                "path": r.path,
                "tls": r.tls,
                "method": r.method,
                "headers": [list(h) for h in r.headers],
            },
            "curl": f"curl -s{'k' if r.tls else ''} --unix-socket {running.socket}{extra} {scheme}://{r.host}{r.path}",
        }
        yield state, running.wait


@contextlib.contextmanager
def _start_docker(scenario: Any, identity: str, path: Path) -> _Started:
    from harness.vocab import PUBLIC_HOST

    with _held(scenario, identity, path, "docker") as held:
        state = {
            "container": held.container,
            "control": held.control,
            "port": held.port,
            "config": held.config,
            "log": held.log,
            "curl": f"docker exec {held.container} curl -s -H 'Host: {PUBLIC_HOST}' http://127.0.0.1:{held.port}/",
        }
        yield state, held.wait


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "hold":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # detached: only `trustlab down` stops it
        sys.exit(_hold(sys.argv[2], sys.argv[3], sys.argv[4]))
    if len(sys.argv) == 6 and sys.argv[1] == "hold-config":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(_hold_config(*sys.argv[2:6]))
    sys.exit("usage: python -m harness.held hold SCENARIO IDENTITY local|docker")
