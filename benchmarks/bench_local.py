"""Benchmark the local runtime: the full matrix, proxy start times, and a naive baseline.

    python benchmarks/bench_local.py [--repeat N] [--naive-sample N]

The naive baseline is what a straightforward harness does: a fresh lab (namespace, seat and
proxy process) for every single cell. It runs in the same process, right after the real
matrix, and the ratio of the two is printed. ``--naive-sample N`` times N cells spread over
every scenario and extrapolates to the full matrix (said so in the output).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

from harness import runner, scenarios
from harness.proxies import kinds
from harness.runtimes.contract import ProxyEvent
from harness.vocab import IDENTITY_IDS


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="full matrices to time (default 5)")
    ap.add_argument("--naive-sample", type=int, default=50, help="cells for the naive baseline (0 = all)")
    args = ap.parse_args()

    chosen = scenarios.select()
    cells = sum(len(s.identities) for s in chosen)
    print(
        f"trustlab local benchmark: {len(chosen)} scenarios x {len(IDENTITY_IDS)} identities = {cells} cells,"
        f" {os.cpu_count()} cores"
    )

    starts: dict[str, list[float]] = defaultdict(list)
    kind_of = {s.id: s.proxy.value for s in chosen}

    def on_proxy(event: ProxyEvent) -> None:
        if event.started and event.start_s is not None:
            starts[kind_of[event.key]].append(event.start_s)

    walls = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        res = runner.run(chosen, runtime="local", on_proxy=on_proxy, seed=i)
        walls.append(time.perf_counter() - t0)
        assert not res.mismatches, "benchmark run differs from expectations"
    best, median = min(walls), statistics.median(walls)
    print(
        f"full matrix wall time: best {best:.2f} s, median {median:.2f} s over {args.repeat} runs "
        f"(target < 2 s); {cells / median:.0f} cells/s"
    )
    for kind in sorted(starts):
        xs = sorted(starts[kind])
        print(
            f"  {kind:<8} start-to-listening in the matrix: median {statistics.median(xs) * 1000:.1f} ms "
            f"(min {xs[0] * 1000:.1f}, max {xs[-1] * 1000:.1f}, n={len(xs)}; all started at once)"
        )
    alone: dict[str, list[float]] = defaultdict(list)
    for kind in [k.value for k in kinds() if f"{k.value}/good" in scenarios.builtin()]:
        good = scenarios.select([f"{kind}/good"])
        for _ in range(10):
            runner.run(
                good,
                runtime="local",
                identities=("legit",),
                shards=1,
                on_proxy=lambda e, k=kind: alone[k].append(float(e.start_s or 0)),
            )  # type: ignore[misc]
        print(f"  {kind:<8} start-to-ready alone: median {statistics.median(alone[kind]) * 1000:.1f} ms (n=10)")

    pairs = [(sc, ident) for sc in chosen for ident in IDENTITY_IDS]
    if args.naive_sample and args.naive_sample < len(pairs):
        step = len(pairs) / args.naive_sample
        pairs = [pairs[int(i * step)] for i in range(args.naive_sample)]
    t0 = time.perf_counter()
    for sc, ident in pairs:
        res = runner.run([sc], runtime="local", identities=(ident,), shards=1)
        assert not res.mismatches
    naive = time.perf_counter() - t0
    per_cell = naive / len(pairs)
    naive_full = per_cell * cells
    how = "measured" if len(pairs) == cells else f"extrapolated from {len(pairs)} cells"
    print(
        f"naive (a fresh lab and proxy per cell): {per_cell * 1000:.0f} ms/cell -> {naive_full:.1f} s for "
        f"the full matrix ({how})"
    )
    print(f"ratio naive / trustlab: {naive_full / median:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
