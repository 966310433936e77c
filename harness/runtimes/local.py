"""The local runtime: the host's own nginx, apache2 and haproxy, in private namespaces.

Each lab worker runs in its own network + mount + pid namespace (``unshare``): a loopback of
its own carrying the lab IP, and a private hosts file bind-mounted over ``/etc/hosts`` inside
that mount namespace only; every proxy process runs in the sandbox of :mod:`harness.runtimes.sandbox`.
Nothing listens on a host interface and the host's files are never changed. As root the
namespaces are created directly; otherwise inside a user namespace (``--map-root-user``) where
the kernel allows it.

A matrix is split into shards, one worker namespace each (one per core): each worker runs a
seat and one proxy process per scenario, and its cells one at a time, so the seat attributes
every connection to the cell that caused it. Shards never see each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import processes as _process
from harness.errors import LabError, PrerequisiteError
from harness.pki import BUNDLE_FILE, CA_FILE, LabPKI
from harness.proxies import Installation, RenderContext, driver, kinds
from harness.runtimes import limits
from harness.runtimes.base import ConfigJob, EventReader, Held, Job, OnProxy, ScenarioJob, refuse_unstarted
from harness.runtimes.contract import (
    CellEvent,
    CellSpec,
    HoldSpec,
    ProxySpec,
    SandboxSpec,
    WorkerJob,
    dump_job,
    interleaved,
)
from harness.runtimes.limits import LabCgroup, Watch
from harness.runtimes.sandbox import available as sandbox_tools
from harness.runtimes.sandbox import host_root as sandbox_host_root
from harness.runtimes.sandbox import worker_environment
from harness.scenarios import Scenario
from harness.vocab import BACKEND_NAME, BACKEND_PORT, LOCAL_LAB_IP, SIBLING_NAME

FIRST_PORT = 20000
#: Each lab worker's deadline (``WorkerJob.deadline_s``): this many seconds, plus
#: :data:`CELL_DEADLINE_S` per cell; its cells after that are ``error`` (deadline), not run. A
#: cell takes a few milliseconds (a few hundred times less), a check's upstream group a second
#: or two; a config that slows every request (up to the probe's 10 s each) would otherwise hold
#: the lab for cells x 10 s.
LAB_DEADLINE_S = 60.0
CELL_DEADLINE_S = 1.0


#: Proxies a lab worker starts at a time (``WorkerJob.start_batch``; 0: all at once), as the docker
#: runtime's worker does: the next batch starts while this one's cells run, and each batch stops
#: after its cells. All of a shard's ~72 at once took ~3 s (about 40 ms each, every started proxy
#: competing for the CPU) before the first cell ran. Measured in one process, default matrix,
#: interleaved, load 8-20 (2026-12-07): all at once median 9.72 s (9 runs); batches of 12 8.51 s
#: (6 runs, 0.88x, faster in 4 of 6 pairs), of 24 7.90 s (6 runs, 4 of 6 pairs, three of them at
#: the lowest load), of 8 8.76 s (3 runs); the same cells in every run. (At load 17-18, batches of
#: 20 against all at once, 3 runs each, showed nothing either way.)
START_BATCH = 12

#: Whether this process has said that its labs run without a cgroup (once is enough).
_warned_no_cgroup = False


def lab_deadline(cells: int) -> float:
    """The deadline of a lab worker that runs *cells* cells (see :data:`LAB_DEADLINE_S`)."""
    return LAB_DEADLINE_S + CELL_DEADLINE_S * cells


#: Measured start-to-listening order (benchmarks/bench_local.py): nginx, then HAProxy, then Apache.


@dataclass(frozen=True)
class Plan:
    """One proxy process of a lab: the scenario it runs and where it lives."""

    scenario: Scenario
    run_dir: Path
    listen_port: int
    #: Which installation runs it (``trustlab matrix --all-versions``); ``None``: the kind's default.
    inst: Installation | None = None


def namespace_mode() -> tuple[list[str], str]:
    """The ``unshare`` flags this user can use, and a one-line description."""
    if _process.is_root():
        return [], "root: network + mount namespaces"
    return ["--user", "--map-root-user"], "unprivileged: user + network + mount namespaces"


def check_namespaces() -> str | None:
    """``None`` when a private namespace can be made here, else the reason it cannot."""
    if not shutil.which("unshare"):
        return "the unshare command is missing (apt-get install util-linux)"
    if not shutil.which("ip"):
        return "the ip command is missing (apt-get install iproute2)"
    flags, _ = namespace_mode()
    proc = subprocess.run(
        ["unshare", *flags, "--net", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        hint = (
            "run as root, or allow user namespaces (sysctl kernel.unprivileged_userns_clone=1; "
            "on Ubuntu 24.04+ also kernel.apparmor_restrict_unprivileged_userns=0)"
        )
        return f"cannot create a private namespace ({msg}); {hint}"
    return None


class LocalRuntime:
    """Runs labs with the host's proxy binaries inside private namespaces.

    Every proxy process runs in the sandbox of :mod:`harness.runtimes.sandbox` (bubblewrap, its own uid,
    no capabilities, a file-system view of ``/usr`` and its lab files only). *sandbox* False is
    the payload tests' and the benchmark's opt-out, never offered on the command line.
    """

    name = "local"

    def __init__(self, *, sandbox: bool = True, plain_start: bool = False, lab_limits: bool = True) -> None:
        self.sandbox = sandbox
        #: Start every proxy as its kind starts by default, without the lab's start-cost savings
        #: (tests/test_start_cost.py's "before"; never offered on the command line).
        self.plain_start = plain_start
        #: False: the tests' and the benchmark's opt-out (labs without their cgroup and without
        #: tmpfs run directories), never offered on the command line.
        self.lab_limits = lab_limits
        self._live: set[subprocess.Popen[bytes]] = set()
        self._stopping = False

    def preflight(self, kinds: set[str]) -> None:
        missing = [k for k in sorted(kinds) if not driver(k).find_binary()]
        if missing:
            hints = "; ".join(dict.fromkeys(driver(k).install_hint() for k in missing))
            raise PrerequisiteError(f"local runtime: {', '.join(missing)} not installed; run: {hints}")
        problem = check_namespaces() or (self.sandbox and sandbox_tools())
        if problem:
            raise PrerequisiteError(f"local runtime: {problem}")

    def versions(self) -> dict[str, str]:
        return {k.value: driver(k).version() for k in kinds()}

    def prepare(
        self,
        scenarios: list[Scenario],
        lab_dir: Path,
        pki: LabPKI,
        installations: Mapping[str, Installation] | None = None,
    ) -> list[Plan]:
        """Write PKI, hosts file and one rendered config per scenario into *lab_dir*."""
        pki_dir = pki.write_to(lab_dir / "pki")
        names = " ".join(dict.fromkeys([BACKEND_NAME, SIBLING_NAME, *(sc.backend for sc in scenarios)]))
        (lab_dir / "hosts").write_text(f"127.0.0.1 localhost\n{pki.backend_ip} {names}\n")
        plans = []
        for i, sc in enumerate(scenarios):
            run_dir = lab_dir / "proxies" / sc.id.replace("/", "--")
            run_dir.mkdir(parents=True, exist_ok=True)
            port = FIRST_PORT + i
            ctx = RenderContext(
                run_dir=str(run_dir),
                listen=f"127.0.0.1:{port}",
                ca=str(pki_dir / CA_FILE),
                bundle=str(pki_dir / BUNDLE_FILE),
                backend_ip=pki.backend_ip,
                lean=not self.plain_start,
            )
            drv = driver(sc.proxy)
            (run_dir / drv.config_name).write_text(drv.render(sc, ctx))
            for name, text in drv.extra_files(sc, ctx).items():  # remap.config beside records.config
                (run_dir / name).write_text(text)
            plans.append(Plan(sc, run_dir, port, (installations or {}).get(sc.id)))
        return plans

    def installations(self, kind: str) -> list[Installation]:
        return driver(kind).installations()

    def lacking(self, kinds: Iterable[str], matches: Callable[[str, str], bool] = lambda k, v: True) -> str:
        return ""  # the local runtime runs whatever this host has installed

    def facts(self) -> dict[str, Any]:
        return {"backend_ip": LOCAL_LAB_IP}

    def run(self, job: Job, *, lab_dir: Path, on_proxy: OnProxy | None = None) -> Iterator[CellEvent]:
        """Yield one cell event per cell of *job*, in completion order.

        A scenario job is split into shards, one worker namespace each (one per core); a config
        job runs in one namespace."""
        if isinstance(job, ConfigJob):
            return self._run_configs(job, lab_dir, on_proxy)
        return self._run_scenarios(job, lab_dir, on_proxy)

    @contextlib.contextmanager
    def hold(self, job: Job, *, lab_dir: Path) -> Iterator[Held]:
        """Start *job*'s one proxy in a namespace of its own and keep it serving: the seat
        presents ``job.hold``, a unix socket in *lab_dir* relays to the proxy's listener."""
        if len(str(lab_dir / "control.sock")) > 100:
            raise LabError(f"{lab_dir}: too long for a unix socket path; set TRUSTLAB_TMPDIR to a shorter directory")
        assert job.hold is not None, "a held job names the identity its seat presents"
        control = str(lab_dir / "control.sock")
        if isinstance(job, ConfigJob):
            hold = HoldSpec(job.hold, control, socket_dir=str(lab_dir))
            worker_job = self._config_job(job, lab_dir, hold=hold)
            p = job.proxies[0]
            config, log = p.config, driver(p.kind).error_log(p.run_dir)
        else:
            (scenario,) = job.scenarios
            pki = job.mint(LOCAL_LAB_IP)
            plans = self.prepare([scenario], lab_dir, pki, job.installations)
            hold = HoldSpec.of(scenario, job.hold, control=control, socket_dir=str(lab_dir))
            worker_job = dataclasses.replace(self._job(plans, [], lab_dir, pki), hold=hold)
            drv = driver(scenario.proxy)
            config, log = plans[0].run_dir / drv.config_name, drv.error_log(plans[0].run_dir)
        worker = self._spawn(worker_job, lab_dir / "worker.err")
        try:
            reader = EventReader(lambda key: (), refuse_unstarted, where=self.name)
            assert worker.stdout is not None
            for _ in reader.stream(worker.stdout):
                pass
            if not reader.done:
                raise _worker_failure(worker)
            yield Held(
                config=str(config), log=str(log), control=control, socket=str(lab_dir / "proxy.sock"), wait=worker.wait
            )
        finally:
            _stop(worker)

    def _run_scenarios(self, job: ScenarioJob, lab_dir: Path, on_proxy: OnProxy | None) -> Iterator[CellEvent]:
        pki = job.mint(LOCAL_LAB_IP)
        plans = self.prepare(list(job.scenarios), lab_dir, pki, job.installations)
        n = max(1, min(job.shards or os.cpu_count() or 1, len(plans)))
        # Spread the kinds evenly: Apache is the slowest to start.
        ordered = sorted(plans, key=lambda p: (p.scenario.proxy.value, p.scenario.id))
        groups = [ordered[i::n] for i in range(n)]
        rng = random.Random(job.seed) if job.seed is not None else None
        workers = []
        try:
            for g, group in enumerate(groups):
                # Fastest-starting proxies first: their cells run while Apache still starts.
                quick_first = sorted(group, key=lambda p: driver(p.scenario.proxy).start_order)
                cells = [(p, ident) for p in quick_first for ident in job.identities_of(p.scenario.id)]
                if rng:
                    rng.shuffle(cells)
                # Batched: kinds in turn, so that each start batch holds every kind of the shard.
                starting = interleaved(group, lambda p: p.scenario.proxy.value) if START_BATCH else group
                work = self._job(starting, cells, lab_dir, pki)
                work = dataclasses.replace(work, deadline_s=lab_deadline(len(work.cells)), start_batch=START_BATCH)
                workers.append(self._spawn(work, lab_dir / f"worker-{g}.err"))
            yield from self._collect(workers, job.identities_of, on_proxy)
        finally:
            _stop_all(workers)

    def _run_configs(self, job: ConfigJob, lab_dir: Path, on_proxy: OnProxy | None) -> Iterator[CellEvent]:
        worker_job = self._config_job(job, lab_dir)
        if self._stopping:
            raise KeyboardInterrupt
        proc = self._spawn(worker_job, lab_dir / "worker.err")
        self._live.add(proc)
        try:
            yield from self._collect([proc], lambda key: (), on_proxy)
        finally:
            _stop(proc)
            self._live.discard(proc)

    def _config_job(self, job: ConfigJob, lab_dir: Path, hold: HoldSpec | None = None) -> WorkerJob:
        """The worker's job for a config job (a held config lab, with *hold*); writes the lab's
        hosts file."""
        pki_dir, seat_ports = job.pki_dir, job.seat_ports
        (lab_dir / "hosts").write_text(prepared_hosts(dict(job.hosts), job.backend_ip))
        return WorkerJob(
            mode="prepared",
            pki_dir=str(pki_dir),
            backend_ip=job.backend_ip,
            seat_port=seat_ports[0] if seat_ports else BACKEND_PORT,
            seat_ports=tuple(dict.fromkeys(seat_ports or [BACKEND_PORT])),
            # "::" (dual stack) when an upstream is IPv6: the seat listens where it points.
            seat_host="::" if any(":" in a for a in job.addresses) else "0.0.0.0",
            addresses=job.addresses,
            hosts_file=str(lab_dir / "hosts"),
            proxies=tuple(
                self._spec(
                    p.key,
                    p.kind,
                    p.listen_port,
                    p.run_dir,
                    p.config,
                    pki_dir,
                    # The lab's CA files (check adds hashed CA directories) and the client-side
                    # certificate and key (check's "front"); never the seat's keys.
                    # The CRLs when check minted them (a config that names one).
                    [
                        pki_dir / CA_FILE,
                        pki_dir / BUNDLE_FILE,
                        *(f for f in (pki_dir / "crl-chain.pem", pki_dir / "crl-intermediate.pem") if f.exists()),
                    ],
                    own=[pki_dir / "ca-dir", pki_dir / "bundle-dir", lab_dir / "front"],
                    inst=p.inst,
                )
                for p in job.proxies
            ),
            cells=job.cells,
            deadline_s=lab_deadline(len(job.cells)),
            hold=hold,
        )

    def stop(self) -> None:
        """Stop every lab worker this runtime runs (``trustlab check`` on Ctrl-C, from the main
        thread while other threads read them); no new one starts afterwards."""
        self._stopping = True
        live = list(self._live)
        for proc in live:  # all at once: each worker stops its proxies in parallel
            _signal_worker(proc)
        for proc in live:
            _stop(proc, close=False)  # the reading thread sees EOF and closes (a close under its select hangs it)

    def lab_path(self, lab_dir: Path, path: Path) -> Path:
        """Where the proxies see *path* (a file under *lab_dir*): the same path, on this host."""
        return path

    # -- internals ---------------------------------------------------------------------
    def _job(self, group: list[Plan], cells: list[tuple[Plan, str]], lab_dir: Path, pki: LabPKI) -> WorkerJob:
        read_only, own = _pki_files(lab_dir / "pki")
        return WorkerJob(
            pki_dir=str(lab_dir / "pki"),
            backend_ip=pki.backend_ip,
            seat_port=BACKEND_PORT,
            hosts_file=str(lab_dir / "hosts"),
            proxies=tuple(
                self._spec(
                    p.scenario.id,
                    p.scenario.proxy.value,
                    p.listen_port,
                    p.run_dir,
                    p.run_dir / driver(p.scenario.proxy).config_name,
                    lab_dir / "pki",
                    read_only,
                    own=own,
                    inst=p.inst,
                )
                for p in group
            ),
            cells=tuple(CellSpec.of(p.scenario, ident) for p, ident in cells),
        )

    def _spec(
        self,
        key: str,
        kind: str,
        port: int,
        run_dir: Path,
        config: Path,
        pki_dir: Path,
        read_only: list[Path],
        *,
        own: list[Path],
        inst: Installation | None = None,
    ) -> ProxySpec:
        """One proxy of a lab job (*inst*: which installation, else the default), in the sandbox:
        it may read the lab files in *read_only* and its installation's paths; those in *own*
        (private keys, 0700 directories) it gets as its own (a copy of a key file; a directory
        handed to its uid), still mounted read-only."""
        drv = driver(kind)
        if inst is not None and inst.root and not self.sandbox:
            raise LabError(
                f"{inst.label} runs in its root file system {inst.root}, which only the sandbox "
                "mounts; run it with the sandbox on"
            )
        owned = [str(p) for p in own if p.exists()]
        wanted = [*read_only, *map(Path, drv.sandbox_paths(inst))]
        readable = [str(p) for p in wanted if p.exists()] + owned
        box = SandboxSpec(read_only=tuple(dict.fromkeys(readable)), keys=tuple(owned))
        return ProxySpec(
            key=key,
            kind=kind,
            listen_port=port,
            run_dir=str(run_dir),
            log=str(drv.error_log(run_dir)),
            config=str(config),
            installation=inst,
            env=drv.environment(str(run_dir), str(pki_dir), inst),
            sandbox=box if self.sandbox else None,
            unconfined=not self.sandbox,
            plain=self.plain_start,
        )

    def _spawn(self, job: WorkerJob, err_path: Path) -> subprocess.Popen[bytes]:
        """Start a lab worker in namespaces of its own (and its own cgroup) and hand it *job*."""
        from harness.runtimes.nsworker import die_with_parent

        # One cgroup per lab worker (issue 26 item 5): the worker moves itself in before it
        # execs unshare, so its namespace, seat and every proxy are inside and bounded together.
        group = self._cgroup(len(job.proxies))
        job = dataclasses.replace(
            job, cgroup=group.watch_dirs() if group else (), run_tmpfs=self.lab_limits and job.hold is None
        )

        def preexec() -> None:
            die_with_parent()
            if group is not None:
                group.enter()

        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                _worker_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                preexec_fn=preexec,
                env=_worker_env(),
            )
        proc.cgroup = group  # type: ignore[attr-defined]
        proc.watch = Watch(group.watch_dirs() if group else ())  # type: ignore[attr-defined]
        proc.err_path = err_path  # type: ignore[attr-defined]
        try:
            assert proc.stdin is not None
            proc.stdin.write(dump_job(job).encode())
            proc.stdin.close()
        except BaseException:
            # Interrupted while handing over the job: the caller never gets this worker, so it
            # is stopped here, before the caller removes the lab directory the worker writes in.
            _stop(proc)
            raise
        return proc

    def _cgroup(self, proxies: int) -> LabCgroup | None:
        """A new cgroup for a lab worker of *proxies* proxies, or ``None`` (said once per
        process, with what that leaves open) where this host cannot make one."""
        global _warned_no_cgroup
        group = LabCgroup.create(limits.for_proxies(proxies)) if self.lab_limits else None
        if group is None and self.lab_limits and not _warned_no_cgroup:
            _warned_no_cgroup = True
            _, why = limits.support()
            print(
                f"trustlab: warning: labs run without a cgroup of their own ({why}); {limits.OPEN_WITHOUT}",
                file=sys.stderr,
            )
        return group

    def _collect(
        self,
        workers: list[subprocess.Popen[bytes]],
        identities: Callable[[str], tuple[str, ...]],
        on_proxy: OnProxy | None,
    ) -> Iterator[CellEvent]:
        """Every worker's cells as they come (one reader per worker); a worker that ends without
        ``done`` is a :class:`LabError` with its own last words."""
        sel = selectors.DefaultSelector()
        readers: dict[int, EventReader] = {}
        for proc in workers:
            assert proc.stdout is not None
            sel.register(proc.stdout, selectors.EVENT_READ, proc)
            readers[proc.pid] = EventReader(identities, on_proxy, where=self.name)
        open_count = len(workers)
        while open_count:
            for key, _ in sel.select():
                proc = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_count -= 1
                    if proc.wait() != 0 and not readers[proc.pid].done:
                        raise _worker_failure(proc)
                    continue
                yield from readers[proc.pid].chunk(chunk)


def _worker_command() -> list[str]:
    """The lab worker's command: ``unshare`` into new net, mount and pid namespaces.

    --pid: the worker is the init of its own pid namespace, so when it ends, by any signal, the
    kernel ends every process below it: also a sandbox whose bubblewrap was killed while it was
    still starting (before its --die-with-parent took hold)."""
    flags, _ = namespace_mode()
    namespaces = ["--net", "--mount", "--pid", "--mount-proc", "--propagation", "private"]
    return [
        *_bounded_caps(),
        "unshare",
        *flags,
        *namespaces,
        "--fork",
        "--kill-child",
        sys.executable,
        "-m",
        "harness.runtimes.nsworker",
    ]


def _worker_env() -> dict[str, str]:
    """An explicit environment, never the caller's: the worker is root and reads what proxies
    write, so it holds no secret a proxy could trick it into printing."""
    here = str(Path(__file__).resolve().parents[2])
    return worker_environment(os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def prepared_hosts(hosts: dict[str, str], backend_ip: str) -> str:
    """The hosts file of a prepared lab (``trustlab check``), the same on every runtime."""
    # The lab's own names only where the config does not use them: a config whose upstream is
    # backend-api.internal got it twice (the lab's address and its own), and nginx
    # round-robined between them (legit became error, then "no live upstreams").
    own = " ".join(n for n in (BACKEND_NAME, SIBLING_NAME) if n not in hosts)
    lines = ["127.0.0.1 localhost"] + ([f"{backend_ip} {own}"] if own else [])
    lines += [f"{ip} {name}" for name, ip in hosts.items()]
    return "\n".join(lines) + "\n"


def _pki_files(pki_dir: Path) -> tuple[list[Path], list[Path]]:
    """What a rendered scenario's proxy may read of the lab PKI: the top-level files (CA files,
    CRLs, the proxy's client certificate and keys), never the seat's (``identities/``,
    ``default-site.*``); and the private keys among them (0600), which it gets copies of."""
    files = (
        [f for f in sorted(pki_dir.iterdir()) if f.is_file() and not f.name.startswith("default-site")]
        if pki_dir.is_dir()
        else []
    )
    return files, [f for f in files if f.stat().st_mode & 0o077 == 0]


#: What a lab worker running as host root keeps of root's capabilities (its bounding set, for
#: it and everything it starts; the proxies drop all of them in the sandbox). Each is used:
#: sys_admin (namespaces, mounts, bubblewrap), net_admin (the loopback's addresses), setuid,
#: setgid and setpcap (a fresh uid per proxy: bubblewrap, setpriv), chown and fowner (handing a
#: run directory and key copies to that uid), dac_override and dac_read_search (the lab's 0600
#: keys and 0700 directories, the run directories the proxies own), kill (stopping proxies of
#: other uids), net_bind_service (the seat on 443), sys_chroot (bubblewrap's new root). Gone:
#: modules, raw I/O, ptrace, time, reboot, mknod, audit, BPF, perf, nice, resource, ...
WORKER_CAPS = (
    "sys_admin",
    "net_admin",
    "setuid",
    "setgid",
    "setpcap",
    "chown",
    "fowner",
    "dac_override",
    "dac_read_search",
    "kill",
    "net_bind_service",
    "sys_chroot",
)


def _bounded_caps() -> list[str]:
    """``setpriv`` that leaves the worker only :data:`WORKER_CAPS` (as host root; a worker in a
    user namespace has no capability outside it anyway)."""
    if not sandbox_host_root() or not shutil.which("setpriv"):
        return []
    return ["setpriv", "--bounding-set=-all," + ",".join(f"+{c}" for c in WORKER_CAPS), "--"]


def _worker_failure(proc: subprocess.Popen[bytes]) -> LabError:
    try:
        text = Path(proc.err_path).read_text(errors="replace").strip()  # type: ignore[attr-defined]
    except OSError:
        text = ""
    last = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
    hit = proc.watch.hit() if hasattr(proc, "watch") else None
    if hit:  # the lab's OOM kill or a refused fork ended it, not what it said last
        return LabError(f"local lab worker failed: {hit} ({last})")
    if "unshare" in last and ("Operation not permitted" in last or "Permission denied" in last):
        return PrerequisiteError(f"local runtime: {last}; run `trustlab doctor` for what to do")
    return LabError(f"local lab worker failed: {last}")


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop lab workers together: every one is signalled before any is waited for."""
    for proc in procs:
        _signal_worker(proc)
    for proc in procs:
        _stop(proc)


def _signal_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        for child in _children(proc.pid):
            try:
                os.kill(child, signal.SIGTERM)
            except OSError:
                pass


def _stop(proc: subprocess.Popen[bytes], *, close: bool = True) -> None:
    """Stop one lab worker at once. ``unshare --fork`` ignores SIGTERM (it only waits for its
    child), so the worker under it is signalled directly: it stops its proxies and exits, and
    unshare exits with it. SIGKILL to unshare is the fallback (``--kill-child`` takes the
    worker along, and the worker's proxies die with it: ``PR_SET_PDEATHSIG``)."""
    if proc.poll() is None:
        _signal_worker(proc)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    group = getattr(proc, "cgroup", None)
    if group is not None and proc.poll() is not None:
        group.close()  # whatever is left in the lab's cgroup, then the cgroup itself
    if proc.stdout and close:
        try:
            proc.stdout.close()
        except OSError:
            pass


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]
