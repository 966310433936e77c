"""Benchmark what a matrix costs beyond its cells: the whole ``trustlab matrix --json F`` process
against the cells' own time, the pictures, and the terminal grid.

    python benchmarks/bench_output.py [--runtime local] [--from F.json] [--keep F.json]

One run of ``trustlab matrix --runtime local --json F`` (a child process, timed from outside)
gives the cells' time (the run's ``meta.duration_s``) and the whole process's; DESIGN's target is
whole <= 1.25x cells, pictures included only when asked. Then, on those results, each picture is
drawn in a fresh interpreter (so matplotlib's import is counted, as in the CLI) and the 80-column
grid is rendered. ``--from F.json`` skips the matrix and times only the drawing and the grid (a
recorded run: the machine's load then does not move the cells' figure). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Drawn in a fresh interpreter: import + load + draw, as ``trustlab matrix --png`` pays it.
DRAW = """
import json, sys, time
t0 = time.perf_counter()
from harness import report
from harness.results import Cell, Results
data = json.load(open(sys.argv[1]))
results = Results(meta=data["meta"], cells=[Cell.from_dict(c) for c in data["cells"]])
t1 = time.perf_counter()
getattr(report, sys.argv[2])(results, sys.argv[3])
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "draw": t2 - t1}))
"""
GRID = """
import json, sys, time
from harness.report import terminal
from harness.results import Cell, Results
data = json.load(open(sys.argv[1]))
results = Results(meta=data["meta"], cells=[Cell.from_dict(c) for c in data["cells"]])
t0 = time.perf_counter()
text = terminal.to_text(lambda out: terminal.matrix_grid(results, out), width=80)
print(json.dumps({"grid": time.perf_counter() - t0, "lines": len(text.splitlines()),
                  "widest": max(len(line) for line in text.splitlines())}))
"""


def child(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime", default="local", help="runtime for the matrix (default local)")
    ap.add_argument("--from", dest="recorded", type=Path, help="a matrix JSON to draw from (skip the matrix run)")
    ap.add_argument("--keep", type=Path, help="where to keep the matrix JSON of this run")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="trustlab-bench-output-"))
    data_file = args.recorded
    print(f"trustlab output benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    if data_file is None:
        data_file = args.keep or tmp / "matrix.json"
        cmd = [
            sys.executable,
            "-m",
            "harness",
            "matrix",
            "--runtime",
            args.runtime,
            "--json",
            str(data_file),
            "--out",
            str(tmp / "out"),
            "--no-plot",
        ]
        # --out is only where the CSV and Markdown go; --no-plot keeps it from drawing, as --json alone does.
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        whole = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            sys.stderr.write(proc.stderr)
            return proc.returncode
        meta = json.loads(data_file.read_text())["meta"]
        cells_s = meta["duration_s"]
        n = len(json.loads(data_file.read_text())["cells"])
        print(
            f"matrix --json: {n} cells in {cells_s:.2f} s (the cells' own time); whole process {whole:.2f} s "
            f"= {whole / cells_s:.2f}x the cells (target <= 1.25x); outside the cells {whole - cells_s:.2f} s"
        )
    else:
        meta = json.loads(data_file.read_text())["meta"]
        cells_s = meta["duration_s"]
        print(f"recorded run {data_file}: cells took {cells_s:.2f} s")
    for name, painter in (("summary", "summary_picture"), ("poster", "heatmap")):
        png = tmp / f"{name}.png"
        got = child(DRAW, str(data_file), painter, str(png))
        from_cold = got["load"] + got["draw"]
        target = " (target < 10%: the default picture)" if name == "summary" else " (only with --poster)"
        print(
            f"{name} picture: draw {got['draw']:.2f} s, with imports and loading {from_cold:.2f} s = "
            f"{100 * from_cold / cells_s:.0f}% of the cells' time{target}; {_size(png)}"
        )
    grid = child(GRID, str(data_file))
    print(f"80-column grid: rendered in {grid['grid']:.2f} s, {grid['lines']:.0f} lines, widest {grid['widest']:.0f}")
    return 0


def _size(png: Path) -> str:
    import struct

    head = png.read_bytes()[:24]
    width, height = struct.unpack(">II", head[16:24])
    return f"{width}x{height} px, {png.stat().st_size // 1024} KiB"


if __name__ == "__main__":
    sys.exit(main())
