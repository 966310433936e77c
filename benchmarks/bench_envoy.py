"""Benchmark Envoy's start: how soon it is ready, in the lab and with each start-up flag.

    python benchmarks/bench_envoy.py [--repeat N]

1. In the lab: ``envoy/good`` alone (one shard, ``legit`` only), N times; the worker's
   ``start_s`` is exec to the listener accepting a connection (the readiness the lab uses).
2. Outside the lab, on this host's loopback (no sandbox), the same rendered config with each
   combination of the flags that could matter (``--concurrency``, ``--disable-hot-restart``),
   and three readiness signals: the listener accepting, the ``starting main dispatch loop`` log
   line, and the admin interface's ``/ready`` answering ``LIVE`` (the admin is added only here).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import runner, scenarios
from harness.pki import BUNDLE_FILE, CA_FILE, LabPKI
from harness.proxies import RenderContext, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_lab(repeat: int) -> list[float]:
    starts: list[float] = []
    good = scenarios.select(["envoy/good"])
    for _ in range(repeat):
        runner.run(
            good,
            runtime="local",
            identities=("legit",),
            shards=1,
            on_proxy=lambda e: starts.append(float(e.start_s)) if e.started and e.start_s is not None else None,
        )
    return starts


def one_start(binary: str, config: Path, port: int, admin: int, flags: list[str], log: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([binary, "-c", str(config), "-l", "info", *flags], stdout=fh, stderr=subprocess.STDOUT)
    try:
        while len(out) < 3 and time.perf_counter() - t0 < 20:
            now = time.perf_counter() - t0
            if "listener" not in out:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                        out["listener"] = now
                except OSError:
                    pass
            if "log" not in out and b"starting main dispatch loop" in log.read_bytes():
                out["log"] = now
            if "ready" not in out:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=0.05) as r:
                        if r.read().strip() == b"LIVE":
                            out["ready"] = now
                except OSError:
                    pass
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-500:])
            time.sleep(0.001)
    finally:
        proc.terminate()
        proc.wait()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10, help="starts per measurement (default 10)")
    args = ap.parse_args()
    drv = driver("envoy")
    binary = drv.find_binary()
    if not binary:
        print(f"envoy is not installed: {drv.install_hint()}")
        return 2
    print(f"envoy {drv.version()} ({drv.tls_library()}), {os.cpu_count()} cores, {args.repeat} starts each")
    lab = sorted(in_lab(args.repeat))
    print(
        f"in the lab (sandboxed, --concurrency 1 --disable-hot-restart), exec -> listener accepting: "
        f"median {statistics.median(lab) * 1000:.0f} ms (min {lab[0] * 1000:.0f}, max {lab[-1] * 1000:.0f})"
    )
    with tempfile.TemporaryDirectory(prefix="bench-envoy-") as tmp:
        base = Path(tmp)
        pki = LabPKI.mint(backend_ip="127.0.0.1")
        pki_dir = pki.write_to(base / "pki")
        port, admin = free_port(), free_port()
        ctx = RenderContext(
            run_dir=str(base),
            listen=f"127.0.0.1:{port}",
            ca=str(pki_dir / CA_FILE),
            bundle=str(pki_dir / BUNDLE_FILE),
            backend_ip="127.0.0.1",
        )
        text = drv.render(scenarios.select(["envoy/ip-target"])[0], ctx)
        config = base / "envoy.yaml"
        config.write_text(
            f"admin:\n  address:\n    socket_address: {{address: 127.0.0.1, port_value: {admin}}}\n{text}"
        )
        variants = {
            "defaults (hot restart on, one worker per core)": [],
            "--concurrency 1": ["--concurrency", "1"],
            "--disable-hot-restart": ["--disable-hot-restart"],
            "--concurrency 1 --disable-hot-restart (the lab's)": ["--concurrency", "1", "--disable-hot-restart"],
        }
        for label, flags in variants.items():
            runs = []
            for i in range(args.repeat):
                base_id = ["--base-id", str(os.getpid() % 10000 + i)] if "--disable-hot-restart" not in flags else []
                runs.append(one_start(binary, config, port, admin, [*flags, *base_id], base / "envoy.log"))
            cols = []
            for signal in ("listener", "log", "ready"):
                xs = [r[signal] for r in runs if signal in r]
                cols.append(f"{signal} {statistics.median(xs) * 1000:.0f} ms" if xs else f"{signal} -")
            print(f"  {label:<52} median: " + ", ".join(cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
