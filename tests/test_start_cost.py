"""The lab's start-cost savings change no verdict (issue 27 item 2).

Envoy starts with ``--concurrency 1 --disable-hot-restart`` (and no admin interface); Traefik is
given a throwaway default certificate (else it generates an RSA-2048 one at every start). Each
kind's built-in scenarios run twice in one test, the kind's plain start then the lab's, on the
same lab PKI, and every cell (scenario x identity: outcome, status, SNI, TLS version) must be the
same. What the savings are worth is a benchmark's figure (benchmarks/bench_phases.py), not a
timed test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import REQUIRE_PROXIES

from harness import runner, scenarios
from harness.proxies import RenderContext, driver
from harness.runtimes.contract import ProxySpec
from harness.runtimes.local import LocalRuntime

KINDS = ("envoy", "traefik")


def _ctx(tmp_path: Path, lean: bool = True) -> RenderContext:
    return RenderContext(run_dir=str(tmp_path), listen="127.0.0.1:20000", ca="/lab/pki/internal-pki.pem",
                         bundle="/lab/pki/system-bundle.pem", backend_ip="10.203.0.10", lean=lean)


# -- what "plain" and "lean" start, without a proxy -------------------------------------------
def test_envoy_plain_command_drops_only_the_start_flags() -> None:
    spec = ProxySpec(key="envoy/good", kind="envoy", listen_port=20007, run_dir="/r", log="/r/access.log",
                     config="/r/envoy.yaml")
    lean, plain = spec.argv(), dataclasses.replace(spec, plain=True).argv()
    assert "--disable-hot-restart" in lean and lean[lean.index("--concurrency") + 1] == "1"
    assert "--disable-hot-restart" not in plain and "--concurrency" not in plain
    # Hot restart binds a domain socket per --base-id: one id per Envoy of a lab (its port).
    assert plain[-2:] == ["--base-id", "20007"]
    # Everything else is kept (config, log flushing, log level).
    assert [a for a in lean if a not in ("--concurrency", "1", "--disable-hot-restart")] == plain[:-2]


def test_other_kinds_have_no_plain_start() -> None:
    for kind in ("nginx", "haproxy", "apache", "caddy", "squid", "trafficserver"):
        argv = ["/bin/x", "-c", "conf"]
        assert driver(kind).plain_command(argv, 20000) == argv


def test_traefik_default_certificate_rendered_only_when_lean(tmp_path: Path) -> None:
    drv, sc = driver("traefik"), scenarios.select(["traefik/good"])[0]
    lean, plain = drv.render(sc, _ctx(tmp_path)), drv.render(sc, _ctx(tmp_path, lean=False))
    assert f'certFile: "{tmp_path}/default-cert.pem"' in lean and f'keyFile: "{tmp_path}/default-key.pem"' in lean
    assert "defaultCertificate" not in plain and "\ntls:" not in plain
    files = drv.extra_files(sc, _ctx(tmp_path))
    assert files["default-cert.pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in files["default-key.pem"] and "RSA" not in files["default-key.pem"]
    assert drv.extra_files(sc, _ctx(tmp_path, lean=False)) == {}
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = x509.load_pem_x509_certificate(files["default-cert.pem"].encode())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


# -- the same cells, on the real proxies ------------------------------------------------------
def _cells(res: runner.Results) -> dict[tuple[str, str], tuple[str, int | None, str | None, str | None]]:
    return {(c.scenario, c.identity): (c.outcome.value, c.status, c.sni, c.tls) for c in res.cells}


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_lean_start_gives_the_same_cells(kind: str, local_runtime: str) -> None:
    if not driver(kind).find_binary():
        msg = f"{kind} is not installed: {driver(kind).install_hint()}"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    chosen = [s for s in scenarios.select() if s.proxy.value == kind]
    started: dict[bool, list[str]] = {True: [], False: []}
    results = {}
    for plain in (True, False):
        rt = LocalRuntime(plain_start=plain)
        results[plain] = runner.run(chosen, runtime=rt, seed=1,
                                    on_proxy=lambda e, p=plain: started[p].append(e.key) if e.started else None)
    before, after = _cells(results[True]), _cells(results[False])
    assert len(before) == len(after) >= 10 * len(chosen)
    differing = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not differing, f"the lean start changed cells: {differing}"
    # Both runs started their proxies (a run where every proxy refused would compare equal too).
    assert sorted(started[True]) == sorted(started[False]) and len(started[True]) >= len(chosen) - 2
    assert not results[False].mismatches
