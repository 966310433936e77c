"""Golden ``adapt()`` outputs: every config under tests/configs, through its kind's adapter, compared
with tests/golden/adapt/<kind>/<name>.out (the adapted config text and its extra files, the notes,
the upstreams found and the listeners). No proxy runs: this pins what the adapters write, so a
refactoring of them shows every byte it changes.

Regenerate after an intended change, then read the diff before committing it::

    TRUSTLAB_GOLDEN=update .venv/bin/python -m pytest tests/test_adapt_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.configs import adapter
from harness.configs.base import Adapted, LabPaths, Ports
from harness.errors import ConfigError

HERE = Path(__file__).parent
CONFIGS = HERE / "configs"
GOLDEN = HERE / "golden" / "adapt"
UPDATE = os.environ.get("TRUSTLAB_GOLDEN") == "update"
#: Fixed lab paths: an adapted config names these, never a temp directory.
LAB = LabPaths(
    run_dir=Path("/LAB/run"),
    ca=Path("/LAB/pki/ca.pem"),
    bundle=Path("/LAB/pki/system-bundle.pem"),
    ca_dir=Path("/LAB/pki/ca-dir"),
    bundle_dir=Path("/LAB/pki/bundle-dir"),
    cert=Path("/LAB/front/cert.pem"),
    key=Path("/LAB/front/key.pem"),
    combined=Path("/LAB/front/combined.pem"),
    crl_chain=Path("/LAB/pki/crl-chain.pem"),
    crl_leaf=Path("/LAB/pki/crl-intermediate.pem"),
)
#: Each kind's configs (globs under tests/configs).
KINDS = {
    "nginx": ["nginx-*.conf", "matchers/nginx-*.conf", "adapt/nginx-*.conf"],
    "apache": ["apache-*.conf", "matchers/apache-*.conf", "adapt/apache-*.conf"],
    "haproxy": ["haproxy-*.cfg", "matchers/haproxy-*.cfg", "adapt/haproxy-*.cfg"],
    "caddy": ["caddy/*", "adapt/Caddyfile.*"],
    "envoy": ["envoy/*", "matchers/envoy-*.yaml"],
    "traefik": [
        "traefik/*.yml",
        "traefik/*.toml",
        "traefik/conf.d/*.yml",
        "matchers/traefik-*.yml",
        "adapt/traefik-*.yml",
    ],
    "squid": ["squid/*.conf", "adapt/squid-*.conf"],
    "trafficserver": ["trafficserver/*/records.*", "adapt/trafficserver-*/records.*"],
}


def _cases() -> list[tuple[str, Path]]:
    found = [(kind, p) for kind, globs in KINDS.items() for g in globs for p in sorted(CONFIGS.glob(g))]
    return [(kind, p) for kind, p in found if p.is_file()]


def _golden_name(kind: str, path: Path) -> Path:
    rel = path.relative_to(CONFIGS).as_posix().replace("/", "__")
    return GOLDEN / kind / f"{rel}.out"


def _render(adapted: Adapted) -> list[str]:
    out = ["== notes"]
    out += [f"- {n}" for n in adapted.adaptations]
    out.append("== upstreams")
    for u in adapted.upstreams:
        r = u.route
        route = f"{r.listener} tls={r.tls} {r.describe()}" if r else f"unroutable: {u.why_unroutable}"
        out.append(
            f"- {u.label} | {u.address} | line {u.line}{' of ' + u.file if u.file else ''} | name {u.name}"
            f" | pool {u.pool or '-'} | {route}"
        )
    others = getattr(adapted, "other_hosts", None)
    if others:
        out.append(f"== other hosts: {', '.join(others)}")
    out.append("== listeners: " + ", ".join(f"{k}->{v}" for k, v in adapted.listeners.items()))
    out.append(f"== config {adapted.config_name or '(driver default)'}")
    out += adapted.text.splitlines()
    for name, body in adapted.extra_files.items():
        out.append(f"== file {name}")
        out += body.splitlines()
    return out


def _run(kind: str, path: Path) -> str:
    adapt = adapter(kind)
    try:
        adapted = adapt(path, LAB, ports=Ports())
    except ConfigError as exc:
        return f"ConfigError: {exc}\n"
    out = _render(adapted)
    # One more run probing the first pool member alone (others marked down / out of rotation).
    pool = next((u.pool for u in adapted.upstreams if u.pool), "")
    if pool:
        out += [f"==== focus {pool}", *_render(adapt(path, LAB, ports=Ports(), focus=pool))]
    text = "\n".join(out) + "\n"
    return text.replace(str(CONFIGS), "<configs>")


CASES = _cases()


@pytest.mark.parametrize(("kind", "path"), CASES, ids=[f"{k}:{p.relative_to(CONFIGS)}" for k, p in CASES])
def test_adapt_matches_golden(kind: str, path: Path) -> None:
    got = _run(kind, path)
    golden = _golden_name(kind, path)
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
    assert golden.exists(), f"no golden file {golden}; regenerate: TRUSTLAB_GOLDEN=update pytest {__file__}"
    want = golden.read_text()
    assert got == want, f"{path}: adapt() output differs from {golden} (regenerate if intended)"


def test_every_golden_file_has_a_config() -> None:
    """A golden file whose config was removed or renamed is stale, not silently kept."""
    expected = {_golden_name(k, p) for k, p in CASES}
    stale = sorted(str(p) for p in GOLDEN.rglob("*.out") if p not in expected)
    assert not stale, f"golden files without a config: {stale}"
    assert len(expected) >= 40
