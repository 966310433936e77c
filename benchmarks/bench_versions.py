"""Benchmark the full versioned matrix on the local runtime: every scenario on every installed
version of its proxy (``trustlab matrix --all-versions``).

    python benchmarks/bench_versions.py [--repeat N]

Prints the installations, the cell count, wall time (best and median), ms per cell, each
version's start-to-listening time, and the same figures for the default-version matrix run
right after it (the cost of the version axis per cell). Every run must match its expectations
(exit 1, after the figures, when a cell does not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

from harness import runner, scenarios
from harness.proxies import driver, kinds
from harness.results import Cell
from harness.runtimes.contract import ProxyEvent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="matrices to time, each way (default 5)")
    args = ap.parse_args()

    chosen = scenarios.select()
    installed = {k.value: driver(k).installations() for k in kinds()}
    print(f"trustlab versioned benchmark: {len(chosen)} scenarios, {os.cpu_count()} cores, local runtime")
    for kind, insts in installed.items():
        print(f"  {kind:<13} " + (", ".join(f"{i.version} ({i.source}, {i.tls or '?'})" for i in insts) or "-"))

    kind_of = {s.id: s.proxy.value for s in chosen}
    default = {k: v[0].version for k, v in installed.items() if v}

    def label(key: str) -> str:
        """``nginx@1.31.3`` for a proxy process's key (``scenario`` or ``scenario@version``)."""
        sid, _, version = key.partition("@")
        return f"{kind_of[sid]}@{version or default.get(kind_of[sid], '?')}"

    differ: list[Cell] = []

    def timed(all_versions: bool) -> tuple[int, list[float], dict[str, list[float]]]:
        starts: dict[str, list[float]] = defaultdict(list)
        walls, cells = [], 0

        def on_proxy(event: ProxyEvent) -> None:
            if event.started and event.start_s is not None:
                starts[label(event.key)].append(event.start_s)

        for i in range(args.repeat):
            t0 = time.perf_counter()
            res = runner.run(chosen, runtime="local", seed=i, all_versions=all_versions, on_proxy=on_proxy)
            walls.append(time.perf_counter() - t0)
            cells = len(res.cells)
            differ.extend(res.mismatches)
        return cells, walls, starts

    for name, every in (("all versions", True), ("default versions", False)):
        cells, walls, starts = timed(every)
        best, median = min(walls), statistics.median(walls)
        print(
            f"{name}: {cells} cells, wall best {best:.2f} s, median {median:.2f} s over {args.repeat} runs; "
            f"{median / cells * 1000:.2f} ms per cell (median)"
        )
        if every:
            for key in sorted(starts):
                xs = sorted(starts[key])
                print(
                    f"  {key:<22} start-to-listening: median {statistics.median(xs) * 1000:.1f} ms "
                    f"(n={len(xs)}, all started at once)"
                )
    if differ:  # figures first, then what went wrong (a loaded machine: proxies that did not start in time)
        reasons = sorted({f"{c.scenario} @{c.proxy_version} x {c.identity}: {c.reason[:80]}" for c in differ})
        print(f"{len(differ)} cell(s) differ from expectation, e.g.: " + "; ".join(reasons[:3]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
