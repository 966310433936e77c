"""The docker runtime: the lab image's proxies in hardened containers (all through the docker
SDK, nothing published on the host, nothing pulled).

A **matrix lab** is one hardened container with **no network** (``network_mode="none"``): its
address is :data:`QUIET_LAB_IP` (``127.0.0.10``, on its own loopback already: no capability needed)
and the backend's names (``backend-api.internal``, ``other-svc.internal``, a scenario's own) point
there in its hosts file (``extra_hosts``). Its worker runs the backend seat in its own process,
the proxies (one process per variant) and the cells one at a time, exactly like the local
runtime's namespace worker (:mod:`harness.runtimes.nsworker`), streaming one JSON line per cell
to the host; the ``ip-san`` identity names that address, so the PKI is minted for it. Measured on
the default matrix (1558 cells, 2 cores): a seat in a container of its own, driven over a control
port, made the docker matrix 1.84x the local one's time; the seat in the worker on a docker
network, 1.35x, of which 2-4 s a lab went to its removal after a Squid served through it (the
daemon, between the container's end and its network's release); with no network, 38 ms and
1.11x. ``trustlab check``'s lab has no network either (:class:`SoloLab`: any address a config
names goes on its loopback, which needs root for a moment).

A **held lab** (``trustlab up``) and the ``per-variant`` layout keep a docker network:

* an **internal network** (``internal=True``: no egress, no route to or from the host's
  interfaces) on a free ``10.204.N.0/24``, chosen by inspecting the existing networks so two
  labs at once never collide;
* a **volume** holding the harness code, the lab's PKI (keys 0600 in 0700 directories, root only),
  the rendered configs and the job; it is filled once with ``put_archive`` and shared by the
  lab's containers;
* the **worker** container at the fixed lab IP ``10.204.N.10`` with the network aliases of the
  backend's names, its seat in its own process (``per-variant``: the seat's own container at that
  address, driven over its control port, and one container per proxy).

Every container, network and volume carries ``trustlab.lab=<lab id>`` and ``trustlab.owner=
<host>:<pid>:<process start>``. Leaving the ``with`` block removes them (also on errors and
Ctrl-C); a lab whose owner was killed (SIGKILL, power loss) is swept when the next lab starts,
and :func:`down` removes leftovers on demand.

Layout, measured (2 cores, Debian 12, docker 20.10, 25 scenarios x 10 identities = 250 cells,
``python benchmarks/bench_docker.py --layouts``, medians of two benchmark runs; the naive
baseline is 127-173x slower than ``shared``):

=================  ==================================================  ===================
layout             what runs where                                     full matrix, median
=================  ==================================================  ===================
``shared``         worker (seat and every proxy process in it)          1.6-2.1 s
``per-variant``    seat + worker + one container per proxy (25)         7.8-8.9 s
naive baseline     a whole fresh lab (network, seat, proxy, worker)     ~265 s (1.05 s/cell,
                   for every cell                                       20 cells extrapolated)
=================  ==================================================  ===================

``shared`` is the default. A container costs ~0.15-0.2 s to create and start here (25 of them,
8 at a time, ~4-5 s), a proxy process 10-200 ms, and the cells cost the same (~1 s for 250) in
both layouts. It keeps the rule that matters: one proxy *process* per variant, so no TLS
session cache is shared between variants. Both layouts give the same outcomes (tested).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import random
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import processes as _process
from harness.errors import LabError, PrerequisiteError
from harness.pki import BUNDLE_FILE, CA_FILE, LabPKI
from harness.proxies import Installation, RenderContext, driver
from harness.runtimes import images, sandbox
from harness.runtimes.base import (
    ConfigJob,
    EventReader,
    Held,
    Job,
    OnProxy,
    PreparedProxy,
    ScenarioJob,
    refuse_unstarted,
)
from harness.runtimes.contract import CellEvent, CellSpec, HoldSpec, ProxyEvent, ProxySpec, WorkerJob, dump_job
from harness.runtimes.contract import interleaved as contract_interleaved
from harness.runtimes.limits import LabLimits, for_proxies
from harness.runtimes.local import lab_deadline, prepared_hosts
from harness.scenarios import Scenario
from harness.vocab import BACKEND_NAME, BACKEND_PORT, SIBLING_NAME, ProxyKind

LABEL_LAB = "trustlab.lab"
LABEL_OWNER = "trustlab.owner"
#: The classroom attendee a lab runs for (set by the lab service, harness.course.hub.grader).
LABEL_ATTENDEE = "trustlab.attendee"
LABEL_ROLE = "trustlab.role"
SUBNET_POOL = ipaddress.ip_network("10.204.0.0/16")
SEAT_HOST = 10
CONTROL_PORT = 9000
#: A lab with no network (:class:`Lab` ``network=False``): its address, on each container's own
#: loopback (every 127/8 address is there already: no capability needed to put it there).
QUIET_LAB_IP = "127.0.0.10"
FIRST_PORT = 20000
LAYOUTS = ("shared", "per-variant")
DEFAULT_LAYOUT = "shared"
IN_LAB = Path("/lab")
#: Proxies a matrix's worker container starts at a time (``WorkerJob.start_batch``). All 150 of the
#: default matrix at once, on 2 cores at load ~29, left 497 cells ``error``: the last proxies
#: were not ready within the one start deadline the lab shared. A batch starts while the one
#: before runs its cells; each proxy has its own deadline from its own start.
START_BATCH = 20


@dataclass(frozen=True)
class Plan:
    """One proxy process of a lab, with its paths as the containers see them."""

    scenario: Scenario
    name: str
    run_dir: str
    listen_port: int
    host: str
    #: Which installation runs it (``trustlab proxies list``); ``None``: the kind's default.
    inst: Installation | None = None


def interleaved(plans: list[Plan]) -> list[Plan]:
    """*plans* with their kinds taken in turn (:func:`harness.runtimes.contract.interleaved`)."""
    return contract_interleaved(plans, lambda p: p.scenario.proxy.value)


# -- ownership and sweeping ----------------------------------------------------------------
def _start_ticks(pid: int) -> str:
    return _process.start_ticks(pid)


def _here() -> str:
    """Where a pid means a process: this host *and* its pid namespace (``vm/4026531836``).

    Processes in other pid namespaces (other containers or sandboxes on this host, with the same
    hostname and the same docker daemon) see other pids: they must never judge each other's
    labs dead."""
    return f"{socket.gethostname()}/{_process.pid_namespace()}"


def owner_tag(pid: int | None = None) -> str:
    """``host/pidns:pid:start``: who owns a lab (the start time guards against pid reuse)."""
    pid = pid or os.getpid()
    return f"{_here()}:{pid}:{_start_ticks(pid)}"


def owner_alive(owner: str) -> bool:
    """False only when *owner* is a process of this host and pid namespace that is gone."""
    where, _, rest = owner.partition(":")
    pid_s, _, ticks = rest.partition(":")
    if where != _here() or not pid_s.isdigit():
        return True  # another host, container or pid namespace (or an older tag): not ours to judge
    pid = int(pid_s)
    if not _process.alive(pid):
        return False
    return ticks in ("", "?") or _start_ticks(pid) == ticks


def leftovers(c: Any | None = None) -> dict[str, dict[str, Any]]:
    """Every labelled lab object, grouped by lab id: ``{id: {"owner", "containers", ...}}``."""
    c = c or images.client()
    flt = {"label": LABEL_LAB}
    labs: dict[str, dict[str, Any]] = {}

    def slot(labels: dict[str, str]) -> dict[str, Any]:
        lab = labs.setdefault(labels[LABEL_LAB], {"owner": "", "containers": [], "networks": [], "volumes": []})
        lab["owner"] = lab["owner"] or labels.get(LABEL_OWNER, "")
        return lab

    for ct in c.containers.list(all=True, filters=flt, sparse=True):
        slot(ct.attrs.get("Labels") or {})["containers"].append(ct)
    for net in c.networks.list(filters=flt):
        slot(net.attrs.get("Labels") or {})["networks"].append(net)
    for vol in c.volumes.list(filters=flt):
        slot(vol.attrs.get("Labels") or {})["volumes"].append(vol)
    return labs


def down(*, all_labs: bool = False, client: Any | None = None) -> list[str]:
    """Remove labelled lab leftovers; return the lab ids removed.

    Args:
        all_labs: remove every trustlab lab, running or not; by default only labs whose
            owning process is gone.
    """
    c = client or images.client()
    removed = []
    for lab_id, lab in sorted(leftovers(c).items()):
        if all_labs or not owner_alive(lab["owner"]):
            _remove_listed(c, lab_id, lab)
            removed.append(lab_id)
    return removed


def _remove_listed(c: Any, lab_id: str, lab: dict[str, Any]) -> None:
    """Remove a lab as listed; when the daemon refuses (a container another process is removing
    still holds the volume, or one created as the owner died was not listed yet), list it again
    by its label and retry, as :meth:`Lab.close` does."""
    import docker.errors

    try:
        _remove(c, lab["containers"], lab["networks"], lab["volumes"])
    except docker.errors.APIError:
        time.sleep(0.2)
        remove_by_label(c, lab_id)


def remove_by_label(c: Any, lab_id: str) -> None:
    """Remove everything labelled with *lab_id*, listing again after a refusal (three tries)."""
    import docker.errors

    flt = {"label": f"{LABEL_LAB}={lab_id}"}
    for attempt in range(3):
        try:
            _remove(
                c,
                c.containers.list(all=True, filters=flt, sparse=True),
                c.networks.list(filters=flt),
                c.volumes.list(filters=flt),
            )
            return
        except docker.errors.APIError:
            # A container created (or being removed) a moment ago still holds the volume.
            if attempt == 2:
                raise
            time.sleep(0.2)


def down_owned_by(hostname: str, *, client: Any | None = None) -> list[str]:
    """Remove every lab started from the container (or host) called *hostname*; return their ids.

    For the classroom container: once it is gone, so is every process that owned its labs."""
    c = client or images.client()
    removed = []
    for lab_id, lab in sorted(leftovers(c).items()):
        if lab["owner"].split(":", 1)[0].split("/", 1)[0] == hostname:
            _remove_listed(c, lab_id, lab)
            removed.append(lab_id)
    return removed


def remove_lab(lab_id: str, *, client: Any | None = None) -> bool:
    """Remove one lab's containers, network and volume (by its label); True when any existed.

    ``trustlab down LAB`` calls it for a docker lab whose holder was killed: nothing else
    would remove what that holder started."""
    c = client or images.client()
    flt = {"label": f"{LABEL_LAB}={lab_id}"}
    found = (
        c.containers.list(all=True, filters=flt, sparse=True),
        c.networks.list(filters=flt),
        c.volumes.list(filters=flt),
    )
    _remove(c, *found)
    return any(found)


def sweep_all_if_reachable() -> list[str]:
    """``down --all`` for the docker runtime: the leftovers of killed runs (labs whose owning
    process is gone), or nothing when the docker runtime cannot be here.

    Never a lab whose owner still runs: a daemon may be shared (another user's check, a test
    suite, a classroom server), and ``down --all`` removed those too (a running check's
    container vanished mid-run). Without the docker SDK, or with no daemon, no docker lab can
    exist for this install to remove: that is not an error for a command that only cleans up."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return []
    try:
        c = images.client(timeout=10)
    except PrerequisiteError:
        return []
    return down(all_labs=False, client=c)


def _remove(c: Any, containers: list[Any], networks: list[Any], volumes: list[Any]) -> None:
    import docker.errors

    def rm(obj: Any, **kw: Any) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            try:
                obj.remove(**kw)
            except docker.errors.APIError as exc:
                if "removal of container" not in str(exc) and "is already in progress" not in str(exc):
                    raise

    if containers:
        with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
            list(pool.map(lambda ct: rm(ct, force=True, v=True), containers))
    for net in networks:
        rm(net)
    for vol in volumes:
        rm(vol, force=True)


# -- one lab -------------------------------------------------------------------------------
def _names_lab_ip(sc: Scenario) -> bool:
    """Whether *sc*'s config names the lab's backend address (an IP target, ``{backend_ip}``)."""
    return sc.target == "ip" or any("{backend_ip}" in str(v) for v in vars(sc).values())


class Lab:
    """A lab's network, volume and containers; a context manager that removes them all."""

    def __init__(
        self,
        c: Any,
        lab_id: str,
        *,
        hardened: bool = True,
        image: str | None = None,
        labels: dict[str, str] | None = None,
        network: bool = True,
    ) -> None:
        self.c = c
        self.id = lab_id
        #: False: its containers have no network at all (``network_mode="none"``); the lab's
        #: address is :data:`QUIET_LAB_IP` on each one's loopback, its names in its hosts file.
        self.networked = network
        #: The image its containers run (:meth:`DockerRuntime.image_for`; default: the lab image).
        self.image = image or images.lab_image()
        #: False only in the payload tests, to show what a payload does in a default container.
        self.hardened = hardened
        # *labels*: the classroom's lab service names the attendee a lab runs for (LABEL_ATTENDEE).
        self.labels = {**(labels or {}), LABEL_LAB: lab_id, LABEL_OWNER: owner_tag()}
        self.network: Any = None
        self.volume: Any = None
        self.containers: list[Any] = []
        self.subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self._lock = threading.Lock()
        #: The sockets attached to each container's stdin (:mod:`harness.runtimes.tether`):
        #: held open while this process lives; closed by the kernel when it dies (SIGKILL too),
        #: and the containers stop by themselves.
        self._tethers: list[Any] = []

    def __enter__(self) -> Lab:
        try:
            down(all_labs=False, client=self.c)  # sweep labs whose owner died
            self.network = self._create_network() if self.networked else None
            self.volume = self.c.volumes.create(name=f"{self.id}-lab", labels=self.labels)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove everything labelled with this lab's id, including objects whose create call
        was interrupted before it returned (so they were never tracked here)."""
        remove_by_label(self.c, self.id)
        self.containers, self.network, self.volume = [], None, None
        with self._lock:
            tethers, self._tethers = self._tethers, []
        for sock in tethers:
            # The SDK hands back the response's SocketIO; the socket under it is closed too.
            for end in (sock, getattr(sock, "_sock", sock)):
                with contextlib.suppress(OSError):
                    end.close()

    def tether(self, ct: Any) -> None:
        """Hold *ct*'s stdin open from this process (before it starts): when this process ends,
        however it ends, the container's :mod:`~harness.runtimes.tether` sees EOF and stops it."""
        sock = self.c.api.attach_socket(ct.id, params={"stdin": 1, "stream": 1})
        with self._lock:
            self._tethers.append(sock)

    @property
    def seat_ip(self) -> str:
        if not self.networked:
            return QUIET_LAB_IP
        assert self.subnet is not None
        return str(self.subnet.network_address + SEAT_HOST)

    def _create_network(self) -> Any:
        import docker.errors
        import docker.types

        # Subnets the daemon refused: another lab is creating them.
        taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for _attempt in range(16):
            used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(taken)
            for net in self.c.networks.list():
                for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
            free = [s for s in SUBNET_POOL.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used)]
            if not free:
                raise LabError(f"docker runtime: no free /24 left in {SUBNET_POOL}; run `trustlab down --all`")
            subnet = free[0]
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
            try:
                net = self.c.networks.create(
                    f"{self.id}-net",
                    driver="bridge",
                    internal=True,
                    ipam=ipam,
                    labels=self.labels,
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():
                    # Another lab reserved it between our look and our create; its network may
                    # not be listed yet, so remember the refusal.
                    taken.append(subnet)
                    continue
                raise
            self.subnet = subnet
            return net
        raise LabError("docker runtime: could not reserve a lab subnet (too many labs starting at once?)")

    def create(
        self,
        role: str,
        command: list[str] | None,
        *,
        ip: str | None = None,
        aliases: list[str] | None = None,
        limits: LabLimits | None = None,
    ) -> Any:
        """Create (not start) one container of this lab on its network with its volume, tied to
        this process (:meth:`tether`); *limits*: its memory and process limits, when not the
        default ones (:data:`harness.runtimes.sandbox.CONTAINER_OPTIONS`)."""
        import docker.types

        if self.networked:
            endpoint = self.c.api.create_endpoint_config(ipv4_address=ip, aliases=aliases)
            net: dict[str, Any] = {
                "hostname": role,
                "network": self.network.name,
                "networking_config": {self.network.name: endpoint},
            }
        else:  # the names in its hosts file, for the address its worker's seat holds on its loopback
            net = {"hostname": role, "network_mode": "none", "extra_hosts": {a: ip for a in aliases or ()}}
        ct = self.c.containers.create(
            self.image,
            tethered(command or WORKER_COMMAND),
            # detach=False with stdin_open is how the SDK sets StdinOnce: the container's stdin
            # closes when the attached owner goes (nothing else of "attached" applies to create).
            stdin_open=True,
            name=f"{self.id}-{role}",
            labels={**self.labels, LABEL_ROLE: role},
            **net,
            # no_copy: the volume's root is not a copy of the image's /lab (root's, 0700); what
            # the lab user needs is in the archive, owned by it (see DockerRuntime._archive).
            mounts=[docker.types.Mount(str(IN_LAB), self.volume.name, type="volume", no_copy=True)],
            init=True,
            detach=False,
            **{**container_security(self.hardened), **sized(limits)},
        )
        with self._lock:
            self.containers.append(ct)
        self.tether(ct)
        return ct


#: The lab image's default command: the lab worker.
WORKER_COMMAND = ["python3", "-m", "harness.runtimes.dockerworker", "/lab/job.json"]


def tethered(command: list[str]) -> list[str]:
    """*command*, run under :mod:`harness.runtimes.tether` (it stops when its owner is gone)."""
    return ["python3", "-m", "harness.runtimes.tether", *command]


def sized(limits: LabLimits | None) -> dict[str, Any]:
    """The docker options of a container held to *limits* (none: the defaults stay)."""
    if limits is None:
        return {}
    return {
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,
        "pids_limit": limits.pids,
        "cpu_shares": limits.cpu_weight * 1024 // 100,
    }


def container_security(hardened: bool = True) -> dict[str, Any]:
    """The docker SDK options that make every lab container a sandbox (:mod:`harness.runtimes.sandbox`):
    a non-root user, no capability, ``no-new-privileges``, a read-only root file system with a
    small ``/tmp``, pids and memory limits, no core dumps. The lab volume is a docker volume,
    never a host directory, and the network is internal."""
    if not hardened:
        return {}
    import docker.types

    opts = dict(sandbox.CONTAINER_OPTIONS)
    opts["ulimits"] = [docker.types.Ulimit(name="core", soft=0, hard=0)]
    return opts


def _solo_security() -> dict[str, Any]:
    import docker.types

    opts = {k: v for k, v in sandbox.CONTAINER_OPTIONS.items() if k not in ("user", "read_only", "tmpfs")}
    # The worker starts as root for two steps only (NET_ADMIN: the loopback addresses; then it
    # chowns the lab to the lab user: CHOWN, FOWNER, DAC_OVERRIDE) and drops to that user with
    # SETUID/SETGID before any seat or proxy starts (_dockerworker.drop_to_lab_user): the proxies
    # run with no capability at all.
    opts["cap_add"] = ["NET_ADMIN", "CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
    opts["ulimits"] = [docker.types.Ulimit(name="core", soft=0, hard=0)]
    return opts


class SoloLab(Lab):
    """A lab of one container and no network at all (``trustlab check``).

    The container has only its own loopback (``network_mode="none"``): the seats, the proxy
    and the client all live in it, as in a local lab's namespace, so a user's config may name
    any host or IP. Each address is put on that loopback, which needs ``NET_ADMIN`` in the
    container's own network namespace (nothing else: it has no interface to reach anything
    through). Leaving the ``with`` block removes the container, as for :class:`Lab`.
    """

    def __enter__(self) -> SoloLab:
        import docker.errors

        try:
            down(all_labs=False, client=self.c)  # sweep labs whose owner died
        except docker.errors.APIError:
            pass  # a dead lab someone else is removing at this moment: theirs to finish
        except BaseException:
            self.close()
            raise
        return self

    def create_solo(self, role: str, command: list[str], *, limits: LabLimits | None = None) -> Any:
        """Create (not start) the lab's one container, with no network, tied to this process
        (:meth:`Lab.tether`) and held to *limits* (the lab's: :func:`harness.runtimes.limits.for_proxies`)."""
        ct = self.c.containers.create(
            self.image,
            tethered(command),
            # detach=False with stdin_open is how the SDK sets StdinOnce: the container's stdin
            # closes when the attached owner goes (nothing else of "attached" applies to create).
            stdin_open=True,
            name=f"{self.id}-{role}",
            hostname=role,
            labels={**self.labels, LABEL_ROLE: role},
            network_mode="none",
            # Starts as root with a few capabilities (_solo_security) in a network namespace with
            # nothing to reach, and drops to the lab user before anything untrusted runs; the rest
            # of the lab's hardening applies except the read-only root (the archive is put into
            # the image's /lab).
            **{**_solo_security(), **sized(limits)},
            # IPv6 on the loopback (::1 and IPv6 targets), as in a fresh network namespace;
            # docker turns it off in containers.
            # Any port is bindable once the worker has dropped to the lab user (a user's config
            # may listen on 80 and name a backend on 443); this sysctl is the container's own.
            sysctls={
                "net.ipv6.conf.all.disable_ipv6": "0",
                "net.ipv6.conf.lo.disable_ipv6": "0",
                "net.ipv4.ip_unprivileged_port_start": "0",
            },
            init=True,
            detach=False,
        )
        with self._lock:
            self.containers.append(ct)
        self.tether(ct)
        return ct


# -- the runtime -----------------------------------------------------------------------------
class DockerRuntime:
    """Runs labs in containers of the lab image; same interface and results as LocalRuntime."""

    name = "docker"

    def __init__(
        self, *, layout: str = DEFAULT_LAYOUT, sandbox: bool = True, labels: dict[str, str] | None = None
    ) -> None:
        if layout not in LAYOUTS:
            raise LabError(f"docker layout: {layout!r} is unknown; choose {', '.join(LAYOUTS)}")
        self.layout = layout
        #: False: the payload tests' opt-out (root, default capabilities, writable root); never
        #: offered on the command line.
        self.sandbox = sandbox
        #: Labels every lab of this runtime carries beside its own (the lab service's attendee).
        self.labels = dict(labels or {})
        self._client: Any = None
        #: Each image's ``trustlab.proxies`` label (None: no such image), read once (:meth:`records`).
        self._records: dict[str, list[dict[str, str]] | None] = {}
        #: Seconds per step of the last run (network, volume, containers ...), for benchmarks.
        self.timings: dict[str, float] = {}
        #: The labs running now (``check`` runs several, in threads): :meth:`stop` removes them.
        self._labs: set[Lab] = set()
        self._stopping = False
        #: Where the last scenario run's first lab's seat answered (``Results.meta["backend_ip"]``).
        self.backend_ip: str | None = None

    def stop(self) -> None:
        """Remove every lab this runtime runs now, at once (``trustlab check`` on SIGTERM or
        Ctrl-C, from the main thread while other threads follow the labs' workers): their log
        streams end, so those threads end too, instead of waiting out a hung worker's deadline.
        No new lab starts afterwards."""
        self._stopping = True
        labs = list(self._labs)
        if labs:
            with ThreadPoolExecutor(max_workers=min(8, len(labs))) as pool:
                list(pool.map(lambda lab: _quietly(lab.close), labs))

    @contextlib.contextmanager
    def _running(self, lab: Lab) -> Iterator[Lab]:
        if self._stopping:
            raise KeyboardInterrupt
        self._labs.add(lab)
        try:
            yield lab
        finally:
            self._labs.discard(lab)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = images.client()
        return self._client

    def preflight(self, kinds: set[str]) -> None:
        c = self.client  # raises PrerequisiteError with what to do
        if images.get(c, images.lab_image()) is None:
            raise PrerequisiteError(
                f"docker runtime: image {images.lab_image()} is missing; run: trustlab images build "
                "(or trustlab images load FILE.tar)"
            )

    def versions(self) -> dict[str, str]:
        return images.image_versions(self.client)

    def installations(self, kind: str) -> list[Installation]:
        """What the lab images carry of *kind* (their ``trustlab.proxies`` labels), the default
        first: the versions image's when it is built, else the lab image's (what this host has
        beyond those: :meth:`lacking`). For an older image without that label, its one binary at
        the version its label records."""
        drv = driver(kind)
        records = self.carried()
        carried = [i for i in images.image_installations(records) if i.kind is drv.kind and i.binary]
        if carried:
            # The default first: the one at the driver's image path (as on the host).
            return sorted(carried, key=lambda i: i.binary != drv.image_binary)
        versions = self.versions()  # an image built before the trustlab.proxies label
        if not drv.image_binary or not versions.get(kind):
            return []
        tls = f"OpenSSL {versions['openssl']}" if versions.get("openssl") else ""
        return [Installation(drv.kind, versions[kind], drv.image_binary, "image", tls)]

    def lacking(self, kinds: Iterable[str], matches: Callable[[str, str], bool] = lambda k, v: True) -> str:
        """One line when this host has installations of *kinds* (those ``matches(kind, version)``
        accepts) that no image here carries: the image that would carry them, what it lacks, the
        command that builds it (``""`` when nothing is lacking). :func:`harness.runner.plan_targets`
        asks it when a ``--proxy kind@version`` or ``--all-versions`` run wants more than it has."""
        carried = {(r.get("kind"), r.get("version")) for r in self.carried()}
        wanted = set(kinds)
        _, extras = images.split_plan(images.image_plan())
        what = [
            f"{e.kind} {e.version}"
            for e in extras
            if e.kind in wanted and matches(e.kind, e.version) and (e.kind, e.version) not in carried
        ]
        if not what:
            return ""
        ref, lab = images.versions_image(), images.lab_image()
        if self.records(ref) is None:
            return (
                f"docker runtime: image {ref} is missing ({lab} lacks {', '.join(what)}); run: {images.VERSIONS_BUILD}"
            )
        return f"docker runtime: image {ref} lacks {', '.join(what)}; run: {images.VERSIONS_BUILD}"

    def records(self, ref: str) -> list[dict[str, str]] | None:
        """Image *ref*'s ``trustlab.proxies`` label (None: no such image), read once."""
        if ref not in self._records:
            self._records[ref] = images.carried_by(self.client, ref)
        return self._records[ref]

    def image_for(self, insts: Any) -> str:
        """The image a run of *insts* (installations, None for a kind's default) starts: the lab
        image when it has them all, else the versions image; a :class:`PrerequisiteError` naming
        the image that is missing or lacks one, what it lacks, and the command that builds it."""
        lab = images.lab_image()
        # A kind's default (at its driver's image path) is the lab image's, label or not (an
        # image built by hand from labs/docker/Dockerfile has none).
        need = [
            i for i in insts if i is not None and not (i.source == "image" and i.binary == driver(i.kind).image_binary)
        ]
        if all(images.carries(self.records(lab) or [], i) for i in need):
            return lab
        ref = images.versions_image()
        records = self.records(ref)
        lacking = [i for i in need if records is None or not images.carries(records, i)]
        what = ", ".join(dict.fromkeys(f"{i.kind.value} {i.version}" for i in lacking))
        if records is None:
            raise PrerequisiteError(
                f"docker runtime: image {ref} is missing ({lab} lacks {what}); run: {images.VERSIONS_BUILD}"
            )
        if lacking:
            raise PrerequisiteError(
                f"docker runtime: image {ref} lacks {what}; run: trustlab proxies install, then {images.VERSIONS_BUILD}"
            )
        return ref

    def facts(self) -> dict[str, Any]:
        return {"backend_ip": self.backend_ip}

    def run(self, job: Job, *, lab_dir: Path, on_proxy: OnProxy | None = None) -> Iterator[CellEvent]:
        """Yield one cell event per cell of *job*, in completion order.

        A scenario job runs in *shards* labs side by side (default: one per core, as the local
        runtime's workers), each its own network, seat and worker: a lab has one seat, which
        attributes connections to a cell by order, so a lab runs its cells one at a time. A
        config job runs in one container with no network (:class:`SoloLab`)."""
        if isinstance(job, ConfigJob):
            return self._run_configs(job, lab_dir, on_proxy)
        return self._run_scenarios(job, lab_dir, on_proxy)

    def _run_scenarios(self, job: ScenarioJob, lab_dir: Path, on_proxy: OnProxy | None) -> Iterator[CellEvent]:
        scenarios = list(job.scenarios)
        n = max(1, min(job.shards or os.cpu_count() or 1, len(scenarios)))
        if n == 1:
            self.timings = {}
            yield from self._run_lab(scenarios, job, lab_dir=lab_dir, on_proxy=on_proxy, timings=self.timings)
            return
        # Kinds spread evenly, as the local runtime's shards; each lab in its own directory. Each
        # lab's seat has its own address, and a run reports one (meta backend_ip, which reasons of
        # IP targets name): every scenario that names the lab's address runs in the first lab.
        ordered = sorted(scenarios, key=lambda sc: (sc.proxy.value, sc.id))
        rest = [sc for sc in ordered if not _names_lab_ip(sc)]
        groups = [rest[i::n] for i in range(n)]
        groups[0] = [sc for sc in ordered if _names_lab_ip(sc)] + groups[0]
        yield from self._run_labs(groups, job, lab_dir=lab_dir, on_proxy=on_proxy)

    def _run_labs(
        self, groups: list[list[Scenario]], job: ScenarioJob, *, lab_dir: Path, on_proxy: OnProxy | None
    ) -> Iterator[CellEvent]:
        """One lab per group, each followed by a thread; their events come out here, in this
        thread (*on_proxy* is called here too). Ctrl-C or an error removes every lab at once."""
        import queue

        events: queue.Queue[tuple[int, Any]] = queue.Queue()
        timings: list[dict[str, float]] = [{} for _ in groups]

        def follow(i: int, group: list[Scenario]) -> None:
            try:
                sub = lab_dir / f"{lab_dir.name}-{i}"
                sub.mkdir(exist_ok=True)
                for cell in self._run_lab(
                    group, job, lab_dir=sub, on_proxy=lambda e: events.put((i, e)), timings=timings[i], primary=i == 0
                ):
                    events.put((i, cell))
                events.put((i, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                events.put((i, exc))

        self.timings = {}
        threads = [threading.Thread(target=follow, args=(i, g), daemon=True) for i, g in enumerate(groups)]
        for th in threads:
            th.start()
        running = len(threads)
        try:
            while running:
                _, item = events.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                elif isinstance(item, ProxyEvent):
                    if on_proxy:
                        on_proxy(item)
                else:
                    yield item
        finally:
            if running:
                self.stop()  # the other labs end now, not after their cells
                self._stopping = False
            for th in threads:
                th.join(timeout=60)
            started = self.timings.get("proxy_start_max_s")  # _follow's, from every lab
            self.timings = {k: max(t.get(k, 0.0) for t in timings) for t0 in timings for k in t0}
            if started is not None:
                self.timings["proxy_start_max_s"] = started

    def _run_lab(
        self,
        scenarios: list[Scenario],
        job: ScenarioJob,
        *,
        lab_dir: Path,
        on_proxy: OnProxy | None,
        timings: dict[str, float],
        primary: bool = True,
    ) -> Iterator[CellEvent]:
        """One lab (network, seat, worker) running *scenarios*' cells, with its PKI minted for
        its seat's address."""
        t = time.perf_counter()
        lid = lab_id(lab_dir)
        # Kinds interleaved: each batch of START_BATCH proxies mixes fast and slow starters.
        plans = interleaved(self._plans(scenarios, job.installations))
        image = self.image_for(p.inst for p in plans)
        # The shared layout's lab has no network (a lab on a docker network took 2-4 s to remove
        # after a Squid served through it; 35 ms without one); per-variant containers need one.
        with self._lab(lid, image, network=self.layout != "shared") as lab:
            timings["network_s"] = time.perf_counter() - t
            if primary:  # where the seat answers (Results.meta["backend_ip"]): the first lab's
                self.backend_ip = lab.seat_ip
            pki = job.mint(lab.seat_ip)
            cells = [(p, ident) for p in plans for ident in job.identities_of(p.scenario.id)]
            if job.seed is not None:
                random.Random(job.seed).shuffle(cells)
            archive = self._archive(plans, cells, lab_dir, pki, lab.seat_ip, start_batch=START_BATCH)
            worker = self._launch(lab, plans, archive, timings)
            t = time.perf_counter()
            yield from self._follow(worker, job.identities_of, on_proxy)
            timings["cells_s"] = time.perf_counter() - t

    @contextlib.contextmanager
    def _lab(self, lab_id: str, image: str, *, network: bool = True) -> Iterator[Lab]:
        lab = Lab(self.client, lab_id, hardened=self.sandbox, image=image, labels=self.labels, network=network)
        with lab, self._running(lab):
            yield lab

    @contextlib.contextmanager
    def hold(self, job: Job, *, lab_dir: Path) -> Iterator[Held]:
        """Keep one scenario's lab running (``trustlab up``) until the context exits: the
        worker container, where ``curl`` reaches the proxy on its loopback and
        ``/lab/control.sock`` switches the seat's identity."""
        if isinstance(job, ConfigJob):
            raise LabError("trustlab up --config runs on the local runtime; drop --runtime docker")
        assert job.hold is not None, "a held job names the identity its seat presents"
        (scenario,) = job.scenarios
        plans = self._plans([scenario], job.installations)
        image = self.image_for(p.inst for p in plans)
        with self._lab(lab_id(lab_dir), image) as lab:
            pki = job.mint(lab.seat_ip)
            hold = HoldSpec.of(scenario, job.hold, control=str(IN_LAB / "run" / "control.sock"))
            archive = self._archive(plans, [], lab_dir, pki, lab.seat_ip, hold=hold)
            worker = self._launch(lab, plans, archive, {})
            for _ in self._follow(worker, lambda key: (), refuse_unstarted):
                pass  # to the worker's "done": its one proxy serves (a worker that dies raises)
            drv = driver(scenario.proxy)
            run_dir = Path(plans[0].run_dir)
            yield Held(
                config=str(run_dir / drv.config_name),
                log=str(drv.error_log(run_dir)),
                control=str(IN_LAB / "control.sock"),
                container=worker.name,
                port=plans[0].listen_port,
                lab=lab.id,
                wait=threading.Event().wait,
            )

    def _run_configs(self, job: ConfigJob, lab_dir: Path, on_proxy: OnProxy | None) -> Iterator[CellEvent]:
        """A config job in one container of the lab image with no network (:class:`SoloLab`).

        Every path (configs, run dirs, the PKI) lies under *lab_dir*, which the container sees at
        ``/lab``: configs are rendered with :meth:`lab_path`. The proxies' logs stay in the
        container (removed at the end)."""
        proxies, cells, pki_dir = job.proxies, job.cells, job.pki_dir
        t = time.perf_counter()
        timings = self.timings = {}
        image = self.image_for(p.inst for p in proxies)
        work = WorkerJob(
            mode="prepared",
            pki_dir=str(self.lab_path(lab_dir, pki_dir)),
            backend_ip=job.backend_ip,
            seat_ports=tuple(dict.fromkeys(job.seat_ports or [BACKEND_PORT])),
            seat_host="0.0.0.0",
            addresses=tuple(job.addresses),
            hosts=prepared_hosts(dict(job.hosts), job.backend_ip),
            start_timeout=15,
            proxies=tuple(self._prepared_spec(lab_dir, p, pki_dir) for p in proxies),
            cells=tuple(cells),
            unconfined=not self.sandbox,  # the payload tests' opt-out: the worker stays root
            # The same per-lab deadline as the local runtime's workers (issue 26 item 4).
            deadline_s=lab_deadline(len(cells)),
        )
        archive = _lab_dir_archive(lab_dir, work)
        with SoloLab(self.client, _solo_id(lab_dir), image=image, labels=self.labels) as lab, self._running(lab):
            worker = lab.create_solo("check", WORKER_COMMAND, limits=for_proxies(len(proxies)))
            worker.put_archive(str(IN_LAB), archive)
            worker.start()
            timings["container_s"] = time.perf_counter() - t
            t = time.perf_counter()
            yield from self._follow(worker, lambda key: (), on_proxy)
            timings["cells_s"] = time.perf_counter() - t

    def lab_path(self, lab_dir: Path, path: Path) -> Path:
        """Where the proxies see *path* (a file under *lab_dir*): under ``/lab`` in the container."""
        return IN_LAB / Path(path).relative_to(lab_dir)

    def _prepared_spec(self, lab_dir: Path, p: PreparedProxy, pki_dir: Path) -> ProxySpec:
        drv = driver(p.kind)
        run_dir = self.lab_path(lab_dir, p.run_dir)
        inst = self.in_image(p.kind, p.inst)
        return ProxySpec(
            key=p.key,
            kind=p.kind,
            listen_port=p.listen_port,
            run_dir=str(run_dir),
            log=str(drv.error_log(run_dir)),
            config=str(self.lab_path(lab_dir, p.config)),
            installation=inst,
            env=drv.environment(str(run_dir), str(self.lab_path(lab_dir, pki_dir)), inst),
        )

    def _launch(self, lab: Lab, plans: list[Plan], archive: bytes, timings: dict[str, float]) -> Any:
        """Create and start the lab's containers; return the worker.

        ``shared``: one container, the worker, at the seat's address with the backend's names;
        its seat runs in it (as a local lab's namespace worker's), so a cell's connections stay
        on that container's own address. ``per-variant``: the seat's own container, one per
        proxy, then the worker, which drives the seat over its control port."""
        t = time.perf_counter()
        names = list(dict.fromkeys([BACKEND_NAME, SIBLING_NAME, *(p.scenario.backend for p in plans)]))
        if self.layout == "shared":
            worker = lab.create("worker", None, ip=lab.seat_ip, aliases=names, limits=for_proxies(len(plans)))
            worker.put_archive(str(IN_LAB), archive)
            worker.start()
            timings["worker_s"] = time.perf_counter() - t
            return worker
        seat = lab.create(
            "seat",
            [
                "python3",
                "-m",
                "harness.runtimes.seat",
                "--pki",
                str(IN_LAB / "pki"),
                "--listen",
                f"0.0.0.0:{BACKEND_PORT}",
                "--control",
                f"0.0.0.0:{CONTROL_PORT}",
            ],
            ip=lab.seat_ip,
            aliases=names,
        )
        seat.put_archive(str(IN_LAB), archive)
        seat.start()  # first: a proxy resolves the seat's name when it starts
        timings["seat_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._start_proxy_containers(lab, plans)
        timings["proxy_containers_s"] = time.perf_counter() - t
        t = time.perf_counter()
        worker = lab.create("worker", None)
        worker.start()
        timings["worker_s"] = time.perf_counter() - t
        return worker

    # -- internals ---------------------------------------------------------------------
    def _plans(self, scenarios: list[Scenario], installations: Mapping[str, Installation] | None = None) -> list[Plan]:
        plans = []
        for i, sc in enumerate(scenarios):
            name = sc.id.replace("/", "--")
            host = "127.0.0.1" if self.layout == "shared" else f"proxy-{i}"
            inst = (installations or {}).get(sc.id)
            plans.append(Plan(sc, name, str(IN_LAB / "proxies" / name), FIRST_PORT + i, host, inst))
        return plans

    def _archive(
        self,
        plans: list[Plan],
        cells: list[tuple[Plan, str]],
        lab_dir: Path,
        pki: LabPKI,
        seat_ip: str,
        *,
        hold: HoldSpec | None = None,
        start_batch: int = 0,
    ) -> bytes:
        """Everything the containers need under /lab, as a tar (keys 0600, dirs 0700), all of it
        the containers' unprivileged user's (the volume's root too)."""
        pki_dir = pki.write_to(lab_dir / "pki")
        tar = _Tar(*(int(x) for x in sandbox.CONTAINER_USER.split(":")))
        tar.add_dir("run")  # what the worker creates at run time (the volume's root is root's)
        tar.add_link("control.sock", "run/control.sock")  # the held lab's control socket, where it was
        tar.add_code()
        tar.add_dir("pki")
        for path in sorted(pki_dir.rglob("*")):
            name = f"pki/{path.relative_to(pki_dir)}"
            if path.is_dir():
                tar.add_dir(name)
            else:
                tar.add_file(name, path.read_bytes(), 0o600 if path.suffix == ".key" else 0o644)
        tar.add_dir("proxies")
        for p in plans:
            self._render(tar, p, lab_dir, seat_ip)
        job = WorkerJob(
            pki_dir=str(IN_LAB / "pki"),
            backend_ip=seat_ip,
            seat_host=seat_ip,
            seat_control_port=CONTROL_PORT if self.layout == "per-variant" else 0,
            start_timeout=30,
            start_batch=start_batch,
            proxies=tuple(self._spec(p) for p in plans),
            cells=tuple(CellSpec.of(p.scenario, ident) for p, ident in cells),
            hold=hold,
            deadline_s=lab_deadline(len(cells)),
        )
        tar.add_file("job.json", dump_job(job).encode(), 0o600)
        return tar.close()

    def _render(self, tar: _Tar, p: Plan, lab_dir: Path, seat_ip: str) -> None:
        """*p*'s config (and extra files) into the lab's tar, and a copy on the host (for
        ``--keep`` and for reading what ran)."""
        drv = driver(p.scenario.proxy)
        ctx = RenderContext(
            run_dir=p.run_dir,
            listen=f"{'127.0.0.1' if self.layout == 'shared' else '0.0.0.0'}:{p.listen_port}",
            ca=str(IN_LAB / "pki" / CA_FILE),
            bundle=str(IN_LAB / "pki" / BUNDLE_FILE),
            backend_ip=seat_ip,
        )
        files = {drv.config_name: drv.render(p.scenario, ctx), **drv.extra_files(p.scenario, ctx)}
        host_copy = lab_dir / "proxies" / p.name
        host_copy.mkdir(parents=True, exist_ok=True)
        tar.add_dir(f"proxies/{p.name}")
        for name, text in files.items():  # remap.config beside records.config
            (host_copy / name).write_text(text)
            tar.add_file(f"proxies/{p.name}/{name}", text.encode())

    def _spec(self, p: Plan) -> ProxySpec:
        """A rendered scenario's proxy, the lab image's installation of its kind."""
        drv = driver(p.scenario.proxy)
        inst = self.in_image(p.scenario.proxy, p.inst)
        return ProxySpec(
            key=p.scenario.id,
            kind=p.scenario.proxy.value,
            listen_port=p.listen_port,
            host=p.host,
            run_dir=p.run_dir,
            log=str(drv.error_log(Path(p.run_dir))),
            config=f"{p.run_dir}/{drv.config_name}",
            installation=inst,
            env=drv.environment(p.run_dir, str(IN_LAB / "pki"), inst),
            exit_file=f"{p.run_dir}/exit.status" if self.layout == "per-variant" else None,
            unconfined=not self.sandbox,
        )

    def in_image(self, kind: ProxyKind | str, inst: Installation | None) -> Installation:
        """The lab image's copy of *inst* (a host installation: ``trustlab proxies list``), from the
        image's ``trustlab.proxies`` label; ``None``: the kind's default, at the driver's image path."""
        if inst is None:
            return image_installation(kind)
        drv = driver(kind)
        return Installation(drv.kind, inst.version, images.in_image(drv, inst, self.carried()), "image", inst.tls)

    def carried(self) -> list[dict[str, str]]:
        """Every installation the lab images carry (the versions image's label, else the lab image's)."""
        return self.records(images.versions_image()) or self.records(images.lab_image()) or []

    def _start_proxy_containers(self, lab: Lab, plans: list[Plan]) -> None:
        def start(p: Plan) -> None:
            i = p.listen_port - FIRST_PORT
            script = (
                f"cd {shlex.quote(p.run_dir)} && {shlex.join(self._spec(p).argv())} > stdout.log 2>&1; "
                "echo $? > exit.status"
            )
            ct = lab.create(f"proxy-{i}", ["sh", "-c", script], aliases=[f"proxy-{i}"])
            ct.start()

        with ThreadPoolExecutor(max_workers=min(8, len(plans))) as pool:
            list(pool.map(start, plans))

    def _follow(
        self, worker: Any, identities: Callable[[str], tuple[str, ...]], on_proxy: OnProxy | None
    ) -> Iterator[CellEvent]:
        def started(event: ProxyEvent) -> None:
            if event.start_s is not None:
                self.timings["proxy_start_max_s"] = max(self.timings.get("proxy_start_max_s", 0.0), event.start_s)
            if on_proxy:
                on_proxy(event)

        reader = EventReader(identities, started, where=self.name)
        stream = worker.logs(stream=True, follow=True, stdout=True, stderr=False)
        try:
            # No need to watch the worker shut its proxies down after "done": the lab is removed.
            yield from reader.stream(stream)
        finally:
            stream.close()
            # close() shuts the socket, but the HTTP response still holds its file object (and
            # so the descriptor) until it is closed too.
            stream._response.close()
        if reader.done:
            return
        # The stream ended without "done": the worker died.
        import docker.errors

        oom = False
        try:
            status = worker.wait(timeout=30).get("StatusCode")
            err = worker.logs(stdout=False, stderr=True).decode(errors="replace").strip().splitlines()
            worker.reload()
            oom = bool(worker.attrs.get("State", {}).get("OOMKilled"))
        except docker.errors.APIError as exc:  # removed (or being removed) before its log was read
            status, err = "unknown", [f"its container is gone ({exc.explanation or exc})"]
        hit = "the lab hit its memory limit (its container was killed out of memory): " if oom else ""
        raise LabError(f"docker lab worker failed (exit {status}): {hit}{err[-1] if err else 'no output'}")


#: What the in-lab copy of the package says about itself (the image has no trustme/matplotlib).
_LAB_INIT = '''"""trustlab, in-lab copy: the stdlib-only modules the seat and the worker import.

The package's real ``__init__`` re-exports the notebook API (trustme, matplotlib ...), which the
lab image does not carry; nothing in the lab needs it.
"""

__version__ = "{version}"
'''


def lab_code() -> dict[Path, bytes]:
    """The harness sources the containers get (relative path -> bytes), with a stdlib-only facade."""
    from harness import __version__

    root = Path(__file__).resolve().parents[1]
    code = {path.relative_to(root.parent): path.read_bytes() for path in sorted(root.rglob("*.py"))}
    code[Path("harness/__init__.py")] = _LAB_INIT.format(version=__version__).encode()
    return code


def _quietly(close: Callable[[], None]) -> None:
    """Run *close*; a lab its own thread is removing at the same moment may refuse: that thread
    finishes it."""
    import docker.errors

    with contextlib.suppress(docker.errors.APIError):
        close()


def lab_id(lab_dir: Path) -> str:
    """A docker-safe lab id from the lab directory's name (``trustlab-abc123``)."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in lab_dir.name.lower())
    return name if name.startswith("trustlab") else f"trustlab-{name}"


def image_installation(kind: ProxyKind | str) -> Installation:
    """The lab image's copy of *kind*: its binary at the driver's image path. (Its version is what
    the image's manifest records: :func:`harness.runtimes.images.image_versions`.)"""
    drv = driver(kind)
    return Installation(drv.kind, version="", binary=drv.image_binary, source="image")


def _solo_id(lab_dir: Path) -> str:
    """A prepared lab's id: ``trustlab check`` runs one per upstream group, in ``<lab>/u<N>``."""
    return lab_id(lab_dir if lab_dir.name.startswith("trustlab") else Path(f"{lab_dir.parent.name}-{lab_dir.name}"))


class _Tar:
    """A lab's ``/lab`` as a tar in memory, every entry owned by *uid*:*gid*."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w")  # noqa: SIM115 - closed by close()

    def add_dir(self, name: str, mode: int = 0o700) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, self.uid, self.gid
        self.tar.addfile(info)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        info.uid, info.gid = self.uid, self.gid
        self.tar.addfile(info, io.BytesIO(data))

    def add_link(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.uid, info.gid = tarfile.SYMTYPE, target, self.uid, self.gid
        self.tar.addfile(info)

    def add_code(self) -> None:
        """The harness sources under ``code/`` (:func:`lab_code`), world-readable."""
        self.add_dir("code", 0o755)
        made: set[Path] = set()
        for rel, data in lab_code().items():
            for parent in reversed(rel.parents[:-1]):
                if parent not in made:
                    made.add(parent)
                    self.add_dir(f"code/{parent}", 0o755)
            self.add_file(f"code/{rel}", data)

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def _lab_dir_archive(lab_dir: Path, job: WorkerJob) -> bytes:
    """The harness code, everything under *lab_dir* and the job, as a tar for ``/lab``.

    Owned by root in the container; file modes are kept (keys 0600), directories 0700.
    """

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isdir():
            info.mode = 0o700
        return info

    tar = _Tar(0, 0)
    tar.add_code()
    for path in sorted(lab_dir.iterdir()):
        tar.tar.add(path, arcname=path.name, filter=owned)
    tar.add_file("job.json", dump_job(job).encode(), 0o600)
    return tar.close()
