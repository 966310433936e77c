"""scenarios/reported/: cases from public threads, with raw config snippets and an optional identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import scenarios
from harness.errors import ScenarioError
from harness.pki import LabPKI
from harness.proxies import RenderContext, driver
from harness.vocab import IDENTITY_IDS

REPORTED = [s for s in scenarios.builtin().values() if s.id.startswith("reported/")]


def test_at_least_ten_reported_cases() -> None:
    cases = [s for s in REPORTED if not s.id.endswith("-fixed")]
    assert len(cases) >= 10


@pytest.mark.parametrize("sc", REPORTED, ids=[s.id for s in REPORTED])
def test_reported_case_is_complete(sc: scenarios.Scenario) -> None:
    assert sc.config.strip(), "a reported case holds its config as reported"
    assert sc.reporter_goal.strip()
    assert any(u.startswith("https://") for u in sc.sources)
    assert sc.control in scenarios.builtin()
    assert set(IDENTITY_IDS) <= set(sc.expected)


@pytest.mark.parametrize("sc", REPORTED, ids=[s.id for s in REPORTED])
def test_reported_config_renders(sc: scenarios.Scenario, tmp_path: Path) -> None:
    ctx = RenderContext(
        run_dir=str(tmp_path),
        listen="127.0.0.1:1",
        ca="/lab/ca.pem",
        bundle="/lab/bundle.pem",
        backend_ip="10.203.0.10",
    )
    text = driver(sc.proxy).render(sc, ctx)
    assert "{" + "ca}" not in text and "{backend" not in text and "{port}" not in text
    first = sc.config.strip().splitlines()[0].split()[0]
    assert first in text


def _parse(extra: dict) -> scenarios.Scenario:
    data = {"proxy": "nginx", "title": "t", "expected": {i: "blocked" for i in IDENTITY_IDS}, **extra}
    return scenarios.parse(data, scenario_id="x/y", where="x.toml")


def test_config_snippet_validation() -> None:
    assert _parse({"config": "proxy_pass {upstream};"}).config
    with pytest.raises(ScenarioError, match="config: give either directives or a raw config snippet"):
        _parse({"config": "proxy_pass {upstream};", "directives": {"proxy_ssl_verify": "on"}})
    with pytest.raises(ScenarioError, match=r"unknown placeholder \{cafile\}"):
        _parse({"config": "proxy_ssl_trusted_certificate {cafile};"})
    with pytest.raises(ScenarioError, match="config_http: needs a config snippet"):
        _parse({"config_http": "upstream u { server x; }"})
    with pytest.raises(ScenarioError, match="only nginx"):
        scenarios.parse(
            {
                "proxy": "apache",
                "title": "t",
                "config": "x",
                "config_http": "y",
                "expected": {i: "blocked" for i in IDENTITY_IDS},
            },
            scenario_id="a/b",
            where="a.toml",
        )


def test_optional_identity_is_opt_in() -> None:
    plain = _parse({})
    assert plain.optional_identities == () and tuple(plain.expected) == IDENTITY_IDS
    deep = _parse({"expected": {**{i: "blocked" for i in IDENTITY_IDS}, "legit-deep": "served"}})
    assert deep.optional_identities == ("legit-deep",)
    with pytest.raises(ScenarioError, match="no outcome for legit"):
        _parse({"expected": {"legit-deep": "served"}})


def test_legit_deep_has_two_intermediates(tmp_path: Path) -> None:
    from cryptography import x509

    assert LabPKI.mint().optional == {}  # minted only when a scenario asks for it
    pki = LabPKI.mint(optional=("legit-deep",))
    chain = x509.load_pem_x509_certificates(pki.identity("legit-deep").chain_pem)
    assert len(chain) == 3  # leaf + two intermediates
    assert set(pki.identities) == set(IDENTITY_IDS)  # built-ins unchanged
    pki.write_to(tmp_path / "pki")
    assert (tmp_path / "pki" / "identities" / "legit-deep.pem").exists()


@pytest.mark.integration
def test_nginx_1409_reproduces(local_runtime: str) -> None:
    from harness import runner

    res = runner.run(
        [scenarios.resolve("reported/nginx-1409"), scenarios.resolve("reported/nginx-1409-fixed")],
        runtime=local_runtime,
    )
    assert not res.mismatches
    blocked = res.cell("reported/nginx-1409", "legit-deep")
    assert "20:unable to get local issuer certificate" in blocked.reason  # the error in the report
    assert res.cell("reported/nginx-1409-fixed", "legit-deep").outcome.value == "served"
