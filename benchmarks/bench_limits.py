"""What the lab's own limits need and cost (harness/runtimes/limits.py, issue 26 item 5).

    python benchmarks/bench_limits.py [--repeat N] [--all-versions]

Runs the full default matrix on the local runtime with each lab worker in its cgroup and its
run directories on tmpfs (``LocalRuntime()``) and with neither (``LocalRuntime(lab_limits=False)``),
interleaved so machine load hits both alike. Reported: each worker's peak memory (v1 ``memory.max_usage_in_bytes``, v2
``memory.peak``) and the most processes seen in it (``pids.current``, sampled every 5 ms; v2
``pids.peak`` where the kernel has it) against its limits, the median wall time of each mode,
and whether every cell's outcome is the same in both.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from harness import runner, scenarios
from harness.runtimes import limits
from harness.runtimes.local import LocalRuntime

peaks: list[dict[str, Any]] = []
live: set[limits.LabCgroup] = set()


def _read(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _pids(group: limits.LabCgroup) -> int:
    d = group.dirs.get("pids") or group.dirs.get("")
    return _read(d / "pids.current") if d else 0


def instrument() -> None:
    """Record each lab cgroup's peaks before it is removed, and sample its process count."""
    create, close = limits.LabCgroup.create, limits.LabCgroup.close

    def created(cls: type, lim: limits.LabLimits) -> Any:
        group = create(lim)
        if group is not None:
            group.max_pids = 0  # type: ignore[attr-defined]
            live.add(group)
        return group

    def closing(self: limits.LabCgroup) -> None:
        if self in live:
            live.discard(self)
            mem = self.dirs.get("memory") or self.dirs.get("")
            assert mem is not None
            peak = _read(mem / "memory.max_usage_in_bytes") or _read(mem / "memory.peak")
            pids_dir = self.dirs.get("pids") or self.dirs[""]
            peaks.append(
                {
                    "memory": peak,
                    "pids": max(self.max_pids, _read(pids_dir / "pids.peak")),  # type: ignore[attr-defined]
                    "limits": self.limits,
                }
            )
        close(self)

    limits.LabCgroup.create = classmethod(created)  # type: ignore[method-assign, assignment]
    limits.LabCgroup.close = closing  # type: ignore[method-assign]

    def sample() -> None:
        while True:
            for group in list(live):
                group.max_pids = max(group.max_pids, _pids(group))  # type: ignore[attr-defined]
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--all-versions", action="store_true")
    args = ap.parse_args()
    print("cgroups here:", limits.support())
    instrument()
    scs = scenarios.select()
    times: dict[bool, list[float]] = {True: [], False: []}
    outcomes: dict[bool, list[Any]] = {True: [], False: []}
    cells = 0
    for _ in range(args.repeat):
        for on in (True, False):
            t = time.perf_counter()
            res = runner.run(scs, runtime=LocalRuntime(lab_limits=on), all_versions=args.all_versions)
            times[on].append(time.perf_counter() - t)
            outcomes[on].append(sorted((c.scenario, c.identity, c.proxy_version, c.outcome.value) for c in res.cells))
            cells = len(res.cells)
    print(f"full matrix ({cells} cells, {len(scs)} scenarios), local runtime, {args.repeat} runs each:")
    for on in (True, False):
        ts = times[on]
        print(
            f"  {'limits' if on else 'no limits':<10} median {statistics.median(ts):6.2f} s  "
            f"(min {min(ts):.2f}, max {max(ts):.2f})"
        )
    same = all(o == outcomes[True][0] for o in outcomes[True] + outcomes[False])
    print(f"  every cell the same in every run, with and without: {same}")
    mib = 1 << 20
    for p in peaks:
        lim = p["limits"]
        print(
            f"  worker: peak memory {p['memory'] / mib:6.1f} MiB of {lim.memory / mib:.0f} MiB;"
            f" processes {p['pids']:4d} of {lim.pids}"
        )


if __name__ == "__main__":
    main()
