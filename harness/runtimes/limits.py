"""Limits for a lab as a whole (issue 26 item 5): one cgroup per lab worker, and what hit it.

The sandbox's rlimits (:data:`harness.runtimes.sandbox.LIMITS`) bound each proxy *process*; a config
that forks, or several proxies of one lab together, could still run hundreds of processes and
take the host's memory. So each local lab worker (its namespace, its seat, every proxy it
starts) runs in a cgroup of its own with

* ``memory``: :attr:`LabLimits.memory` (v2 ``memory.max``; v1 ``memory.limit_in_bytes``), which
  also bounds the lab's tmpfs run directories (tmpfs pages are charged to the writer);
* ``pids``: :attr:`LabLimits.pids` (``pids.max``, threads count);
* ``cpu``: the default weight for the lab *as a whole* (v2 ``cpu.weight`` 100; v1 ``cpu.shares``
  1024): under contention all of a lab's processes together get one process's share, so a
  lab of spinning proxies slows itself, not the host. (benchmarks/bench_limits.py, full
  matrix, medians of 3 on a loaded 2-core host: with half that weight, and mount(8) for the
  run directories, 21.2 s against 15.7 s without limits; as now, 16.3 s against 15.1 s, within
  the runs' spread of 12.5-22 s; every cell the same.)

Where: cgroup v2 (a delegated subtree: trustlab's own cgroup when it may enable ``memory`` and
``pids`` below it, else ``/sys/fs/cgroup/trustlab`` as root), or, on a host still on cgroup v1
(a hybrid layout, as in docker's cgroupfs driver), one directory per controller under
trustlab's own cgroup there, as root. Anywhere else (no root and no delegation) the lab runs
without them, and :func:`support` says so, and what that leaves open.

Docker labs: the container is the cgroup: ``check``'s one container and a matrix lab's worker
container (which runs every proxy) get :func:`for_proxies` as ``mem_limit``/``pids_limit``; the
seat and per-variant proxy containers keep :data:`harness.runtimes.sandbox.CONTAINER_OPTIONS`. The
worker inside reads the same counters there (:meth:`Watch.container`).

The worker reports exhaustion as such (:class:`Watch`): a cell, a proxy's end or the lab's fatal
error after the lab's OOM killer fired or a fork failed at the process limit reads "the lab hit
its memory limit (288 MiB): ..." / "the lab hit its process limit (192 processes): ...", not a
later symptom (a timeout, "unshare: sigprocmask unblock failed").

Stdlib only: the docker lab's worker imports this module too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

_MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class LabLimits:
    """What one lab worker may use (its proxies, seat and worker together)."""

    #: Bytes of memory (anonymous + page cache + tmpfs).
    memory: int
    #: Processes and threads.
    pids: int
    #: cgroup v2 ``cpu.weight`` (default 100); v1 ``cpu.shares`` = weight x 1024 / 100.
    cpu_weight: int = 100


#: Per lab worker: a base (the worker, its seats, a python and its threads) plus a share per
#: proxy. Measured (benchmarks/bench_limits.py, 2 cores, cgroup v1): a lab of one proxy peaks at
#: 17-31 MiB and 7-33 processes (Apache: 33), one of a kind's every scenario at 78-367 MiB
#: (24 Envoys) and 37-730 processes (25 Apaches), and each of the full default matrix's two
#: workers (~72 proxies, 1498 cells) at 618-660 MiB and 729-784 processes. So: about 16 MiB
#: and 30 processes a proxy at most, x 2 or more, on a base far above the worker's own.
BASE_MEMORY = 256 * _MiB
PROXY_MEMORY = 32 * _MiB
BASE_PIDS = 128
PROXY_PIDS = 64
#: Each proxy's run directory is a tmpfs of its own in the worker's mount namespace: this size
#: (charged to the lab's memory as it fills) and this many files.
RUN_DIR_BYTES = 64 * _MiB
RUN_DIR_FILES = 4096


def for_proxies(n: int) -> LabLimits:
    """The limits of a lab worker that runs *n* proxies."""
    return LabLimits(memory=BASE_MEMORY + PROXY_MEMORY * n, pids=BASE_PIDS + PROXY_PIDS * n)


# -- where cgroups can be made ---------------------------------------------------------------
def _own(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per hierarchy: ``{"": "/a/b"}`` (v2), ``{"memory": "/x", ...}``."""
    found: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, where = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            found[c] = where
    return found


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _controllers(directory: Path, name: str) -> set[str]:
    try:
        return set((directory / name).read_text().split())
    except OSError:
        return set()


def _v2_parent() -> tuple[Path | None, str]:
    """Where lab cgroups go on cgroup v2 (a directory below which memory and pids are
    enabled, or can be), else ``None`` and why not."""
    own = ROOT / _own().get("", "/").lstrip("/")
    if {"memory", "pids"} <= _controllers(own, "cgroup.subtree_control"):
        return own, f"cgroup v2 under trustlab's own cgroup {own}"
    if os.geteuid() == 0 and {"memory", "pids"} <= _controllers(ROOT, "cgroup.subtree_control"):
        parent = ROOT / "trustlab"
        try:
            parent.mkdir(exist_ok=True)
            wanted = {"memory", "pids", "cpu"} & _controllers(parent, "cgroup.controllers")
            if not {"memory", "pids"} <= _controllers(parent, "cgroup.subtree_control"):
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
            return parent, f"cgroup v2 under {parent}"
        except OSError as exc:
            return None, f"cgroup v2: cannot delegate memory and pids to {parent} ({exc.strerror})"
    return None, (
        f"cgroup v2: trustlab's cgroup {own} does not delegate the memory and pids controllers "
        "(run it as root, or in a delegated scope: systemd-run --user --scope -p Delegate=yes trustlab ...)"
    )


def _v1_parents() -> tuple[dict[str, Path] | None, str]:
    """Where lab cgroups go on cgroup v1: one directory per controller (memory, pids, cpu),
    under this process's own cgroup there, as root; else ``None`` and why not."""
    own = _own()
    parents: dict[str, Path] = {}
    for c in ("memory", "pids", "cpu"):
        top = ROOT / c
        if c in own and (top / "cgroup.procs").exists():
            parents[c] = top / own[c].lstrip("/")
    if not {"memory", "pids"} <= set(parents):
        return None, "no cgroup v2 and no cgroup v1 memory and pids hierarchies are mounted"
    if os.geteuid() != 0 or not all(os.access(p, os.W_OK) for p in parents.values()):
        return None, "cgroup v1 (a hybrid host): only root can make a lab's cgroup there"
    return parents, "cgroup v1 (memory, pids, cpu) under trustlab's own cgroups"


def support() -> tuple[str | None, str]:
    """``("v2"|"v1", where)`` when lab cgroups can be made here, else ``(None, why not)``."""
    if (ROOT / "cgroup.controllers").exists():
        parent, why = _v2_parent()
        return ("v2" if parent else None), why
    parents, why = _v1_parents()
    return ("v1" if parents else None), why


#: What a lab without its cgroup leaves open (doctor and the one-line warning say it).
OPEN_WITHOUT = (
    "each proxy still has its rlimits (memory, processes of its own uid, file size, CPU time), "
    "but a lab's proxies together are bounded only by the host's memory and process limits"
)


# -- one lab's cgroup --------------------------------------------------------------------------
_seq = 0


class LabCgroup:
    """One lab worker's cgroup (v2: one directory; v1: one per controller).

    :meth:`enter` is a ``preexec_fn`` step (the worker moves itself in before it execs, so
    everything it starts is inside); :meth:`close` kills what is left and removes it.
    """

    def __init__(self, dirs: dict[str, Path], version: str, limits: LabLimits) -> None:
        self.dirs = dirs
        self.version = version
        self.limits = limits

    @classmethod
    def create(cls, limits: LabLimits) -> LabCgroup | None:
        """A new lab cgroup with *limits*, or ``None`` where none can be made (see :func:`support`)."""
        global _seq
        _seq += 1
        name = f"trustlab-{os.getpid()}-{_seq}"
        version, _ = support()
        try:
            if version == "v2":
                parent, _ = _v2_parent()
                assert parent is not None
                _sweep([parent])
                d = parent / name
                d.mkdir()
                group = cls({"": d}, "v2", limits)
                _write(d / "memory.max", str(limits.memory))
                with contextlib.suppress(OSError):
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(limits.pids))
                with contextlib.suppress(OSError):
                    _write(d / "cpu.weight", str(limits.cpu_weight))
                return group
            if version == "v1":
                parents, _ = _v1_parents()
                assert parents is not None
                _sweep(list(parents.values()))
                dirs = {c: p / name for c, p in parents.items()}
                group = cls({}, "v1", limits)
                for c, d in dirs.items():
                    d.mkdir()
                    group.dirs[c] = d
                mem = dirs["memory"]
                _write(mem / "memory.limit_in_bytes", str(limits.memory))
                with contextlib.suppress(OSError):  # without swap accounting there is no memsw file
                    _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory))
                _write(dirs["pids"] / "pids.max", str(limits.pids))
                if "cpu" in dirs:
                    with contextlib.suppress(OSError):
                        _write(dirs["cpu"] / "cpu.shares", str(limits.cpu_weight * 1024 // 100))
                return group
        except OSError:
            with contextlib.suppress(UnboundLocalError):
                group.close()
            return None
        return None

    def enter(self) -> None:
        """Move the calling process into this cgroup (in a ``preexec_fn``: async-signal-safe
        enough, os.write only)."""
        pid = str(os.getpid())
        for d in self.dirs.values():
            _write(d / "cgroup.procs", pid)

    def watch_dirs(self) -> tuple[str, ...]:
        """The directories a :class:`Watch` reads (handed to the worker in its job)."""
        return tuple(str(d) for d in self.dirs.values())

    def close(self) -> None:
        """Kill whatever is still inside, then remove the cgroup."""
        for d in self.dirs.values():
            _kill_all(d)
        for d in self.dirs.values():
            _rmdir(d)


def _kill_all(d: Path) -> None:
    if (d / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            _write(d / "cgroup.kill", "1")
            return
    with contextlib.suppress(OSError):
        for pid in (d / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def _rmdir(d: Path, *, wait: float = 2.0) -> None:
    until = time.monotonic() + wait
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > until:
                return
            time.sleep(0.01)


def _sweep(parents: list[Path]) -> None:
    """Remove empty lab cgroups left by a trustlab that was killed (its pid is gone)."""
    for parent in parents:
        with contextlib.suppress(OSError):
            for d in parent.iterdir():
                if d.name.startswith("trustlab-") and d.is_dir():
                    pid = d.name.split("-")[1]
                    if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                        with contextlib.suppress(OSError):
                            d.rmdir()


# -- what hit the limits -----------------------------------------------------------------------
def _fields(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class Watch:
    """The lab's memory and process counters, read by the worker (or the host) to say that the
    lab hit a limit: OOM kills (v2 ``memory.events``, v1 ``memory.oom_control``) and forks
    refused at ``pids.max`` (``pids.events``).

    *dirs*: the lab's cgroup directories (local: from the job; none: the lab has no cgroup,
    nothing to watch); :meth:`container`: this process's own cgroups as its container mounts
    them (docker).
    """

    def __init__(self, dirs: tuple[str, ...] = ()) -> None:
        self.memory: Path | None = None
        self.pids: Path | None = None
        for d in map(Path, dirs):
            if (d / "memory.events").exists() or (d / "memory.oom_control").exists():
                self.memory = d
            if (d / "pids.events").exists():
                self.pids = d
        self.base = self.counts()

    @classmethod
    def container(cls) -> Watch:
        """The watch of the container this process runs in (its own cgroups)."""
        return cls(tuple(str(d) for d in _container_dirs()))

    def counts(self) -> tuple[int, int]:
        """(OOM kills, forks refused at the process limit) so far."""
        oom = 0
        if self.memory is not None:
            events = _fields(self.memory / "memory.events")
            oom = events.get("oom_kill", 0) or events.get("oom", 0)
            if not events:
                oom = _fields(self.memory / "memory.oom_control").get("oom_kill", 0)
        pids = _fields(self.pids / "pids.events").get("max", 0) if self.pids is not None else 0
        return oom, pids

    def hit(self) -> str | None:
        """ "the lab hit its memory limit (N MiB)" (and/or its process limit) when the lab's
        counters moved since this watch began, else ``None``."""
        oom, pids = self.counts()
        said = []
        if oom > self.base[0]:
            said.append(
                f"the lab hit its memory limit{_of(self._memory_max(), 'MiB')}: the kernel ended a "
                "process of it (out of memory)"
            )
        if pids > self.base[1]:
            said.append(f"the lab hit its process limit{_of(self._pids_max(), 'processes')}: a fork was refused")
        return "; ".join(said) or None

    def explain(self, reason: str) -> str:
        """*reason*, led by what limit the lab hit (unchanged when it hit none)."""
        hit = self.hit()
        return f"{hit} ({reason})" if hit and reason else hit or reason

    def _memory_max(self) -> int | None:
        if self.memory is None:
            return None
        value = _number(self.memory / "memory.max") or _number(self.memory / "memory.limit_in_bytes")
        return value // _MiB if value and value < (1 << 60) else None

    def _pids_max(self) -> int | None:
        return _number(self.pids / "pids.max") if self.pids is not None else None


def _of(value: int | None, unit: str) -> str:
    return f" ({value} {unit})" if value is not None else ""


def _container_dirs() -> list[Path]:
    """This process's own cgroup directories as its container mounts them (the container's)."""
    if (ROOT / "cgroup.controllers").exists():
        return [ROOT]
    return [ROOT / c for c in ("memory", "pids") if (ROOT / c).is_dir()]
