"""The command line: bad input is one line and exit 2; results and files are right."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.vocab import IDENTITY_IDS


def trustlab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


BAD_ARGS = {
    "unknown id": (["run", "nginx/verify-offf"], "neither a scenario id nor a file"),
    "unknown proxy": (["matrix", "--proxy", "lighty", "--runtime", "local"], "--proxy: 'lighty' is unknown"),
    "unknown identity": (
        ["run", "nginx/good", "--identity", "rouge-ca", "--runtime", "local"],
        "--identity: 'rouge-ca' is unknown",
    ),
    "bad runtime": (["matrix", "--runtime", "podman"], "invalid choice"),
    "unknown command": (["frobnicate"], "invalid choice"),
    "missing file": (["run", "/nonexistent/x.toml"], "no such file"),
    "directory": (["run", "/tmp"], "is a directory"),
    "json into missing dir": (
        ["run", "nginx/good", "--runtime", "local", "--json", "/nonexistent/d/x.json"],
        "does not exist",
    ),
    "pki show bad dir": (["pki", "show", "/nonexistent"], "not found"),
    "bad seed": (["matrix", "--seed", "abc"], "invalid int value"),
    "no subcommand": ([], "required"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_input_is_one_line_exit_2(case: str) -> None:
    args, needle = BAD_ARGS[case]
    assert needle in one_line_error(trustlab(*args))


def test_bad_scenario_file_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('proxy = "nginx"\ntitle = "x"\n[expected]\nlegit = "fine"\n')
    line = one_line_error(trustlab("run", str(bad)))
    assert str(bad) in line and "expected.legit" in line and "allowed: served" in line


def test_pki_mint_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    proc = trustlab("pki", "mint", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in out.rglob("*.key"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["identities"]) == list(IDENTITY_IDS)
    assert "already exists" in one_line_error(trustlab("pki", "mint", "--out", str(out)))
    assert [p.name for p in tmp_path.iterdir()] == ["pki"]  # nothing half-written beside it
    show = trustlab("pki", "show", str(out))
    assert show.returncode == 0 and "wrong-name" in show.stdout and "IP:10.203.0.10" in show.stdout


@pytest.mark.integration
def test_run_prints_evidence_per_identity(local_runtime: str, tmp_path: Path) -> None:
    # --json relative to cwd: the last line is "wrote <path>", and under xdist the temporary
    # directory is longer (.../popen-gw0/...): it made that line 85 wide, not the table.
    proc = trustlab("run", "nginx/verify-off", "--runtime", "local", "--json", "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # Issue 19: one line per cell (SPOOFED shouts), its evidence folded under it, 80 columns.
    rogue = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["rogue-ca"])
    assert "SPOOFED" in rogue and "response from impostor" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    data = json.loads((tmp_path / "r.json").read_text())
    assert {c["identity"] for c in data["cells"]} == set(IDENTITY_IDS)


@pytest.mark.integration
def test_run_exits_1_when_reality_differs(local_runtime: str, tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "scenarios" / "nginx" / "verify-off.toml"
    lie = tmp_path / "verify-off-claims-safe.toml"
    lie.write_text(src.read_text().replace('"rogue-ca" = "spoofed"', '"rogue-ca" = "blocked"'))
    proc = trustlab("run", str(lie), "--runtime", "local")
    assert proc.returncode == 1
    assert "expected blocked" in proc.stdout


@pytest.mark.integration
def test_matrix_writes_json_csv_plot(local_runtime: str, tmp_path: Path) -> None:
    proc = trustlab("matrix", "--runtime", "local", "--proxy", "haproxy", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "matrix.json").read_text())
    # Issue 15 added proxy_versions (every installation the cells ran on); the locked install, lock.
    assert set(data["meta"]) == {
        "trustlab",
        "runtime",
        "versions",
        "started",
        "duration_s",
        "backend_ip",
        "proxy_versions",
        "lock",
    }
    assert [v["proxy"] for v in data["meta"]["proxy_versions"]] == ["haproxy"]
    assert set(data["meta"]["versions"]) >= {"nginx", "apache", "haproxy", "openssl"}
    contract = {
        "scenario",
        "proxy",
        "variant",
        "identity",
        "outcome",
        "expected",
        "status",
        "reason",
        "sni",
        "tls",
        "duration_s",
    }
    # DESIGN's JSON shape is a contract: fields are only added (issue 14: the seat's evidence;
    # issue 15: the proxy's version and TLS library).
    assert set(data["cells"][0]) - contract == {"reuse", "client_cert", "primed", "proxy_version", "tls_library"}
    assert all(c["proxy_version"] == data["meta"]["versions"]["haproxy"] for c in data["cells"])
    assert contract <= set(data["cells"][0])
    assert {c["proxy"] for c in data["cells"]} == {"haproxy"}
    assert (tmp_path / "matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "matrix.csv").read_text().startswith("scenario,proxy,variant,identity,outcome")
    assert any(line.split()[:1] == ["good"] for line in proc.stdout.splitlines())  # the haproxy/good row
    # Issue 23: the results page, beside the rest, and its path on the terminal.
    assert (tmp_path / "index.html").read_text().startswith("<!DOCTYPE html>")
    assert f"results page: {tmp_path / 'index.html'}" in proc.stdout
