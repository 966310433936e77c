"""Load on the classroom server: N simulated attendees through the hub's REST API and the grader.

    python benchmarks/bench_hub.py [--attendees 5 10] [--attempts 2] [--image ID]

For each N: a hub on 127.0.0.1 (its own state directory), N attendees created and their servers
spawned through the hub's REST API (the instructor's token), then each attendee, with a token of
their own scoped to the grader, sends ``--attempts`` attempts at once (a wrong one, then the
reference solution, alternating), as their server's ``trustlab challenge check`` would. Prints,
per N: spawn time, grading latency p50/p95/max, failures (an HTTP error, or a wrong grade: the
wrong attempt solved or the solution not), memory per attendee server (docker stats), and the
grader's own memory. Traffic stays on this machine (loopback and the hub's docker network).
Figures, not a pass/fail; the hub is stopped at the end of each N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.course import challenges, classroom, hub
from harness.runtimes import images

CHALLENGE = "nginx-ca-without-verify"


def _grade(url: str, token: str, config: str) -> tuple[float, dict[str, Any] | None, str]:
    req = urllib.request.Request(
        f"{url}/grade",
        data=json.dumps({"id": CHALLENGE, "config": config}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            data = json.loads(resp.read())
    except Exception as exc:  # noqa: BLE001 - counted as a failure with its reason
        return time.perf_counter() - t0, None, str(exc)
    return time.perf_counter() - t0, data, ""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(n: int, *, attempts: int, image: str) -> dict[str, Any]:
    ch = challenges.get(CHALLENGE)
    right, wrong = ch.solution_file.read_text(), ch.start_file.read_text()
    state = Path(tempfile.mkdtemp(prefix="hubbench-"))
    served = hub.serve(port=_free(), bind="127.0.0.1", image=image, state=state, progress=lambda _: None)
    s, admin = served.settings, hub.admin_token(state)
    try:
        names = [f"load-{i:02d}" for i in range(1, n + 1)]
        hub.api(s, admin, "POST", "/hub/api/users", {"usernames": names})
        t0 = time.perf_counter()
        for name in names:
            hub.api(s, admin, "POST", f"/hub/api/users/{name}/server")
        pending = set(names)
        while pending and time.perf_counter() - t0 < 600:
            for name in sorted(pending):
                if (hub.api(s, admin, "GET", f"/hub/api/users/{name}").get("servers") or {}).get("", {}).get("ready"):
                    pending.discard(name)
            time.sleep(0.5)
        spawn_s = time.perf_counter() - t0
        tokens = {
            name: hub.api(
                s,
                admin,
                "POST",
                f"/hub/api/users/{name}/tokens",
                {"scopes": [f"access:services!service={hub.SERVICE}"], "note": "bench"},
            )["token"]
            for name in names
        }
        jobs = [(name, k % 2 == 1) for k in range(attempts) for name in names]
        t1 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda j: (j, _grade(s.grader_url, tokens[j[0]], right if j[1] else wrong)), jobs))
        wall = time.perf_counter() - t1
        lat = [r[1][0] for r in results]
        failures = [
            f"{name}: {why or ('solved' if data and data.get('solved') else 'not solved')}"
            for (name, is_right), (_, data, why) in results
            if data is None or bool(data.get("solved")) != is_right or (is_right and not data.get("flag"))
        ]
        c = images.client()
        mem = []
        for ct in c.containers.list(filters={"label": f"{hub.LABEL}={s.instance}"}):
            mem.append(ct.stats(stream=False)["memory_stats"].get("usage", 0) / 2**20)
        return {
            "attendees": n,
            "spawn_s": round(spawn_s, 1),
            "not_ready": sorted(pending),
            "attempts": len(jobs),
            "grading_wall_s": round(wall, 1),
            "p50_s": round(statistics.median(lat), 2),
            "p95_s": round(_pct(lat, 0.95), 2),
            "max_s": round(max(lat), 2),
            "failures": failures,
            "server_mem_mib_mean": round(statistics.mean(mem), 0) if mem else None,
            "server_mem_mib_max": round(max(mem), 0) if mem else None,
        }
    finally:
        hub.stop(state=state)


def _free() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attendees", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--attempts", type=int, default=2, help="attempts per attendee, sent at once (default 2)")
    ap.add_argument("--image", help="classroom image id (default: build trustlab/classroom:current when needed)")
    args = ap.parse_args()
    image = args.image
    if not image:
        classroom.build(progress=lambda _: None)
        image = images.client().images.get(classroom.IMAGE).id
    for n in args.attendees:
        print(json.dumps(run(n, attempts=args.attempts, image=image)), flush=True)


if __name__ == "__main__":
    main()
