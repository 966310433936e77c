"""Synthetic results for tests that must not start proxies.

Every built-in scenario with its *expected* outcomes (the scenario files were written from live
runs), and the SNI a backend sees set to ``None`` in the scenarios that send none.
"""

from __future__ import annotations

from harness import scenarios
from harness.results import Cell, Results
from harness.vocab import BACKEND_NAME, Outcome

# Scenarios whose proxy sends no SNI (what the live run records).
NO_SNI = {
    "nginx/verify-off",
    "nginx/no-sni",
    "nginx/no-sni-routed",
    "nginx/ip-target",
    "apache/ip-target",
    "haproxy/ca-only",
    "haproxy/verify-none",
    "haproxy/defaults",
    "nginx/verify-no-ca",
}


def synthetic() -> Results:
    cells = []
    for sc in scenarios.select():
        for ident, outcome in sc.expected.items():
            handshake = outcome is not Outcome.CONFIG_REJECTED
            cells.append(
                Cell(
                    scenario=sc.id,
                    proxy=sc.proxy.value,
                    variant=sc.variant,
                    identity=ident,
                    outcome=outcome,
                    expected=outcome,
                    status=200 if outcome in (Outcome.SERVED, Outcome.SPOOFED) else None,
                    reason="synthetic",
                    sni=BACKEND_NAME if handshake and sc.id not in NO_SNI else None,
                    tls="TLSv1.2" if handshake else None,
                    duration_s=0.0,
                )
            )
    return Results(meta={"runtime": "synthetic"}, cells=cells)
