"""The display helpers of harness.course.notebook, on synthetic results (no proxy runs here)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from _synthetic import synthetic

import harness
from harness.course.notebook import Picture, Table, scenario_config
from harness.report import COLOR, LABEL, OUTAGE_LABEL
from harness.verdicts import ClaimResult
from harness.vocab import Outcome

matplotlib.use("Agg")


def test_show_cells_is_a_coloured_grid() -> None:
    r = synthetic()
    table = harness.show_cells(r, ["nginx/good", "nginx/verify-off"])
    assert [row[0] for row in table.rows] == ["nginx/good", "nginx/verify-off"]
    html = table._repr_html_()
    assert COLOR[Outcome.SPOOFED] in html  # spoofed cells in the spoofed colour
    assert "SPOOFED" in str(table)


def test_show_cells_names_a_missing_scenario() -> None:
    with pytest.raises(KeyError, match="nginx/nope"):
        harness.show_cells(synthetic(), ["nginx/nope"])


def test_backend_saw_lists_every_identity() -> None:
    table = harness.backend_saw(synthetic(), "nginx/verify-off")
    assert len(table) == 10
    assert {row[3] for row in table.rows} == {"(no SNI)"}
    with pytest.raises(KeyError):
        harness.backend_saw(synthetic(), "nginx/absent")


def test_plot_grid_returns_a_figure() -> None:
    fig = harness.plot_grid(synthetic(), ["apache/good"], identities=["legit", "wildcard"])
    assert fig.axes and fig.axes[0].get_yticklabels()[0].get_text() == "apache/good"


def _texts(fig) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.get_text() for t in fig.axes[0].texts]


def test_the_picture_has_alt_text_labels_dividers_and_only_shown_outcomes() -> None:
    pic = harness.plot_grid(synthetic(), ["apache/seed-recipe", "apache/good", "nginx/good"])
    assert isinstance(pic, Picture)
    assert "<img " in pic._repr_html_() and "alt='Heatmap of 3 scenarios" in pic._repr_html_()
    ax = pic.axes[0]
    labels = _texts(pic)
    # One label per cell run (10 built-in identities a row; a good row also runs its optional
    # ones), plus the two column-group headings and two proxy names.
    from harness.scenarios import resolve
    from harness.vocab import IDENTITY_IDS

    run = sum(
        len(IDENTITY_IDS) + len(resolve(s).optional_identities)
        for s in ("apache/seed-recipe", "apache/good", "nginx/good")
    )
    cell_labels = [t for t in labels if t.rstrip("!") in {*LABEL.values(), OUTAGE_LABEL}]
    assert len(cell_labels) == run == 36
    assert {"legitimate", "impostors", "nginx", "apache"} <= set(labels)
    assert OUTAGE_LABEL in labels  # apache/seed-recipe refuses the legitimate backend
    # Rows grouped by proxy: nginx first, then apache, whatever the order asked for.
    assert [t.get_text() for t in ax.get_yticklabels()] == ["nginx/good", "apache/seed-recipe", "apache/good"]
    assert ax.get_xlabel() and ax.get_ylabel()
    legend = [t.get_text() for t in pic.figure.legends[0].get_texts()]
    assert not any("cfg-rej" in t or "ERROR" in t for t in legend)  # not in this picture
    assert any(t.startswith(OUTAGE_LABEL) for t in legend) and any(t.startswith("SPOOFED") for t in legend)


def test_claims_table_iterates_claim_results() -> None:
    table = harness.claims(synthetic())
    assert isinstance(table, Table) and len(table) == 8
    assert all(isinstance(c, ClaimResult) for c in table)
    assert "partly true" in table._repr_html_()


def test_scenario_config_shows_the_trust_lines() -> None:
    text = scenario_config("nginx/good")
    assert "proxy_ssl_verify on;" in text and "/lab/internal-pki.pem" in text
    assert "proxy_pass https://backend-api.internal:" in text
    card = harness.show_scenario("apache/seed-recipe")
    assert "ProxyPreserveHost On" in card.config and "SSLProxyVerifyDepth" not in card.config
    assert card.sources and "<pre>" in card._repr_html_()


def test_run_scenario_needs_an_id() -> None:
    with pytest.raises(harness.LabError):
        harness.run_scenario()


def test_choose_runtime_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    for value in ("local", "docker", " Docker "):
        monkeypatch.setenv("TRUSTLAB_RUNTIME", value)
        assert harness.choose_runtime(say=said.append) == value.strip().lower()
    assert said[0] == "runtime: local (TRUSTLAB_RUNTIME=local)"


def test_choose_runtime_auto_is_the_clis_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import runner

    monkeypatch.setattr(runner, "resolve_auto", lambda: ("local", "docker unavailable: no daemon"))
    said: list[str] = []
    for value in (None, "", "auto"):
        if value is None:
            monkeypatch.delenv("TRUSTLAB_RUNTIME", raising=False)
        else:
            monkeypatch.setenv("TRUSTLAB_RUNTIME", value)
        assert harness.choose_runtime(say=said.append) == "local"
    assert said == ["runtime: local (docker unavailable: no daemon)"] * 3
    monkeypatch.setattr(runner, "resolve_auto", lambda: ("docker", "docker daemon answers"))
    assert harness.choose_runtime(say=None) == "docker"


def test_choose_runtime_refuses_an_unknown_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTLAB_RUNTIME", "podman")
    with pytest.raises(
        harness.LabError, match="TRUSTLAB_RUNTIME='podman' is unknown; set it to local, docker, remote or auto"
    ):
        harness.choose_runtime()


def test_the_remote_runtime_outside_a_classroom_server_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TRUSTLAB_RUNTIME=remote with no lab service: one line naming the variables, no run."""
    monkeypatch.setenv("TRUSTLAB_RUNTIME", "remote")
    for var in ("TRUSTLAB_GRADER_URL", "TRUSTLAB_GRADER_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(
        harness.LabError, match="^the remote runtime needs TRUSTLAB_GRADER_URL and TRUSTLAB_GRADER_TOKEN"
    ):
        harness.choose_runtime()
    # A service that is not there: the run says so in one line (a closed loopback port).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TRUSTLAB_GRADER_URL", f"http://127.0.0.1:{port}/services/grader")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    with pytest.raises(
        harness.LabError, match=f"^lab service at http://127.0.0.1:{port}/services/grader: cannot reach it"
    ):
        harness.run_scenario("nginx/good", runtime="remote")
    # A scenario file is not sent: only built-in ids cross.
    with pytest.raises(harness.LabError, match="the remote runtime runs built-in scenarios only"):
        copy = tmp_path / "good.toml"
        copy.write_text(_scenario_file().read_text())
        harness.run_scenario(str(copy), runtime="remote")


def _scenario_file() -> Path:
    from harness import scenarios

    return Path(scenarios.builtin()["nginx/good"].path)
