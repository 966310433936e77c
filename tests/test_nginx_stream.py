"""nginx ``stream {}`` TLS upstreams in ``check`` and ``audit`` (issue 24 item 2): the adapter keeps
the block (listeners moved, trust pointed at the lab), the probe speaks through the TCP proxy (TLS
when the listener has ``ssl``), and the audit rules see the stream servers' trust directives."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.audit import audit
from harness.check import check
from harness.configs import nginx as cf
from harness.configs.base import LabPaths, Ports
from harness.proxies import driver
from harness.vocab import IDENTITY_IDS

CONFIGS = Path(__file__).parent / "configs"


def _lab(tmp_path: Path) -> LabPaths:
    from harness.check import _lab_paths

    return _lab_paths(tmp_path, tmp_path)


def test_adapt_keeps_stream_and_finds_only_tls_upstreams(tmp_path: Path) -> None:
    adapted = cf.adapt(CONFIGS / "nginx-stream-verify.conf", _lab(tmp_path), ports=Ports())
    [up] = adapted.upstreams  # the plain-TCP server (no proxy_ssl) is no TLS upstream
    assert (up.host, up.port, up.name, up.pool) == ("db.internal", 8443, "db.internal", "db_tls|db.internal:8443|5")
    assert up.route is not None and up.route.tls is False and up.route.listener == "5432"
    text = adapted.text
    assert "stream {" in text and "proxy_ssl_verify on;" in text and "proxy_ssl_name db.internal;" in text
    assert f"listen 127.0.0.1:{adapted.listeners['5432']};" in text
    assert "/etc/ssl/internal-ca.pem" not in text and str(tmp_path) in text
    assert any("stream listen 5432" in n for n in adapted.adaptations)
    # The plain-TCP server and its pool are dropped, said so (their names would not resolve in the lab).
    assert "cache.internal" not in text and "6379" not in adapted.listeners
    assert any("without proxy_ssl on dropped" in n for n in adapted.adaptations)
    assert any("stream upstream redis dropped" in n for n in adapted.adaptations)
    tls = cf.adapt(CONFIGS / "nginx-stream-ca-without-verify.conf", _lab(tmp_path), ports=Ports())
    [up] = tls.upstreams
    assert up.route is not None and up.route.tls is True and up.name == "api.internal"
    assert "/etc/ssl/front.pem" not in tls.text


def test_audit_reads_stream_servers() -> None:
    bad = audit(CONFIGS / "nginx-stream-ca-without-verify.conf")
    assert [f.rule for f in bad.findings if f.severity == "high"] == ["nginx-ca-without-verify"]
    good = audit(CONFIGS / "nginx-stream-verify.conf")
    assert not [f for f in good.findings if f.severity == "high"]


def test_stream_module_is_loaded_only_where_it_is_dynamic(tmp_path: Path) -> None:
    from harness.proxies import nginx as drv

    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {}\n")
    assert "-g" not in driver("nginx").command(str(conf), str(tmp_path))
    conf.write_text((CONFIGS / "nginx-stream-verify.conf").read_text())
    argv = driver("nginx").command(str(conf), str(tmp_path))
    binary = argv[0]
    if drv._stream_module(binary):
        assert argv[-2:] == ["-g", f"load_module {drv.STREAM_MODULE};"]
    else:
        assert "-g" not in argv


@pytest.mark.integration
def test_check_stream_verify_blocks_every_impostor(local_runtime: str) -> None:
    result = check("nginx", CONFIGS / "nginx-stream-verify.conf")
    assert result.rejected is None, result.rejected
    got = {c.identity: c.outcome.value for c in result.cells}
    want = {i: "blocked" for i in IDENTITY_IDS} | {"legit": "served"}
    assert got == want, result.summary()
    assert {c.sni for c in result.cells} == {"db.internal"}
    assert all("upstream SSL certificate" in c.reason for c in result.cells if c.outcome.value == "blocked")


@pytest.mark.integration
def test_check_stream_without_verify_is_spoofed_over_a_tls_listener(local_runtime: str) -> None:
    result = check("nginx", CONFIGS / "nginx-stream-ca-without-verify.conf")
    assert result.rejected is None, result.rejected
    got = {c.identity: c.outcome.value for c in result.cells}
    assert got == {i: "served" if i.startswith("legit") else "spoofed" for i in IDENTITY_IDS}, result.summary()
    assert result.ok is False
