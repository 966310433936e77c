"""Benchmark the docker runtime: image builds, container start, the full matrix, a naive baseline.

    python benchmarks/bench_docker.py [--repeat N] [--naive-sample N] [--cold] [--layouts]

* image build: the no-op rebuild (inputs unchanged) always; ``--cold`` also forces a full offline
  rebuild (mmdebstrap + docker import + lab layer) and times it.
* per-container start: create + start of a lab-image container, one at a time.
* full matrix: every built-in scenario x every identity on the default layout (``shared``: all
  proxy processes in the worker container, one process per variant); ``--layouts`` also times
  ``per-variant`` (one container per proxy).
* naive baseline, in the same run: a fresh lab (network, volume, seat, worker and proxy
  containers) for every single cell. ``--naive-sample N`` times N cells spread over every
  scenario and extrapolates to the full matrix (said so in the output); the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from harness import runner, scenarios
from harness.runtimes import images
from harness.runtimes.docker import DockerRuntime, owner_tag
from harness.vocab import IDENTITY_IDS


def run_with(rt: DockerRuntime, chosen: list[scenarios.Scenario], **kw: object) -> runner.Results:
    original = runner.get_runtime
    runner.get_runtime = lambda name: rt  # type: ignore[assignment]
    try:
        return runner.run(chosen, runtime="docker", **kw)  # type: ignore[arg-type]
    finally:
        runner.get_runtime = original  # type: ignore[assignment]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="full matrices to time (default 5)")
    ap.add_argument("--naive-sample", type=int, default=10, help="cells for the naive baseline (0 = all)")
    ap.add_argument("--cold", action="store_true", help="also time a forced full image rebuild")
    ap.add_argument("--layouts", action="store_true", help="also time the per-variant layout")
    args = ap.parse_args()

    quiet = lambda _msg: None  # noqa: E731
    if args.cold:
        r = images.build(progress=quiet, force=True)
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in r.steps.items())
        print(f"image build, cold (forced, offline): {r.duration_s:.1f} s ({steps}) (target < 60 s)")
    t0 = time.perf_counter()
    r = images.build(progress=quiet)
    print(
        f"image build, nothing changed: {time.perf_counter() - t0:.2f} s, skipped={r.skipped} "
        f"(target < 2 s) -> {', '.join(r.tags)}"
    )

    c = images.client()
    starts = []
    for _ in range(10):
        t0 = time.perf_counter()
        ct = c.containers.create(
            images.LAB_IMAGE,
            ["sleep", "30"],
            network_mode="none",
            init=True,
            labels={"trustlab.lab": "bench-start", "trustlab.owner": owner_tag()},
        )
        ct.start()
        starts.append(time.perf_counter() - t0)
        ct.remove(force=True)
    print(
        f"per-container create+start: median {statistics.median(starts) * 1000:.0f} ms "
        f"(min {min(starts) * 1000:.0f}, max {max(starts) * 1000:.0f}, n={len(starts)}, one at a time)"
    )

    chosen = scenarios.select()
    cells = sum(len(s.identities) for s in chosen)
    print(
        f"trustlab docker benchmark: {len(chosen)} scenarios x {len(IDENTITY_IDS)} identities"
        f" = {cells} cells, {os.cpu_count()} cores"
    )
    layouts = ["shared", "per-variant"] if args.layouts else ["shared"]
    medians = {}
    for layout in layouts:
        walls = []
        steps: dict[str, list[float]] = {}
        for i in range(args.repeat if layout == "shared" else max(1, args.repeat // 2)):
            rt = DockerRuntime(layout=layout)
            t0 = time.perf_counter()
            res = run_with(rt, chosen, seed=i)
            walls.append(time.perf_counter() - t0)
            assert not res.mismatches, "benchmark run differs from expectations"
            for k, v in rt.timings.items():
                steps.setdefault(k, []).append(v)
        medians[layout] = statistics.median(walls)
        detail = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in steps.items())
        print(
            f"full matrix, layout {layout}: best {min(walls):.2f} s, median {medians[layout]:.2f} s over "
            f"{len(walls)} runs (target < 10 s); {cells / medians[layout]:.0f} cells/s"
        )
        print(f"  steps (median s): {detail}")

    pairs = [(sc, ident) for sc in chosen for ident in IDENTITY_IDS]
    if args.naive_sample and args.naive_sample < len(pairs):
        step = len(pairs) / args.naive_sample
        pairs = [pairs[int(i * step)] for i in range(args.naive_sample)]
    t0 = time.perf_counter()
    for sc, ident in pairs:
        res = run_with(DockerRuntime(), [sc], identities=(ident,))
        assert not res.mismatches
    naive = time.perf_counter() - t0
    per_cell = naive / len(pairs)
    naive_full = per_cell * cells
    how = "measured" if len(pairs) == cells else f"extrapolated from {len(pairs)} cells"
    print(
        f"naive (fresh network, seat, proxy and client containers per cell): "
        f"{per_cell * 1000:.0f} ms/cell -> {naive_full:.1f} s for the full matrix ({how})"
    )
    print(f"ratio naive / trustlab: {naive_full / medians['shared']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
