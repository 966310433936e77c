"""Grading time per challenge on the local runtime (target: under 1 s for a single-upstream config).

    python benchmarks/bench_challenges.py [--repeat N]

Grades every challenge's reference solution N times (default 3) and prints the median per
challenge and over all, plus `trustlab workshop preflight`'s time. Figures, not a pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from harness.course import challenges
from harness.course.workshop import preflight


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("TRUSTLAB_STATE_DIR", tempfile.mkdtemp(prefix="trustlab-bench-state-"))
    medians = []
    for ch in challenges.load_all():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            g = challenges.grade(ch, ch.solution_file)
            times.append(time.perf_counter() - t0)
            assert g.solved, ch.id
        medians.append(statistics.median(times))
        print(f"{ch.id:<28} {ch.proxy.value:<8} median {medians[-1]:.2f} s")
    print(f"all {len(medians)} challenges: median {statistics.median(medians):.2f} s, max {max(medians):.2f} s")
    t0 = time.perf_counter()
    report = preflight(runtime="local")
    print(f"workshop preflight: {'READY' if report.ready else 'NOT READY'} in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
