"""Record what the real local runtime answers, for the fake runtime's replay tests.

``python tests/record_fake.py --write`` runs real nginx and HAProxy labs (a few scenarios, three
``check`` configs and one challenge's attempts, right and wrong) through
:class:`harness.runtimes.base.Recorder` and writes ``tests/data/recorded_local.json``: the
recording, and what the live run concluded from it (cells, check verdicts, grades), which
``tests/test_fake_runtime.py`` requires the replay to conclude again. Re-record after a change
that alters these cells (the test names this command when a replay misses a cell).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "recorded_local.json"
SCENARIOS = ["nginx/good", "nginx/ca-without-verify", "haproxy/ca-only"]
CONFIGS = [
    ("nginx", "tests/configs/nginx-upstream-good.conf"),
    ("nginx", "tests/configs/nginx-multi-upstream.conf"),
    ("haproxy", "tests/configs/haproxy-verify-none.cfg"),
]
CHALLENGE = "nginx-verify-off"


def attempts(tmp: Path) -> dict[str, Path]:
    """The challenge's attempts by name: its starting config, its solution, the solution with a
    typo in its CA path (nginx refuses to start), and the solution with verification off again."""
    from harness.course import challenges

    ch = challenges.get(CHALLENGE)
    solution = (ch.path / "solution" / "nginx.conf").read_text()
    typo = tmp / "typo.conf"
    typo.write_text(solution.replace(".pem;", ".pm;", 1))
    off = tmp / "verify-off-again.conf"
    off.write_text(solution.replace("proxy_ssl_verify on;", "proxy_ssl_verify off;"))
    return {"start": ch.path / "nginx.conf", "solution": ch.path / "solution" / "nginx.conf", "typo": typo, "off": off}


def conclusions(runtime: Any, tmp: Path) -> dict[str, Any]:
    """What trustlab concludes on *runtime*: the matrix cells, each check's cells and refusal,
    and each attempt's grade."""
    from harness import check, runner, scenarios
    from harness.course import challenges

    results = runner.run(scenarios.select(SCENARIOS), runtime=runtime)
    checked = {cfg: check.check(kind, ROOT / cfg, runtime=runtime) for kind, cfg in CONFIGS}
    named = attempts(tmp)
    grades = challenges.grade_many(CHALLENGE, list(named.values()), runtime=runtime)
    return {
        "cells": {f"{c.scenario} {c.identity}": [c.outcome.value, c.reason] for c in results.cells},
        "checks": {
            cfg: {"rejected": r.rejected, "cells": [[c.upstream, c.identity, c.outcome.value] for c in r.cells]}
            for cfg, r in checked.items()
        },
        "grades": {name: g.solved for name, g in zip(named, grades, strict=True)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    from harness.runtimes.base import Recorder
    from harness.runtimes.local import LocalRuntime

    recorder = Recorder(LocalRuntime())
    with tempfile.TemporaryDirectory() as tmp:
        live = conclusions(recorder, Path(tmp))
    data = {"recording": recorder.dump(), "live": live}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if args.write:
        OUT.write_text(text)
        print(
            f"wrote {OUT.relative_to(ROOT)}: {len(recorder.scenario_cells)} scenario cells, "
            f"{len(recorder.config_cells)} config cells, {len(recorder.refusals)} refusals"
        )
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
