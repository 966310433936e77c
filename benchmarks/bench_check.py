"""Benchmark ``trustlab check`` on both runtimes, in the same run (target: under 1 s per config).

    python benchmarks/bench_check.py [--repeat N] [CONFIG ...]

For each single-upstream config (default: one per proxy kind from ``tests/configs/``) the check
runs N times on the local and on the docker runtime, interleaved (local, docker, local, ...) so
both see the same machine load, and the median and range of the wall time of
:func:`harness.check.check` are printed per runtime. The docker figure includes creating,
starting and removing the check's container.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness.check import check
from harness.runtimes import images

CONFIGS = Path(__file__).resolve().parents[1] / "tests" / "configs"
DEFAULT = ["nginx-upstream-good.conf", "apache-vhost-good.conf", "haproxy-good.cfg"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("configs", nargs="*", default=DEFAULT)
    args = parser.parse_args(argv)
    ready, why = images.docker_ready()
    if not ready:
        print(f"docker runtime not ready: {why}", file=sys.stderr)
        return 2
    runtimes = ("local", "docker")
    overall: dict[str, list[float]] = {rt: [] for rt in runtimes}
    print(f"trustlab check, {args.repeat} runs per config and runtime, interleaved")
    for name in args.configs:
        path = Path(name) if Path(name).exists() else CONFIGS / name
        proxy = path.name.split("-")[0]
        walls: dict[str, list[float]] = {rt: [] for rt in runtimes}
        check(proxy, path, runtime="docker")  # warm: image layers and page cache
        for _ in range(args.repeat):
            for rt in runtimes:
                t0 = time.perf_counter()
                result = check(proxy, path, runtime=rt)
                walls[rt].append(time.perf_counter() - t0)
                assert result.runtime == rt and result.cells
        parts = []
        for rt in runtimes:
            xs = sorted(walls[rt])
            overall[rt] += xs
            parts.append(f"{rt} median {statistics.median(xs):.2f} s ({xs[0]:.2f}-{xs[-1]:.2f})")
        print(f"  {path.name:<28} " + "; ".join(parts))
    print(
        "all configs: "
        + "; ".join(f"{rt} median {statistics.median(overall[rt]):.2f} s (n={len(overall[rt])})" for rt in runtimes)
        + " (target < 1 s on either runtime)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
