"""Every scenario against the real proxies on the local runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import runner, scenarios
from harness.proxies import driver
from harness.vocab import IDENTITY_IDS, LEGITIMATE_IDS, Outcome

pytestmark = pytest.mark.integration


def test_every_cell_matches_its_scenario(local_matrix: runner.Results) -> None:
    assert len(local_matrix.cells) == sum(len(s.identities) for s in scenarios.builtin().values())
    errors = [c for c in local_matrix.cells if c.outcome is Outcome.ERROR]
    assert not errors, [(c.scenario, c.identity, c.reason) for c in errors]
    assert not local_matrix.mismatches, [
        (c.scenario, c.identity, c.outcome.value, c.expected) for c in local_matrix.mismatches
    ]


def test_good_controls_serve_legit_and_block_the_impostors(local_matrix: runner.Results) -> None:
    for proxy in ("nginx", "apache", "haproxy", "caddy"):
        sid = f"{proxy}/good"
        assert local_matrix.cell(sid, "legit").outcome is Outcome.SERVED
        for ident in IDENTITY_IDS:
            if ident in LEGITIMATE_IDS:
                continue
            outcome = local_matrix.cell(sid, ident).outcome
            if ident == "wildcard" and proxy in ("apache", "haproxy", "caddy"):
                # Apache's and HAProxy's own name matchers, and Go's (Caddy), accept *.internal for
                # backend-api.internal; OpenSSL's (nginx) refuses a wildcard directly under
                # a single label. scenarios/{apache,haproxy,caddy}/good.toml.
                assert outcome is Outcome.SPOOFED
            else:
                assert outcome is Outcome.BLOCKED, (sid, ident)


def test_every_block_carries_the_proxys_own_verification_line(local_matrix: runner.Results) -> None:
    for c in local_matrix.cells:
        if c.outcome is Outcome.BLOCKED:
            assert driver(c.proxy).block_reason(c.reason) is not None, (c.scenario, c.identity, c.reason)
            assert c.status in driver(c.proxy).block_statuses, (c.scenario, c.identity, c.status)


def test_config_rejections_carry_the_proxys_message(local_matrix: runner.Results) -> None:
    assert (
        "no proxy_ssl_trusted_certificate for proxy_ssl_verify"
        in local_matrix.cell("nginx/verify-no-ca", "legit").reason
    )
    assert "verify none" in local_matrix.cell("haproxy/defaults", "legit").reason


def test_sni_the_backend_saw(local_matrix: runner.Results) -> None:
    assert local_matrix.cell("nginx/good", "legit").sni == "backend-api.internal"
    assert local_matrix.cell("nginx/verify-off", "legit").sni is None  # proxy_ssl_server_name off
    assert local_matrix.cell("nginx/no-sni", "legit").sni is None
    assert local_matrix.cell("apache/good", "legit").sni == "backend-api.internal"
    assert local_matrix.cell("apache/preserve-host", "legit").sni == "www.trustlab.test"
    assert local_matrix.cell("apache/ip-target", "legit").sni is None
    assert local_matrix.cell("haproxy/ca-only", "legit").sni is None


def test_shuffled_order_gives_the_same_outcomes(local_matrix: runner.Results) -> None:
    for seed, shards in ((7, 1), (2026, 3)):
        again = runner.run(scenarios.select(), runtime="local", seed=seed, shards=shards)
        assert again.outcomes() == local_matrix.outcomes()


def _trustlab(*args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )  # type: ignore[call-overload]


@pytest.mark.serial  # two full matrices at once: load enough; beside other tests cells may time out
def test_two_labs_at_once_agree(local_runtime: str, tmp_path: Path) -> None:
    procs = [_trustlab("matrix", "--runtime", "local", "--no-plot", "--out", str(tmp_path / f"m{i}")) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a, b = (json.loads((tmp_path / f"m{i}" / "matrix.json").read_text()) for i in range(2))
    key = lambda d: {(c["scenario"], c["identity"]): c["outcome"] for c in d["cells"]}  # noqa: E731
    assert key(a) == key(b)
    assert len(key(a)) == sum(len(s.identities) for s in scenarios.builtin().values())


def _lab_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if marker in ln and "ps -eo" not in ln]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_process_and_no_key(local_runtime: str, tmp_path: Path, sig: int) -> None:
    env = {**os.environ, "TRUSTLAB_TMPDIR": str(tmp_path)}
    proc = _trustlab(
        "matrix", "--runtime", "local", "--no-plot", "--out", str(tmp_path / "out"), env=env, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # Five proxies run (their sandboxes name their run directories; the logs are on each
        # run directory's tmpfs, in the lab worker's mount namespace: issue 26).
        if len([ln for ln in _lab_processes(str(tmp_path)) if "/proxies/" in ln]) >= 5:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the lab never started")
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground process group
    else:
        proc.send_signal(sig)  # a plain kill reaches the trustlab process only
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    time.sleep(0.2)
    assert _lab_processes(str(tmp_path)) == []
    assert list(tmp_path.glob("trustlab-*")) == []
    assert not (tmp_path / "out" / "matrix.json").exists()
