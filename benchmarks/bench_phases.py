"""Where a matrix's time goes: per phase, per proxy kind, as ratios within one run.

    python benchmarks/bench_phases.py [--runtime local|docker] [--repeat N] [--alone N]
                                      [--write-docs docs/reference.md]

(``make bench`` runs it.) One process measures, in this order:

1. each kind's own matrix (its built-in scenarios on its default installation), then the default
   matrix of every kind; each run split into phases on the host's clock:

   * **PKI**: minting the run's certificates (``LabPKI.mint``, which the runtime calls once per
     lab: on docker a lab mints its PKI once its network gives the seat an address, so there it
     falls inside **lab up** too);
   * **render**: writing every proxy config and the lab files (local runtime: ``prepare``);
   * **lab up**: from the runtime's start to its first event (workers, namespaces or containers,
     seats, proxies started);
   * **cells**: first event to last cell (requests, and the proxies still starting meanwhile),
     of which **request** is the sum of the cells' own request durations divided by the shards;
   * **teardown**: last cell to the run's end (proxies and workers stopped, lab removed);
   * **report**: JSON, CSV, Markdown and the results page written for the run;

   plus CPU seconds (this process and every child it waited for) per cell;
2. each kind's ``good`` scenario alone (one shard, ``legit`` only), ``--alone`` times: the proxy's
   own start, split into **spawn** (fork, sandbox, exec), **listen** (exec to its port accepting)
   and **ready** (what its driver's readiness adds after listening: Traefik's routers, Traffic
   Server's host file).

Figures taken on a shared machine move with its load (printed with them); the ratios (a kind's
ms per cell against the default matrix's, a phase's share of a run) are taken within one run.
``--write-docs FILE`` replaces the block between ``<!-- bench:phases -->`` and ``<!-- /bench -->``
in FILE with the table (the reference docs keep the last measured one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from harness import report, runner, scenarios
from harness.pki import LabPKI
from harness.proxies import kinds
from harness.report import page, terminal
from harness.runtimes.contract import ProxyEvent

PHASES = ("pki", "render", "lab up", "cells", "teardown", "report")
MARK_BEGIN, MARK_END = "<!-- bench:phases -->", "<!-- /bench -->"


@dataclass
class RunPhases:
    """One run's phases (seconds, host clock), its cells and CPU seconds."""

    label: str
    cells: int = 0
    shards: int = 1
    wall: float = 0.0
    cpu: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    request: float = 0.0  # the cells' own request durations, summed
    outcomes_key: tuple[tuple[str, str, str], ...] = ()
    errors: int = 0
    mismatches: int = 0

    @property
    def ms_per_cell(self) -> float:
        return self.wall / self.cells * 1000 if self.cells else 0.0

    @property
    def cpu_ms_per_cell(self) -> float:
        return self.cpu / self.cells * 1000 if self.cells else 0.0


@dataclass
class Start:
    """A kind's start alone: medians of spawn, listen and ready (seconds)."""

    kind: str
    spawn: float
    listen: float
    ready: float
    n: int


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@contextmanager
def _timed_pki(acc: dict[str, float]) -> Iterator[None]:
    """Time ``LabPKI.mint`` as the runner calls it."""
    original = runner.LabPKI

    class Timed(LabPKI):
        @classmethod
        def mint(cls, *a: Any, **kw: Any) -> LabPKI:  # type: ignore[override]
            t0 = time.perf_counter()
            try:
                return original.mint(*a, **kw)
            finally:
                acc["pki"] = acc.get("pki", 0.0) + time.perf_counter() - t0

    runner.LabPKI = Timed  # type: ignore[misc]
    try:
        yield
    finally:
        runner.LabPKI = original  # type: ignore[misc]


def timed_runtime(name: str, acc: dict[str, float], marks: dict[str, float], plain: bool = False) -> Any:
    """A runtime object whose ``prepare`` (render) and ``run`` (lab up, cells, teardown) are timed;
    *plain*: the local runtime without the lab's start-cost savings (``LocalRuntime(plain_start=True)``)."""
    if plain:
        from harness.runtimes.local import LocalRuntime

        rt: Any = LocalRuntime(plain_start=True)
    else:
        rt = runner.get_runtime(name)
    prepare = getattr(rt, "prepare", None)
    if prepare is not None and name == "local":

        def timed_prepare(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return prepare(*a, **kw)
            finally:
                acc["render"] = acc.get("render", 0.0) + time.perf_counter() - t0
                marks["rendered"] = time.perf_counter()

        rt.prepare = timed_prepare
    run = rt.run

    def timed_run(*a: Any, **kw: Any) -> Iterator[Any]:
        marks["run"] = time.perf_counter()
        for ev in run(*a, **kw):
            marks.setdefault("first", time.perf_counter())
            marks["last"] = time.perf_counter()
            yield ev
        marks["drained"] = time.perf_counter()

    rt.run = timed_run
    return rt


def measure(
    label: str,
    chosen: list[scenarios.Scenario],
    runtime: str,
    seed: int = 0,
    on_proxy: Callable[[ProxyEvent], None] | None = None,
    plain: bool = False,
) -> RunPhases:
    """One matrix of *chosen* on *runtime*, split into phases (see the module docstring)."""
    acc: dict[str, float] = {}
    marks: dict[str, float] = {}
    first_events: list[float] = []

    def proxy_seen(ev: ProxyEvent) -> None:
        first_events.append(time.perf_counter())
        if on_proxy:
            on_proxy(ev)

    rt = timed_runtime(runtime, acc, marks, plain)
    cpu0, t0 = _cpu(), time.perf_counter()
    with _timed_pki(acc):
        res = runner.run(chosen, runtime=rt, seed=seed, on_proxy=proxy_seen)
    ended = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        out = Path(tmp)
        r0 = time.perf_counter()
        report.write_json(res, out / "matrix.json")
        report.write_csv(res, out / "matrix.csv")
        (out / "matrix.md").write_text(report.markdown(res))
        page.write(res.to_json_dict(), out / "index.html")
        acc["report"] = time.perf_counter() - r0
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    start = marks.get("rendered", marks.get("run", t0))
    first = min([marks.get("first", ended), *first_events])
    last = marks.get("last", first)
    acc["lab up"] = max(0.0, first - start)
    acc["cells"] = max(0.0, last - first)
    acc["teardown"] = max(0.0, ended - last)
    shards = max(1, min(os.cpu_count() or 1, len(chosen))) if runtime == "local" else 1
    return RunPhases(
        label=label,
        cells=len(res.cells),
        shards=shards,
        wall=wall,
        cpu=cpu,
        phases=acc,
        request=sum(c.duration_s for c in res.cells),
        outcomes_key=tuple((c.scenario, c.identity, c.outcome.value) for c in res.cells),
        errors=sum(c.outcome.value == "error" for c in res.cells),
        mismatches=len(res.mismatches),
    )


def alone(kind: str, runtime: str, repeat: int, plain: bool = False) -> Start | None:
    """*kind*'s ``good`` scenario alone, *repeat* times: its start split into spawn/listen/ready
    (*plain*: without the lab's start-cost savings)."""
    if f"{kind}/good" not in scenarios.builtin():
        return None
    good = scenarios.select([f"{kind}/good"])
    seen: list[ProxyEvent] = []
    rt: Any = runtime
    if plain:
        from harness.runtimes.local import LocalRuntime

        rt = LocalRuntime(plain_start=True)
    for _ in range(repeat):
        runner.run(
            good, runtime=rt, identities=("legit",), shards=1, on_proxy=lambda e: seen.append(e) if e.started else None
        )
    if not seen:
        return None
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    listen = [e.listen_s for e in seen if e.listen_s is not None]
    return Start(
        kind=kind,
        spawn=med([e.spawn_s for e in seen if e.spawn_s is not None]),
        listen=med(listen),
        ready=med([float(e.start_s or 0) - float(e.listen_s) for e in seen if e.listen_s is not None]),
        n=len(seen),
    )


def before_after(present: list[str], n: int) -> str:
    """The lab's start-cost savings against each kind's plain start, interleaved in this run:
    the kinds that have a plain start alone (ms to ready), and the default matrix (ms and CPU ms
    per cell, and whether its cells are the same)."""
    from harness.proxies import driver
    from harness.runtimes.contract import ProxySpec

    def differs(kind: str) -> bool:
        spec = ProxySpec(key="k", kind=kind, listen_port=1, run_dir="/r", log="/r/l", config="/r/c")
        ctx_differs = kind == "traefik"  # render-side saving (RenderContext.lean)
        return ctx_differs or driver(kind).plain_command(spec.argv(), 1) != spec.argv()

    lines = []
    for kind in [k for k in present if differs(k)]:
        lean, plain = [], []
        for _ in range(n):
            p, q = alone(kind, "local", 3, plain=True), alone(kind, "local", 3)
            if p and q:
                plain.append(p.listen + p.ready)
                lean.append(q.listen + q.ready)
        if lean:
            pm, lm = statistics.median(plain), statistics.median(lean)
            lines.append(
                f"{kind} alone, exec to ready: plain start {pm * 1000:.0f} ms, the lab's {lm * 1000:.0f} ms "
                f"({lm / pm:.2f}x)"
            )
    every = scenarios.select()
    pairs = []
    for i in range(n):
        pairs.append((measure("plain", every, "local", seed=i, plain=True), measure("lean", every, "local", seed=i)))
    same = all(p.outcomes_key == q.outcomes_key for p, q in pairs)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    pw, lw = med([p.ms_per_cell for p, _ in pairs]), med([q.ms_per_cell for _, q in pairs])
    pc, lc = med([p.cpu_ms_per_cell for p, _ in pairs]), med([q.cpu_ms_per_cell for _, q in pairs])
    lines.append(
        f"default matrix ({pairs[0][0].cells} cells, {n} runs each, interleaved): plain start {pw:.2f} ms and "
        f"{pc:.2f} CPU ms per cell, the lab's {lw:.2f} ms ({lw / pw:.2f}x) and {lc:.2f} CPU ms ({lc / pc:.2f}x); "
        f"cells {'the same' if same else 'DIFFERENT'} in every pair"
    )
    return "Before/after the start-cost savings (same run):\n" + "\n".join(f"- {ln}" for ln in lines)


def _spin() -> None:  # pragma: no cover - a CPU hog's body
    while True:
        pass


@contextmanager
def cpu_hog(n: int) -> Iterator[None]:
    """*n* processes that only burn CPU (a ``stress --cpu n``), stopped on the way out."""
    import multiprocessing

    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()


def docker_vs_local(n: int, hog: int) -> str:
    """The default matrix on both runtimes, interleaved, *n* times each, with *hog* CPU-burning
    processes running throughout: ms per cell on each, the ratio, and the error cells."""
    every = scenarios.select()
    pairs = []
    loads = []
    with cpu_hog(hog):
        for i in range(n):
            loads.append(os.getloadavg()[0])
            pairs.append((measure("local", every, "local", seed=i), measure("docker", every, "docker", seed=i)))
        loads.append(os.getloadavg()[0])
    med = lambda xs: statistics.median(xs)  # noqa: E731
    lw, dw = med([a.ms_per_cell for a, _ in pairs]), med([b.ms_per_cell for _, b in pairs])
    same = all(a.outcomes_key == b.outcomes_key for a, b in pairs)
    return (
        f"Docker against local ({pairs[0][0].cells} cells, {n} runs each, interleaved, {hog} CPU hog process(es) "
        f"running, load average {min(loads):.1f}-{max(loads):.1f}): local {lw:.2f} ms per cell, docker "
        f"{dw:.2f} ms ({dw / lw:.2f}x); error cells local {[a.errors for a, _ in pairs]}, docker "
        f"{[b.errors for _, b in pairs]}; outcomes {'the same' if same else 'DIFFERENT'} on both runtimes; "
        f"docker phases (ms, median run): "
        + ", ".join(f"{k} {med([b.phases.get(k, 0.0) for _, b in pairs]) * 1000:.0f}" for k in PHASES)
    )


# -- the table ------------------------------------------------------------------------------
def _ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:.0f}"  # NaN: not measured


def rows(runs: list[RunPhases], starts: dict[str, Start]) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows: one row per run (a kind, then ``all``), then the default
    matrix's phase shares. Milliseconds unless said; ``x all`` is a kind's ms/cell over the
    default matrix's, in the same run."""
    header = [
        "run",
        "cells",
        "ms/cell",
        "x all",
        "CPU ms/cell",
        "pki",
        "render",
        "lab up",
        "cells ms",
        "request/shard",
        "teardown",
        "report",
        "spawn",
        "listen",
        "ready",
    ]
    full = next((r for r in runs if r.label == "all"), runs[-1])
    body = []
    for r in runs:
        st = starts.get(r.label)
        body.append(
            [
                r.label,
                str(r.cells),
                f"{r.ms_per_cell:.2f}",
                f"{r.ms_per_cell / full.ms_per_cell:.2f}",
                f"{r.cpu_ms_per_cell:.2f}",
                *(_ms(r.phases.get(p, 0.0)) for p in ("pki", "render", "lab up", "cells")),
                _ms(r.request / r.shards),
                *(_ms(r.phases.get(p, 0.0)) for p in ("teardown", "report")),
                *((_ms(st.spawn), _ms(st.listen), _ms(st.ready)) if st else ("", "", "")),
            ]
        )
    share = ["share of all's wall", "", "", "", ""]
    share += [f"{full.phases.get(p, 0.0) / full.wall:.0%}" for p in ("pki", "render", "lab up", "cells")]
    share += [f"{full.request / full.shards / full.wall:.0%}"]
    share += [f"{full.phases.get(p, 0.0) / full.wall:.0%}" for p in ("teardown", "report")]
    body.append(share + ["", "", ""])
    return header, body


def rich_table(header: list[str], body: list[list[str]], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
    for row in body:
        table.add_row(*row)
    return table


def markdown(header: list[str], body: list[list[str]], note: str) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c or " " for c in row) + " |" for row in body]
    return note + "\n\n" + "\n".join(lines) + "\n"


def write_docs(path: Path, block: str) -> None:
    """Replace the text between the bench markers in *path* with *block*; a file without both
    markers (in order) is a one-line error, not a silent append."""
    text = path.read_text()
    pattern = re.compile(re.escape(MARK_BEGIN) + r".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        raise SystemExit(
            f"{path}: no {MARK_BEGIN} ... {MARK_END} block to replace; add the two markers where the table goes"
        )
    path.write_text(pattern.sub(lambda _m: f"{MARK_BEGIN}\n{block}{MARK_END}", text, count=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="local", choices=("local", "docker"))
    ap.add_argument("--repeat", type=int, default=3, help="default matrices timed (median shown; default 3)")
    ap.add_argument("--alone", type=int, default=5, help="starts of each kind's good scenario (default 5)")
    ap.add_argument(
        "--before-after",
        type=int,
        default=2,
        metavar="N",
        help="also N default matrices and N starts a kind with the plain start, interleaved "
        "with the lab's (local runtime; 0: skip; default 2)",
    )
    ap.add_argument(
        "--docker-vs-local",
        type=int,
        default=0,
        metavar="N",
        help="also N default matrices on each runtime, interleaved (default 0: skip)",
    )
    ap.add_argument(
        "--hog",
        type=int,
        default=0,
        metavar="P",
        help="with --docker-vs-local: P processes burning CPU meanwhile (default 0)",
    )
    ap.add_argument("--write-docs", type=Path, metavar="FILE", help="put the table in FILE's bench block")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.alone < 0:
        print("bench_phases: --repeat must be >= 1 and --alone >= 0", file=sys.stderr)
        return 2
    con = terminal.console(width=200)
    load0 = os.getloadavg()
    every = scenarios.select()
    present = [k.value for k in kinds() if any(s.proxy.value == k.value for s in every)]
    runs: list[RunPhases] = []
    reference: tuple[tuple[str, str, str], ...] | None = None
    for kind in present:
        runs.append(measure(kind, [s for s in every if s.proxy.value == kind], args.runtime))
    fulls = []
    for i in range(args.repeat):
        r = measure("all", every, args.runtime, seed=i)
        if reference is not None and r.outcomes_key != reference:
            con.print("[bold red]the default matrix's cells differ between two runs of this benchmark[/]")
        reference = r.outcomes_key
        fulls.append(r)
    full = sorted(fulls, key=lambda r: r.wall)[len(fulls) // 2]
    runs.append(full)
    starts = {k: s for k in present if args.alone and (s := alone(k, args.runtime, args.alone))}
    compare = before_after(present, args.before_after) if args.before_after and args.runtime == "local" else ""
    versus = docker_vs_local(args.docker_vs_local, args.hog) if args.docker_vs_local else ""
    compare = "\n\n".join(x for x in (compare, versus) if x)
    load1 = os.getloadavg()
    header, body = rows(runs, starts)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = (
        f"{args.runtime} runtime, {os.cpu_count()} cores, {when}; load average {load0[0]:.1f} before, "
        f"{load1[0]:.1f} after. Default matrix: {full.cells} cells, median of {len(fulls)} runs "
        f"{full.wall:.2f} s (runs {', '.join(f'{r.wall:.2f}' for r in fulls)} s), {full.ms_per_cell:.2f} ms "
        f"and {full.cpu_ms_per_cell:.2f} CPU ms per cell, {full.errors} error and {full.mismatches} "
        f"differing cells. Phases in ms of one run; spawn/listen/ready: the kind's good scenario alone, "
        f"median of {args.alone}."
    )
    con.print(rich_table(header, body, "trustlab: where a matrix's time goes"))
    con.print(note, soft_wrap=True)
    if compare:
        con.print(compare, soft_wrap=True)
    if args.write_docs:
        write_docs(args.write_docs, markdown(header, body, note) + (f"\n{compare}\n" if compare else ""))
        con.print(f"wrote the table into {args.write_docs}")
    return 1 if any(r.mismatches for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
