"""The sandbox every proxy process runs in, whatever config it was given.

A proxy config can be someone else's (``trustlab check``, the pytest plugin, a challenge, a
scenario file's raw ``config``), and a proxy config is a program: piped logs, ``RewriteMap
prg:``, Lua, ``LoadModule``, files read with ``-f``, unix sockets as upstreams. So the lab does
not trust the config; it confines the process.

Local runtime (:func:`command`): the namespace worker starts each proxy as

    bwrap <file-system view> -- setpriv --reuid U --regid U --clear-groups \\
        --inh-caps=-all --bounding-set=-all --no-new-privs -- <proxy command>

* **uid**: a fresh unprivileged uid per proxy process (:func:`new_uid`, in a range no account
  uses), no supplementary groups, no capabilities (none effective, permitted, inheritable,
  ambient or in the bounding set) and ``no_new_privs``. Without host root (the worker is then
  root of a user namespace only), the proxy keeps the caller's own uid and bubblewrap drops
  every capability.
* **file system**: a fresh root (tmpfs) holding ``/usr`` read-only (the binaries, their
  libraries and modules: the symlinked ``/bin``, ``/lib``, ``/sbin``), a handful of ``/etc``
  files written by the lab (``hosts`` = the lab's private hosts file, ``passwd``, ``group``,
  ``nsswitch.conf``) or copied read-only from the host (``ld.so.cache``, ``localtime``,
  ``ssl/openssl.cnf``, ``mime.types``), a private ``/dev`` (null, zero, random, ...), a ``/proc`` of its own
  pid namespace, an empty 16 MiB ``/tmp`` and ``/dev/shm``, the proxy's run directory (read-write, owned by
  its uid) and the lab files it must read (CA bundles, client keys), read-only, at their lab
  paths. Nothing else of the host exists in it: no ``/root``, ``/home``, ``/run``,
  ``/var/run``, no host socket, no ``/etc/shadow``.
* **environment**: only ``PATH``, ``LANG=C``, ``HOME`` and ``PWD`` (both its run directory).
* **namespaces**: new pid, ipc, uts (and cgroup where it exists) namespaces; the network is
  the lab's own namespace (loopback with the lab addresses, nothing else); a new session
  (no terminal to inject into).
* **limits** (:data:`LIMITS`, rlimits set before the sandbox starts): address space, processes
  of its uid, file size, CPU time, open files, no core dumps.

Docker runtime: the container is the sandbox (non-root user, every capability dropped,
read-only root file system, ``no-new-privileges``, pids and memory limits, an internal network,
a docker volume and no host mounts; see :data:`CONTAINER_OPTIONS`); inside it the proxy gets
the same clean environment and rlimits (:func:`limit`).

Stdlib only: the docker image's worker imports this module too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import secrets
import shutil
import stat
from collections.abc import Container, Iterable
from pathlib import Path

#: Sandbox uids: 2_100_000_000 + a random offset below 2**24, far above any account, below 2**31.
UID_BASE = 2_100_000_000
UID_SPAN = 1 << 24

_MiB = 1 << 20
#: rlimits of every proxy process (soft = hard): measured need x 4 or more (see benchmarks/bench_sandbox.py).
LIMITS: dict[int, int] = {
    resource.RLIMIT_AS: 2048 * _MiB,  # Apache's event MPM reserves ~0.6 GiB of virtual memory
    resource.RLIMIT_NPROC: 512,  # threads count: Apache -X runs ~27
    resource.RLIMIT_FSIZE: 64 * _MiB,
    resource.RLIMIT_CPU: 600,
    resource.RLIMIT_NOFILE: 65536,  # HAProxy wants 2 x maxconn + a few
    resource.RLIMIT_CORE: 0,
}

#: The environment a proxy gets: nothing of trustlab's own (CI tokens stay out).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Host files copied read-only into the view, when they exist.
_HOST_ETC = ("ld.so.cache", "localtime", "ssl/openssl.cnf", "mime.types")

#: How the docker runtime creates every lab container (docker SDK keyword arguments).
CONTAINER_USER = "10001:10001"
CONTAINER_OPTIONS: dict[str, object] = {
    "user": CONTAINER_USER,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=16m"},
    "pids_limit": 2048,
    "mem_limit": "2g",
    "memswap_limit": "2g",
    "ulimits": None,  # filled in by harness.runtimes.docker (docker.types.Ulimit)
}


def available() -> str | None:
    """``None`` when the local sandbox can run here, else what to install."""
    missing = [t for t, pkg in (("bwrap", "bubblewrap"), ("setpriv", "util-linux")) if not shutil.which(t)]
    if missing:
        pkgs = " ".join({"bwrap": "bubblewrap", "setpriv": "util-linux"}[t] for t in missing)
        return f"the proxy sandbox needs {', '.join(missing)}; run: sudo apt-get install {pkgs}"
    return None


def host_root() -> bool:
    """True when this process is root of the initial user namespace (it can hand out uids)."""
    if os.geteuid() != 0:
        return False
    try:
        fields = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    return fields[:3] == ["0", "0", "4294967295"]


def new_uid() -> int:
    """A fresh sandbox uid (random in the sandbox range)."""
    return UID_BASE + secrets.randbelow(UID_SPAN)


def limit(*, nproc: bool = True, overrides: Iterable[tuple[int, int]] = ()) -> None:
    """Apply :data:`LIMITS` to this process (a preexec_fn, before the proxy starts).

    *nproc* False leaves the process count alone: in a container every lab process shares one
    uid, and the container's pids limit bounds them instead. *overrides* replace single limits
    (a driver's ``rlimits``: Envoy's tcmalloc maps more address space than the default allows).
    """
    for res, value in {**LIMITS, **dict(overrides)}.items():
        if res != resource.RLIMIT_NPROC or nproc:
            _, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)  # raising a hard limit needs CAP_SYS_RESOURCE
            resource.setrlimit(res, (value, value))


def environment(home: str) -> dict[str, str]:
    return {"PATH": PATH, "LANG": "C", "HOME": home}


#: The most the trusted side reads of a file a proxy wrote, at once: its last 64 KiB.
TAIL = 64 * 1024


def worker_environment(pythonpath: str) -> dict[str, str]:
    """The whole environment of a lab worker: nothing of the caller's (no CI token, no workshop
    secret), since a proxy that tricks the worker into reading ``/proc/self/environ`` must find
    nothing there (issue 26)."""
    return {"PATH": PATH, "LANG": "C.UTF-8", "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}


def open_planted(path: Path, base: Path) -> int:
    """Open *path*, a file a proxy may have replaced, for reading, following no link.

    Every component below *base* (the proxy's run directory, whose own parents the proxy cannot
    change) is opened relative to its parent with ``O_NOFOLLOW``: the proxy owns the run
    directory and can plant a link at any depth. ``O_NONBLOCK``: a FIFO planted there cannot
    hang the reader. Raises OSError (``ELOOP``: a link)."""
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        base, parts = path.parent, (path.name,)
    if not parts:
        raise OSError(errno.EISDIR, "is the run directory itself", str(path))
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = sub
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        return os.open(parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)


def tail(fd: int, *, since: int = 0, limit: int = TAIL) -> bytes:
    """The bytes of regular file *fd* after offset *since*, at most its last *limit* bytes
    (``pread``: the file offset, which a proxy may share, is not moved)."""
    size = os.fstat(fd).st_size
    start = max(since, size - limit, 0)
    chunks, want = [], min(limit, size - start)
    while want > 0 and (chunk := os.pread(fd, want, start)):
        chunks.append(chunk)
        start, want = start + len(chunk), want - len(chunk)
    return b"".join(chunks)


def read_planted(
    path: Path, base: Path, *, since: int = 0, owners: Container[int] | None = None, limit: int = TAIL
) -> tuple[bytes, str | None]:
    """Read what a proxy wrote to *path* (under *base*) as the trusted side must: no link
    followed, a regular file only (no FIFO, no device), owned by one of *owners* when given,
    at most its last *limit* bytes. Returns (bytes, why it was not read or ``None``); a file
    the proxy deleted reads as empty."""
    try:
        fd = open_planted(path, base)
    except FileNotFoundError:
        return b"", None
    except OSError as exc:
        what = "a symbolic link" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
        return b"", f"{path.name} not read: {what} (the proxy's files are read only as regular files)"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b"", f"{path.name} not read: not a regular file (the proxy's files are read only as regular files)"
        if owners is not None and st.st_uid not in owners:
            return b"", f"{path.name} not read: owned by uid {st.st_uid}, not by the proxy"
        return tail(fd, since=since, limit=limit), None
    finally:
        os.close(fd)


def size_planted(path: Path, base: Path) -> int:
    """The size of the regular file *path* (see :func:`open_planted`), 0 when it is gone or not one."""
    try:
        fd = open_planted(path, base)
    except OSError:
        return 0
    try:
        st = os.fstat(fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    finally:
        os.close(fd)


def create_log(path: Path) -> None:
    """Create the proxy's log (when missing) before it starts, following no link."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644))


def write_etc(directory: Path, roots: Iterable[str] = ("",), mounts: Iterable[str] = ()) -> Path:
    """The lab's own ``/etc`` for sandboxed proxies, one per root file system in *roots* ("" is the
    host's), each bound whole as the proxy's ``/etc`` (:func:`etc_of`): ``passwd``, ``group`` and
    ``nsswitch.conf`` with only the system accounts the proxies' own configs name (``User
    www-data``, ``user nginx``), so a config that names them still parses, no host user and no
    password hash anywhere; copies of that root's :data:`_HOST_ETC` files; an empty ``hosts``
    where the lab's hosts file is bound, and an empty file or directory at each of *mounts* (paths
    under ``/etc`` a proxy gets read-only: :meth:`~harness.proxies.base.Driver.sandbox_paths`),
    where it is bound.

    One bind instead of one per file: bubblewrap reads the mount table for every bind, and a
    lab's mount table holds a tmpfs per running proxy."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    from harness.proxies import driver, kinds

    accounts = [a for k in kinds() for a in driver(k).accounts]
    users = list(dict([("root", 0), ("daemon", 1), ("www-data", 33), ("nobody", 65534), *accounts]).items())
    groups = [*users, ("nogroup", 65534)]
    files = {
        "passwd": "".join(f"{n}:x:{u}:{u}:{n}:/nonexistent:/usr/sbin/nologin\n" for n, u in users),
        "group": "".join(f"{n}:x:{g}:\n" for n, g in dict(groups).items()),
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "hosts": "",
    }
    for root in dict.fromkeys(roots):
        etc = Path(etc_of(str(directory), root))
        (etc / "ssl").mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, text in files.items():
            (etc / name).write_text(text)
        for name in _HOST_ETC:
            source = Path(root or "/") / "etc" / name
            if source.exists():
                shutil.copyfile(source, etc / name)
        for mount in mounts:
            where = etc / Path(mount).relative_to("/etc")
            if Path(mount).is_dir():
                where.mkdir(parents=True, exist_ok=True)
            else:
                where.parent.mkdir(parents=True, exist_ok=True)
                where.touch()
        for path in etc.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        etc.chmod(0o755)
    return directory


def etc_of(etc_dir: str, root: str) -> str:
    """The ``/etc`` :func:`write_etc` made under *etc_dir* for the root file system *root*."""
    return f"{etc_dir}/{'host' if not root else 'root-' + hashlib.sha256(root.encode()).hexdigest()[:12]}"


def loader_command(root: str, binary: str) -> list[str]:
    """Run *binary* of the Debian root file system *root* with that root's own dynamic loader and
    libraries, without entering it (no chroot, no mount, no privilege): how the docker image and
    the version probes start a binary of another Debian release. The local sandbox mounts the
    root's ``/usr`` instead (:func:`command` with ``root``)."""
    return [
        f"{root}/usr/lib64/ld-linux-x86-64.so.2",
        "--library-path",
        f"{root}/usr/lib/x86_64-linux-gnu",
        f"{root}{binary}",
    ]


def _parents(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[: i + 1])) for i in range(1, len(parts) - 1)]


def command(
    argv: list[str],
    *,
    run_dir: str,
    hosts_file: str,
    etc_dir: str,
    read_only: Iterable[str] = (),
    private: dict[str, str] | None = None,
    uid: int | None,
    env: dict[str, str] | None = None,
    root: str = "",
) -> list[str]:
    """The bubblewrap command line that runs *argv* confined (see the module doc).

    *root* is another root file system (a Debian trixie one for trixie's packages): its
    ``/usr`` (and ``/bin``, ``/lib``... as it has them) and its ``/etc`` files replace the
    host's, so the proxy runs on that userland; everything else stays as above."""
    bw = [
        "bwrap",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--hostname",
        "trustlab-proxy",
    ]
    if uid is None:
        # Root of a user namespace only: a nested one where the proxy is not even root (nginx
        # would chown its temp dirs to "nobody", unmapped there), with no capability at all.
        bw += ["--unshare-user", "--uid", "10001", "--gid", "10001", "--cap-drop", "ALL"]
    for key, value in {**environment(run_dir), **(env or {})}.items():
        bw += ["--setenv", key, value]
    top = Path(root or "/")
    bw += ["--ro-bind", str(top / "usr"), "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = top / name
        if target.is_symlink():
            bw += ["--symlink", os.readlink(target), f"/{name}"]
        elif target.is_dir():
            bw += ["--ro-bind", str(target), f"/{name}"]
    bw += ["--dev", "/dev", "--proc", "/proc"]
    # /tmp and /dev/shm (APR's shared memory: Apache's balancer slots) are its own, 16 MiB each.
    for tmp in ("/tmp", "/dev/shm"):
        bw += ["--perms", "1777", "--size", str(16 * _MiB), "--tmpfs", tmp]
    bw += ["--ro-bind", etc_of(etc_dir, root), "/etc", "--ro-bind", hosts_file, "/etc/hosts"]
    private = private or {}
    read_only = list(read_only)
    made: set[str] = {"/tmp", "/etc", "/usr"}
    for path in [run_dir, *read_only, *private]:
        for parent in _parents(path):
            if parent not in made and not parent.startswith(("/usr/", "/etc/")):  # /etc: write_etc's
                made.add(parent)
                bw += ["--perms", "0755", "--dir", parent]
    bw += ["--bind", run_dir, run_dir]
    for path in read_only:
        if Path(path).exists() and path not in private:
            bw += ["--ro-bind", path, path]
    for dest, src in private.items():  # the proxy's own copy of a lab key, at the lab's path
        bw += ["--ro-bind", src, dest]
    bw += ["--chdir", run_dir, "--"]
    if uid is not None:
        bw += [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    return bw + argv


def own_copies(keys: Iterable[Path], run_dir: Path, uid: int | None) -> dict[str, str]:
    """Private keys several proxies of a lab share (``pki/proxy-client.key``): each proxy gets
    its own copy, owned by its uid, mounted read-only at the original path."""
    copies: dict[str, str] = {}
    store = run_dir / ".keys"
    for key in keys:
        if not key.is_file():
            continue
        store.mkdir(mode=0o700, exist_ok=True)
        copy = store / key.name
        copy.write_bytes(key.read_bytes())
        copy.chmod(0o600)
        copies[str(key)] = str(copy)
    hand_over([store], uid)
    return copies


def hand_over(paths: Iterable[Path], uid: int | None) -> None:
    """Make *paths* (the run directory and everything in it, client keys) the sandbox uid's own."""
    if uid is None:
        return
    for path in paths:
        if not path.exists():
            continue
        os.chown(path, uid, uid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for sub in path.rglob("*"):
                os.chown(sub, uid, uid, follow_symlinks=False)
