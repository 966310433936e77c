"""What trustlab prints fits 80 columns, has no escapes without colour, and --wide keeps the old
layout; pictures are drawn only when asked. Recorded results (tests/_synthetic.py): no proxy runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from _synthetic import synthetic

from harness import cli, report
from harness.check import CheckCell, CheckResult
from harness.proxies import driver, kinds, names
from harness.report import terminal
from harness.results import Cell, Results
from harness.vocab import Outcome

LONG = (
    "upstream SSL certificate verify error: (21:unable to verify the first certificate) while SSL "
    'handshaking to upstream, client: 127.0.0.1, server: www.trustlab.test, request: "GET / HTTP/1.1"'
)


def recorded(duration: float = 9.8) -> Results:
    r = synthetic()
    r.meta.update(duration_s=duration, runtime="local")
    return r


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def fits(text: str, width: int = 80) -> None:
    too_long = [line for line in lines_of(text) if len(line) > width]
    assert not too_long, too_long[:3]


@pytest.fixture
def fake_matrix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Results:
    """`trustlab matrix` replays the recorded results instead of starting proxies."""
    from harness import runner

    results = recorded()
    monkeypatch.setattr(runner, "run", lambda *a, **k: results)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_COLOR", raising=False)
    return results


def test_matrix_fits_80_columns_grouped_by_kind(
    fake_matrix: Results, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["matrix", "--runtime", "local", "--json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert code == 0
    fits(out)
    assert "\x1b" not in out  # not a terminal: plain text
    kinds_seen = {c.proxy for c in fake_matrix.cells}
    assert all(any(line.startswith(f"{k}:") for line in lines_of(out)) for k in kinds_seen)
    row = next(line for line in lines_of(out) if line.startswith("verify-off "))
    assert row.split()[1:5] == ["+", "+", "-", "X"]  # LG NC LD rc: legit served, rogue-ca spoofed
    assert "columns: legitimate LG legit, NC legit-no-chain" in " ".join(lines_of(out))
    assert "OUTAGE" in out and f"{len(fake_matrix.cells)} cells" in out
    # --json alone draws nothing (the picture is asked for with --png, --poster or --out).
    assert json.loads((tmp_path / "m.json").read_text())["cells"]
    assert not list(tmp_path.rglob("*.png")) and "drew" not in out


def test_matrix_wide_keeps_the_long_grid(fake_matrix: Results, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["matrix", "--runtime", "local", "--wide", "--no-plot"]) == 0
    out = capsys.readouterr().out
    header = lines_of(out)[0].split()
    assert header[:3] == ["legit", "legit-no-chain", "rogue-ca"]
    assert any(line.startswith("nginx/verify-off ") and "SPOOFED" in line for line in lines_of(out))
    assert max(len(line) for line in lines_of(out)) > 200


def test_matrix_png_draws_the_summary_and_says_what_it_cost(
    fake_matrix: Results, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "s.png"
    assert cli.main(["matrix", "--runtime", "local", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    fits(out)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "drew the summary picture" in out and "of the cells' 9.8 s" in out
    assert not (tmp_path / "results" / "matrix-poster.png").exists()


def test_no_color_means_no_escape_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    r = recorded()
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = Tty()
    terminal.matrix_grid(r, terminal.console(coloured, width=80))
    assert "\x1b[" in coloured.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Tty()
    terminal.matrix_grid(r, terminal.console(plain, width=80))
    assert "\x1b" not in plain.getvalue()
    fits(plain.getvalue())


def test_every_identity_has_a_distinct_two_letter_header() -> None:
    from harness.vocab import ALL_IDENTITY_IDS

    got = terminal.abbreviations([*ALL_IDENTITY_IDS, "nul-san", "nul-something"])
    assert len(set(got.values())) == len(got) and all(len(a) <= 2 for a in got.values())


def _cell(identity: str, outcome: Outcome, *, expected: Outcome | None = None, reason: str = LONG) -> Cell:
    return Cell(
        scenario="nginx/good",
        proxy="nginx",
        variant="good",
        identity=identity,
        outcome=outcome,
        expected=expected or outcome,
        status=502,
        reason=reason,
        sni="backend-api.internal",
        tls="TLSv1.3",
        duration_s=0.01,
    )


def test_run_folds_long_evidence_under_its_cell() -> None:
    cells = [
        _cell("legit-no-chain", Outcome.BLOCKED),
        _cell("rogue-ca", Outcome.SPOOFED, expected=Outcome.BLOCKED, reason="response from impostor rogue-ca"),
    ]
    text = terminal.to_text(lambda out: terminal.cell_evidence(cells, out))
    fits(text)
    first, *folded = lines_of(text)
    assert first.split()[:3] == ["legit-no-chain", "blocked", "(outage)"]
    assert " ".join(w for line in folded for w in line.split()).startswith(" ".join(LONG.split()[:12]))
    assert "<-- expected blocked" in text


def test_check_heads_each_upstream_with_its_line() -> None:
    ups = ["https://pool -> a.svc.internal:8443 (location /pool/, line 11)", "https://10.1.2.3:9443 (server, line 18)"]
    result = CheckResult(
        proxy="nginx",
        config="site.conf",
        adaptations=["line 7: listen 443 ssl -> listen 127.0.0.1:20000 ssl " * 2],
        cells=[
            CheckCell(u, i, Outcome.BLOCKED if i != "legit" else Outcome.SERVED, 502, LONG, "a.svc.internal")
            for u in ups
            for i in ("legit", "rogue-ca")
        ],
        upstream_info=[
            {
                "label": ups[0],
                "line": 11,
                "text": "proxy_pass https://pool;",
                "server": "www.example.com",
                "name": "a.svc.internal",
            },
            {"label": ups[1], "line": 18, "text": None, "server": "www.example.com", "name": "backend-api.internal"},
        ],
    )
    text = terminal.to_text(lambda out: terminal.check_report(result, out))
    fits(text)
    assert f"upstream 1 of 2: {ups[0]}" in text and f"upstream 2 of 2: {ups[1]}" in text
    assert "line 11: proxy_pass https://pool;" in text and "reached as www.example.com" in text
    assert lines_of(text)[-2].startswith("PASS ")


def test_diff_of_two_recorded_runs_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = recorded(), recorded()
    b.cells = [
        c if c.scenario != "nginx/good" else Cell(**{**c.__dict__, "outcome": Outcome.SPOOFED, "reason": LONG})
        for c in b.cells
    ]
    report.write_json(a, tmp_path / "a.json")
    report.write_json(b, tmp_path / "b.json")
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    fits(out)
    assert "nginx/good x" in out and "-> spoofed" in out
    assert cli.main(["diff", "--wide", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert max(len(line) for line in lines_of(capsys.readouterr().out)) > 80


def test_help_names_every_kind_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(k.value in text for k in kinds())
    assert all(driver(k).config_name in text for k in kinds() if driver(k).config_module)
    for command in ("matrix", "diff", "audit"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(n in text for n in names()), command


def test_the_summary_picture_fits_a_laptop_screen_and_explains_legit_no_chain(tmp_path: Path) -> None:
    r = recorded()
    img = report.summary_picture(r)
    assert img.size[0] <= 1366 and img.size[1] <= 700
    kinds_, columns, table = report.summary_table(r)
    assert report.NO_CHAIN in columns and report.LEGIT_REFUSED in columns
    nginx = table[kinds_.index("nginx")]
    hit, ran = nginx[columns.index(next(c for c in columns if c.startswith("untrusted")))]
    spoofed = {
        c.scenario
        for c in r.cells
        if c.proxy == "nginx" and c.identity in ("rogue-ca", "self-signed") and c.outcome is Outcome.SPOOFED
    }
    assert hit == len(spoofed) and ran == len({c.scenario for c in r.cells if c.proxy == "nginx"})
    path = tmp_path / "summary.png"
    assert report.draw(r, path) == [path] and path.read_bytes()[:4] == b"\x89PNG"


def test_the_legend_under_the_summary_says_what_legit_no_chain_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageDraw

    said: list[str] = []
    real = ImageDraw.ImageDraw.multiline_text

    def spy(self, xy, text, *a, **k):  # type: ignore[no-untyped-def]
        said.append(text)
        return real(self, xy, text, *a, **k)

    monkeypatch.setattr(ImageDraw.ImageDraw, "multiline_text", spy)
    report.summary_picture(recorded())
    legend = " ".join(said)
    assert "legit-no-chain is the legitimate backend forgetting" in legend and "OUTAGE" in legend


def test_progress_draws_on_a_terminal_and_is_silent_in_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    quiet = terminal.Progress(3)
    for _ in range(3):
        quiet.step("nginx/good")
    quiet.close()
    assert pipe.getvalue() == "" and quiet.done == 3
    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    bar = terminal.Progress(3)
    for _ in range(4):  # one more than announced: a counter, never an exception
        bar.step("nginx/good")
    bar.close()
    assert "cells" in tty.getvalue()


def test_a_run_on_two_versions_gets_a_table_per_version() -> None:
    base = [c for c in recorded().cells if c.proxy == "nginx"]
    cells = [
        Cell(**{**c.__dict__, "proxy_version": v, "tls_library": "OpenSSL 3.0"})
        for v in ("1.22.1", "1.31.0")
        for c in base
    ]
    text = terminal.to_text(lambda out: terminal.matrix_grid(Results(meta={}, cells=cells), out))
    fits(text)
    assert [line.split(":")[0] for line in lines_of(text) if line.startswith("nginx ")] == [
        "nginx 1.22.1 (OpenSSL 3.0)",
        "nginx 1.31.0 (OpenSSL 3.0)",
    ]
    assert " @" not in text
    assert sum(line.startswith("install-script-bundle-verify-off ") for line in lines_of(text)) == 2
