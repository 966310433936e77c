"""A refuse-everything attempt against a passing one: grading time per challenge, as a ratio.

    python benchmarks/bench_refusals.py [--repeat N] [--runtime local|docker]

For each challenge below, the reference solution is graded, then the same file with one edit
that makes the proxy refuse every backend (it checks a name no certificate carries, so even
``legit`` is blocked). Both are graded N times (default 3), alternately; the medians and their
ratio are printed (issue 27: refusing is judged in about the time serving is, <= 2x). Figures,
not a pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from harness.course import challenges

#: challenge id -> (text in its solution, replacement that refuses every upstream).
REFUSE: dict[str, tuple[str, str]] = {
    "nginx-verify-off": ("proxy_ssl_server_name on;", "proxy_ssl_server_name on; proxy_ssl_name nobody.example;"),
    "haproxy-verify-none": (
        "sni str(backend-api.internal) verifyhost backend-api.internal",
        "sni str(nobody.example) verifyhost nobody.example",
    ),
    "squid-dont-verify-peer": ("tls-default-ca=off", "tls-default-ca=off tls-domain=nobody.example"),
    "caddy-skip-verify": (
        "tls_trust_pool file /etc/caddy/pki/internal-root.pem",
        "tls_trust_pool file /etc/caddy/pki/internal-root.pem\n\t\t\ttls_server_name nobody.example",
    ),
    "traefik-skip-verify": (
        "        - /etc/traefik/pki/internal-root.pem",
        "        - /etc/traefik/pki/internal-root.pem\n      serverName: nobody.example",
    ),
    "envoy-no-validation": ("exact: backend-api.internal", "exact: nobody.example"),
    "apache-verify-none": ("SSLProxyVerifyDepth 2", "SSLProxyVerifyDepth 0"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--runtime", default="local")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    os.environ.setdefault("TRUSTLAB_STATE_DIR", tempfile.mkdtemp(prefix="trustlab-bench-state-"))
    work = Path(tempfile.mkdtemp(prefix="trustlab-bench-refuse-"))
    ratios = []
    for cid, (old, new) in REFUSE.items():
        if args.only and cid not in args.only:
            continue
        ch = challenges.get(cid)
        text = ch.solution_file.read_text()
        assert old in text, (cid, old)
        refusing = work / cid / ch.solution_file.name
        refusing.parent.mkdir()
        refusing.write_text(text.replace(old, new, 1))
        times: dict[str, list[float]] = {"pass": [], "refuse": []}
        for _ in range(args.repeat):
            for label, path in (("pass", ch.solution_file), ("refuse", refusing)):
                t0 = time.perf_counter()
                g = challenges.grade(ch, path, runtime=args.runtime)
                times[label].append(time.perf_counter() - t0)
                if label == "pass":
                    assert g.solved, cid
                else:  # every identity refused: legit blocked, nothing in error
                    outcomes = {c.identity: c.outcome.value for c in g.cells}
                    assert outcomes and set(outcomes.values()) == {"blocked"}, (cid, outcomes, g.rejected)
        p, r = statistics.median(times["pass"]), statistics.median(times["refuse"])
        ratios.append(r / p)
        print(f"{cid:<24} pass {p:.2f} s  refuse-all {r:.2f} s  ratio {r / p:.2f}x", flush=True)
    print(
        f"ratio refuse/pass: max {max(ratios):.2f}x, median {statistics.median(ratios):.2f}x "
        f"(load {os.getloadavg()[0]:.1f}, runtime {args.runtime})"
    )


if __name__ == "__main__":
    main()
