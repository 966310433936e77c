"""What the proxy sandbox costs (harness/runtimes/sandbox.py): per proxy start, and on the full matrix.

    python benchmarks/bench_sandbox.py [--repeat N] [--starts N] [--docker]

Both modes run in the same process, interleaved (on, off, on, off ...), so machine load hits
them alike: ``LocalRuntime()`` (every proxy in bubblewrap, its own uid, no capabilities) and
``LocalRuntime(sandbox=False)`` (the opt-out the payload tests use). Reported: the median
start-to-listening time per proxy kind, the full matrix's median wall time and ms per cell,
the CPU seconds it took (trustlab + workers + proxies: less sensitive to other load than wall
time), and whether every cell's outcome is the same in both modes and as the scenario files
expect. ``--docker`` adds the docker runtime, hardened containers vs default ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from harness import runner, scenarios
from harness.runtimes.local import LocalRuntime

MODES = {"sandbox": True, "no sandbox": False}


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def runtime(kind: str, box: bool) -> Any:
    if kind == "docker":
        from harness.runtimes.docker import DockerRuntime

        return DockerRuntime(sandbox=box)
    return LocalRuntime(sandbox=box)


def starts(kind: str, n: int) -> None:
    alone: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(n):
        for mode, box in MODES.items():
            for proxy in ("nginx", "apache", "haproxy"):
                good = scenarios.select([f"{proxy}/good"])
                runner.run(
                    good,
                    runtime=runtime(kind, box),
                    identities=("legit",),
                    shards=1,
                    on_proxy=lambda e, k=(proxy, mode): alone[k].append(float(e.start_s or 0)),  # type: ignore[misc]
                )
    print(f"{kind}: proxy start-to-listening, alone, median of {n} (ms):")
    for proxy in ("nginx", "apache", "haproxy"):
        on, off = (statistics.median(alone[(proxy, m)]) * 1000 for m in MODES)
        print(f"  {proxy:<8} sandbox {on:7.1f}   no sandbox {off:7.1f}   overhead {on - off:+6.1f} ms")


def wrapper(n: int) -> None:
    """The sandbox's own cost: bubblewrap + setpriv around /bin/true, vs /bin/true alone."""
    import subprocess
    import tempfile
    from pathlib import Path

    from harness.runtimes import sandbox

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp, "run")
        run.mkdir()
        etc = sandbox.write_etc(Path(tmp, "etc"))
        uid = sandbox.new_uid() if sandbox.host_root() else None
        sandbox.hand_over([run], uid)
        boxed = sandbox.command(["/bin/true"], run_dir=str(run), hosts_file="/etc/hosts", etc_dir=str(etc), uid=uid)
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(n):
            for name, argv in (("sandboxed", boxed), ("bare", ["/bin/true"])):
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, env=sandbox.environment(str(run)), preexec_fn=sandbox.limit)
                times[name].append(time.perf_counter() - t0)
    on, off = (statistics.median(times[k]) * 1000 for k in ("sandboxed", "bare"))
    print(
        f"sandbox wrapper alone (/bin/true, median of {n}): sandboxed {on:.1f} ms, bare {off:.1f} ms, "
        f"overhead {on - off:+.1f} ms per process start"
    )


def matrix(kind: str, repeat: int) -> int:
    chosen = scenarios.select()
    walls: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[str, dict[tuple[str, str], str]] = {}
    bad = 0
    for i in range(repeat):
        for mode, box in MODES.items():
            c0, t0 = cpu(), time.perf_counter()
            res = runner.run(chosen, runtime=runtime(kind, box), seed=i)
            walls[mode].append(time.perf_counter() - t0)
            cpus[mode].append(cpu() - c0)
            bad += len(res.mismatches)
            got = {(c.scenario, c.identity): c.outcome.value for c in res.cells}
            if mode in outcomes and outcomes[mode] != got:
                bad += 1
            outcomes.setdefault(mode, got)
    cells = len(next(iter(outcomes.values())))
    print(f"{kind}: full matrix, {cells} cells, {repeat} runs per mode, interleaved, {os.cpu_count()} cores:")
    for mode in MODES:
        w = statistics.median(walls[mode])
        print(
            f"  {mode:<11} wall median {w:5.2f} s (best {min(walls[mode]):5.2f})  "
            f"{w / cells * 1000:5.2f} ms/cell   CPU median {statistics.median(cpus[mode]):5.2f} s"
        )
    on, off = (statistics.median(walls[m]) for m in MODES)
    print(
        f"  overhead: {on - off:+.2f} s per matrix ({(on - off) / cells * 1000:+.2f} ms/cell, "
        f"{(on / off - 1) * 100:+.0f}%)"
    )
    same = outcomes["sandbox"] == outcomes["no sandbox"]
    print(
        f"  outcomes: {'identical in both modes' if same else 'DIFFER between modes'}; "
        f"{bad} unexpected cells or changed outcomes over all runs"
    )
    return 0 if same and not bad else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="full matrices per mode (default 5)")
    ap.add_argument("--starts", type=int, default=5, help="single-proxy starts per kind and mode (default 5)")
    ap.add_argument("--docker", action="store_true", help="also the docker runtime (hardened vs default)")
    args = ap.parse_args()
    kinds = ["local", "docker"] if args.docker else ["local"]
    rc = 0
    wrapper(50)
    for kind in kinds:
        starts(kind, args.starts)
        rc |= matrix(kind, args.repeat)
    return rc


if __name__ == "__main__":
    sys.exit(main())
