"""The atlas (issue 23): the results page's data, and the page itself in a real headless Chromium.

The unit tests build :class:`Cell` objects in Python and check the compaction the page embeds.
The browser tests open a page written from a real small local run (file://, no server) with
Debian's ``chromium`` + ``chromium-driver`` through selenium, with explicit paths so
selenium-manager never looks for a driver on the network. In CI (``CI=true`` or
``TRUSTLAB_REQUIRE_BROWSER=1``) a missing browser fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.errors import LabError
from harness.report import page
from harness.results import Cell, Results
from harness.vocab import Outcome

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REQUIRE_BROWSER = IN_CI or os.environ.get("TRUSTLAB_REQUIRE_BROWSER") == "1"
#: Debian's paths, then PATH; TRUSTLAB_CHROMIUM / TRUSTLAB_CHROMEDRIVER name others.
CHROMIUM = ("TRUSTLAB_CHROMIUM", "/usr/bin/chromium", "chromium")
CHROMEDRIVER = ("TRUSTLAB_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
#: A real small run: two proxy kinds, a good control and misconfigurations of each, on every
#: installed version (nginx/keepalive-local changes between nginx versions).
SCENARIOS = [
    "nginx/good",
    "nginx/verify-off",
    "nginx/no-sni",
    "nginx/keepalive-local",
    "haproxy/good",
    "haproxy/verify-none",
    "haproxy/ca-sni",
]
#: The versioned full matrix holds about 3.5k cells (issue 23): the page must stay <= 3 MB and
#: interactive in < 1 s at that size.
FULL_CELLS = 3539


# -- units: the embedded data -----------------------------------------------------------------
def _cell(scenario: str, identity: str, outcome: Outcome, **kw: Any) -> Cell:
    proxy, _, variant = scenario.partition("/")
    base: dict[str, Any] = dict(
        scenario=scenario,
        proxy=proxy,
        variant=variant,
        identity=identity,
        outcome=outcome,
        expected=outcome,
        status=200 if outcome in (Outcome.SERVED, Outcome.SPOOFED) else 502,
        reason=f"reason of {identity}",
        sni="backend-api.internal",
        tls="TLSv1.3",
        duration_s=0.0123,
        proxy_version="1.22.1",
        tls_library="OpenSSL 3.0.19",
    )
    base.update(kw)
    return Cell(**base)


def _results(cells: list[Cell], **meta: Any) -> Results:
    return Results(meta={"versions": {"nginx": "1.22.1", "haproxy": "2.6.12"}, **meta}, cells=cells)


def test_compact_round_trips_cells_and_tables_repeated_values() -> None:
    cells = [
        _cell("nginx/good", i, Outcome.BLOCKED if i != "legit" else Outcome.SERVED, duration_s=0.001 * n)
        for n, i in enumerate(["legit", "rogue-ca", "self-signed", "wrong-name", "expired", "wildcard"])
    ] + [_cell("nginx/verify-off", "rogue-ca", Outcome.SPOOFED, sni=None, reuse="reused connection")]
    dicts = [c.to_dict() for c in cells]
    data = page.compact(dicts)
    assert page.expand(data) == dicts
    assert [Cell.from_dict(d) for d in page.expand(data)] == cells
    cols = data["columns"]
    # Repeated values become one table entry each: 7 cells, 2 scenarios, 3 outcomes.
    assert cols["scenario"]["t"] == ["nginx/good", "nginx/verify-off"]
    assert sorted(cols["outcome"]["t"]) == ["blocked", "served", "spoofed"]
    assert cols["sni"]["t"] == ["backend-api.internal", None]
    # Every value distinct (the durations): a plain column, no table.
    assert "v" in cols["duration_s"] and "t" not in cols["duration_s"]


def test_a_minimal_matrix_file_gets_its_kind_and_variant_from_the_scenario_id() -> None:
    data = page.page_data({"cells": [{"scenario": "nginx/verify-off", "identity": "legit", "outcome": "served"}]})
    assert data["meta"] == {}
    [cell] = page.expand(data["cells"])
    assert (cell["proxy"], cell["variant"]) == ("nginx", "verify-off")


def test_compact_reads_a_missing_field_back_as_none() -> None:
    old = {"scenario": "nginx/good", "identity": "legit", "outcome": "served"}
    new = {**old, "identity": "rogue-ca", "proxy_version": "1.31.3"}
    assert page.expand(page.compact([old, new])) == [{**old, "proxy_version": None}, new]
    assert page.expand(page.compact([])) == []


def test_embedded_json_cannot_close_its_script_element() -> None:
    evil = _cell("nginx/good", "legit", Outcome.ERROR, reason="</script><script>alert(1)</script> <!-- & -->")
    html = page.render(_results([evil]).to_json_dict())
    body = html.split('id="atlas-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body and ">" not in body and "&" not in body
    assert page.expand(json.loads(body)["cells"])[0]["reason"] == evil.reason


def test_page_is_self_contained_and_states_its_policy() -> None:
    html = page.render(_results([_cell("nginx/good", "legit", Outcome.SERVED)]).to_json_dict())
    assert "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'" in html
    lower = html.lower()
    for needle in ("<link", " src=", "@import", "url(", "http://", "//cdn"):
        assert needle not in lower, needle


def test_a_3500_cell_page_stays_under_3_mb() -> None:
    kinds = {"nginx": ["1.22.1", "1.26.3", "1.31.3"], "haproxy": ["2.6.12", "2.8.25", "3.0.11"]}
    idents = [
        "legit",
        "legit-no-chain",
        "rogue-ca",
        "self-signed",
        "wrong-name",
        "expired",
        "not-yet-valid",
        "ip-san",
        "wildcard",
        "public-ca",
    ]
    rng = random.Random(23)
    cells = []
    while len(cells) < FULL_CELLS:
        kind = rng.choice(sorted(kinds))
        n = len(cells)
        cells.append(
            _cell(
                f"{kind}/variant-{n // 100}",
                idents[n % 10],
                rng.choice(list(Outcome)),
                proxy_version=rng.choice(kinds[kind]),
                duration_s=rng.random(),
                reason=f"[error] 12#0: *{n} upstream SSL certificate verify error: (18:self-signed)",
            )
        )
    size = len(page.render(_results(cells).to_json_dict()).encode())
    print(f"page of {len(cells)} cells (every reason line distinct): {size / 1e6:.2f} MB")
    assert size <= 3_000_000


def test_reproduce_names_the_real_cli() -> None:
    meta = {"versions": {"nginx": "1.22.1"}}
    cell = _cell("nginx/verify-off", "rogue-ca", Outcome.SPOOFED).to_dict()
    assert page.reproduce(cell, meta) == "trustlab run nginx/verify-off --identity rogue-ca"
    other = {**cell, "proxy_version": "1.31.3"}
    assert page.reproduce(other, meta) == "trustlab matrix --proxy nginx@1.31.3 --identity rogue-ca"
    from harness.cli import build_parser

    for command in (page.reproduce(cell, meta), page.reproduce(other, meta)):
        args = build_parser().parse_args(command.split()[1:])
        assert args.identity == "rogue-ca"


def test_pages_from_check_and_diff_documents() -> None:
    from harness.versions import diff

    check = {
        "proxy": "nginx",
        "config": "my site.conf",
        "adaptations": [],
        "ok": False,
        "rejected": None,
        "duration_s": 1.0,
        "runtime": "local",
        "proxy_version": "1.22.1",
        "tls_library": "OpenSSL 3.0.19",
        "cells": [
            {
                "upstream": "location / -> backend-api.internal",
                "identity": "rogue-ca",
                "outcome": "spoofed",
                "status": 200,
                "reason": "response from impostor rogue-ca",
                "sni": None,
            }
        ],
    }
    data = page.page_data(check)
    assert data["kind"] == "check"
    [cell] = page.expand(data["cells"])
    assert cell["outcome"] == "spoofed" and cell["proxy"] == "nginx"
    assert page.reproduce(cell, data["meta"], "check") == "trustlab check nginx 'my site.conf'"
    a = [
        c.to_dict()
        for c in (_cell("nginx/good", "legit", Outcome.SERVED), _cell("nginx/good", "legit-no-chain", Outcome.BLOCKED))
    ]
    b = [{**a[0], "proxy_version": "1.31.3"}, {**a[1], "outcome": "served", "proxy_version": "1.31.3"}]
    doc = diff(a, b, a="nginx@1.22", b="nginx@1.31").to_json_dict()
    data = page.page_data(doc)
    assert data["kind"] == "diff"
    cells = page.expand(data["cells"])
    assert [(c["identity"], c["outcome"], c["proxy_version"]) for c in cells] == [
        ("legit-no-chain", "blocked", "nginx@1.22"),
        ("legit-no-chain", "served", "nginx@1.31"),
    ]
    assert page.reproduce(cells[0], data["meta"], "diff") == (
        "trustlab diff nginx@1.22 nginx@1.31 --scenario nginx/good --identity legit-no-chain"
    )


def test_columns_are_legitimate_first_then_impostors_by_class() -> None:
    idents = ["revoked", "wildcard", "legit", "expired", "rogue-ca", "legit-no-chain", "nul-san"]
    cells = [_cell("nginx/good", i, Outcome.BLOCKED) for i in idents]
    columns = page.page_data(_results(cells).to_json_dict())["identities"]
    assert [(c["id"], c["class"]) for c in columns] == [
        ("legit", "legitimate"),
        ("legit-no-chain", "legitimate"),
        ("rogue-ca", "wrong issuer"),
        ("wildcard", "wrong name"),
        ("expired", "not valid now"),
        ("revoked", "revoked"),
        ("nul-san", "other"),
    ]
    assert [c["legitimate"] for c in columns] == [True, True, False, False, False, False, False]


def test_scenario_notes_carry_story_sources_and_delta() -> None:
    notes = page.scenario_notes(["nginx/verify-off", "nginx/good", "no/such"])
    assert "no/such" not in notes
    off = notes["nginx/verify-off"]
    assert off["control"] == "nginx/good"
    assert "- proxy_ssl_verify on" in off["delta"]
    assert any(s.startswith("https://nginx.org/") for s in off["sources"])
    assert "proxy_ssl_verify on" in notes["nginx/good"]["directives"]


def test_load_refuses_what_is_not_a_trustlab_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"cells": [{"scenario": 1}]}')
    with pytest.raises(LabError, match="not a trustlab matrix, diff, check or conformance JSON"):
        page.load(bad)
    bad.write_text("not json")
    with pytest.raises(LabError, match="not JSON"):
        page.load(bad)


# -- a real run, and the page in a real browser ---------------------------------------------------
@pytest.fixture(scope="session")
def small_run(local_runtime: str) -> Results:
    """A real local run of a few scenarios of two proxy kinds."""
    from harness import runner, scenarios

    return runner.run(scenarios.select(SCENARIOS), runtime=local_runtime, all_versions=True)


@pytest.fixture(scope="session")
def page_files(small_run: Results, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The run's JSON, turned into a page by `trustlab report` (the command users run)."""
    from harness import cli, report

    where = tmp_path_factory.mktemp("atlas")
    report.write_json(small_run, where / "matrix.json")
    assert cli.main(["report", str(where / "matrix.json"), "-o", str(where / "index.html")]) == 0
    return where / "index.html", json.loads((where / "matrix.json").read_text())


def _find(names: tuple[str, str, str]) -> str | None:
    env, path, name = names
    if os.environ.get(env):
        return os.environ[env] if os.access(os.environ[env], os.X_OK) else None
    return path if os.access(path, os.X_OK) else shutil.which(name)


def chromium_driver(*extra_args: str) -> Any:
    """Headless Chromium (Debian's) driven by selenium, with *extra_args*; or a skip (a failure
    in CI). tests/test_hub.py starts its browser here too."""
    chromium, driver_path = _find(CHROMIUM), _find(CHROMEDRIVER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:  # pragma: no cover - selenium is a locked dev dependency
        webdriver = None
    if not chromium or not driver_path or webdriver is None:
        msg = (
            "browser test needs chromium, chromium-driver (apt-get install chromium chromium-driver) and "
            "selenium (make venv)"
        )
        if REQUIRE_BROWSER:
            pytest.fail(msg)
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        *extra_args,
    ):
        opts.add_argument(arg)
    # An explicit driver path: selenium-manager is never asked to download anything.
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    """Headless Chromium driven by selenium, or a skip (a failure in CI)."""
    drv = chromium_driver()
    yield drv
    drv.quit()


def _open(drv: Any, path: Path, fragment: str = "") -> dict[str, float]:
    """Load the page from disk; its timings (ms since navigation start)."""
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get(path.as_uri() + fragment)
    WebDriverWait(drv, 10).until(lambda d: d.execute_script("return !!(window.atlas && window.atlas.painted)"))
    return drv.execute_script(
        "var n = performance.getEntriesByType('navigation')[0];"
        "return {ready: window.atlas.ready, painted: window.atlas.painted, dom_interactive: n.domInteractive,"
        " load: n.loadEventEnd};"
    )


def _select(drv: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(drv.find_element(By.ID, element_id)).select_by_value(value)


def _text(drv: Any, field: str) -> str:
    from selenium.webdriver.common.by import By

    return str(drv.find_element(By.CSS_SELECTOR, f'#detail [data-f="{field}"]').text)


@pytest.mark.integration
def test_twenty_cells_match_their_json(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    path, doc = page_files
    cells, meta = doc["cells"], doc["meta"]
    _open(browser, path)
    for k in sorted(random.Random(23).sample(range(len(cells)), 20)):
        cell = cells[k]
        _select(browser, "f-proxy", cell["proxy"])
        _select(browser, "f-identity", cell["identity"])
        shown = browser.find_elements(By.CSS_SELECTOR, "#view-matrix button.c")
        want = [i for i, c in enumerate(cells) if c["proxy"] == cell["proxy"] and c["identity"] == cell["identity"]]
        assert sorted(int(b.get_attribute("data-i")) for b in shown) == want
        browser.find_element(By.CSS_SELECTOR, f'#view-matrix button.c[data-i="{k}"]').click()
        where = f"{cell['scenario']} x {cell['identity']}"
        assert _text(browser, "outcome") == cell["outcome"], where
        assert _text(browser, "reason") == (cell["reason"] or "none"), where
        assert _text(browser, "status") == ("none" if cell["status"] is None else str(cell["status"])), where
        assert _text(browser, "sni") == (cell["sni"] or "none"), where
        assert _text(browser, "command") == page.reproduce(cell, meta), where
        key = f"{cell['scenario']}@{cell['proxy_version'] or ''}:{cell['identity']}"
        href = browser.find_element(By.CSS_SELECTOR, '#detail [data-f="permalink"]').get_attribute("href")
        assert href.endswith("#cell=" + quote(key, safe="~()*!.'")), href
        if cell["identity"] == "legit-no-chain":
            assert "availability" in _text(browser, "no-chain") or cell["outcome"] == "served"


@pytest.mark.integration
def test_permalink_opens_its_cell(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    path, doc = page_files
    cell = next(c for c in doc["cells"] if c["outcome"] == "spoofed")
    key = f"{cell['scenario']}@{cell['proxy_version'] or ''}:{cell['identity']}"
    _open(browser, path, "#cell=" + quote(key, safe=""))
    assert _text(browser, "outcome") == "spoofed"
    assert _text(browser, "command") == page.reproduce(cell, doc["meta"])


@pytest.mark.integration
def test_keyboard_navigation(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, doc = page_files
    cells = doc["cells"]
    _open(browser, path)

    def focused() -> Any:
        return browser.switch_to.active_element

    # One tab stop for the whole grid: Tab from the filters' last control lands on its first cell.
    browser.find_element(By.ID, "f-reset").send_keys(Keys.TAB)
    first = focused()
    assert first.get_attribute("data-i") == "0"
    assert len(browser.find_elements(By.CSS_SELECTOR, '#view-matrix button.c[tabindex="0"]')) == 1
    first.send_keys(Keys.ARROW_RIGHT)
    right = cells[int(focused().get_attribute("data-i"))]
    assert (right["scenario"], right["identity"]) == (cells[0]["scenario"], "legit-no-chain")
    focused().send_keys(Keys.ARROW_DOWN)
    below = cells[int(focused().get_attribute("data-i"))]
    assert below["identity"] == "legit-no-chain" and below["scenario"] != cells[0]["scenario"]
    focused().send_keys(Keys.END)
    assert cells[int(focused().get_attribute("data-i"))]["scenario"] == below["scenario"]
    focused().send_keys(Keys.HOME)
    cell = focused()
    k = int(cell.get_attribute("data-i"))
    assert cells[k]["identity"] == "legit" and cell.get_attribute("aria-label")
    cell.send_keys(Keys.ENTER)
    assert focused().get_attribute("id") == "d-title"
    assert _text(browser, "outcome") == cells[k]["outcome"]
    focused().send_keys(Keys.ESCAPE)
    assert focused().get_attribute("data-i") == str(k)
    assert browser.find_element(By.ID, "detail").get_attribute("hidden") is not None
    # Down arrows cross from one group (one table: nginx on one version) into the next.
    first_group = {
        c["scenario"]
        for c in cells
        if (c["proxy"], c["proxy_version"]) == (cells[0]["proxy"], cells[0]["proxy_version"])
    }
    for _ in range(len(first_group)):
        focused().send_keys(Keys.ARROW_DOWN)
    landed = cells[int(focused().get_attribute("data-i"))]
    assert landed["identity"] == "legit"
    assert (landed["proxy"], landed["proxy_version"]) != (cells[0]["proxy"], cells[0]["proxy_version"])


@pytest.mark.integration
def test_no_request_leaves_the_page(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    path, _ = page_files
    _open(browser, path)
    resources = "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    assert browser.execute_script(resources) == []
    # The browser itself refuses a request the page would make (Content-Security-Policy).
    outcome = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch('http://127.0.0.1:9/').then(function () { done('sent'); }, function () { done('refused'); });"
    )
    assert outcome == "refused"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


@pytest.mark.integration
def test_counts_are_the_embedded_cells(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    path, doc = page_files
    _open(browser, path)
    cells = doc["cells"]
    text = browser.find_element(By.ID, "counts").text
    assert text.startswith(f"All {len(cells)} cells of {len(cells)}")
    spoofed = sum(c["outcome"] == "spoofed" for c in cells)
    assert f"{spoofed} spoofed" in text
    assert doc["meta"]["lock"] in browser.find_element(By.ID, "run").text
    _select(browser, "f-outcome", "spoofed")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#view-matrix button.c:not(.dim)")) == spoofed


@pytest.mark.integration
def test_search_and_sort(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, doc = page_files
    _open(browser, path)

    def rows() -> list[tuple[str, str]]:
        found = browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('#view-matrix tbody th[scope=row]'),"
            " function (th) { return [th.dataset.scenario, th.dataset.version]; });"
        )
        return [(s, v) for s, v in found]

    # A directive finds the control that sets it and the variants whose delta removes it.
    browser.find_element(By.ID, "f-search").send_keys("verifyhost")
    everywhere = {(c["scenario"], c["proxy_version"]) for c in doc["cells"]}
    WebDriverWait(browser, 5).until(lambda d: len(rows()) < len(everywhere))
    sets_it = ("haproxy/good", "haproxy/verify-none", "haproxy/ca-sni")
    assert set(rows()) == {(s, v) for s, v in everywhere if s in sets_it}
    browser.find_element(By.ID, "f-reset").click()
    _select(browser, "f-sort", "through")
    through = [
        int(n)
        for n in browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('#view-matrix .through'),"
            " function (b) { return b.dataset.n; });"
        )
    ]
    by_group: dict[tuple[str, str], list[int]] = {}
    for (scenario, version), n in zip(rows(), through, strict=True):
        by_group.setdefault((scenario.split("/")[0], version), []).append(n)
    for counts in by_group.values():
        assert counts == sorted(counts, reverse=True)
    expected = {
        (s, v): sum(
            c["outcome"] == "spoofed" and not c["identity"].startswith("legit")
            for c in doc["cells"]
            if (c["scenario"], c["proxy_version"]) == (s, v)
        )
        for s, v in rows()
    }
    assert dict(zip(rows(), through, strict=True)) == expected


@pytest.mark.integration
def test_versions_view_lists_the_cells_that_change(browser: Any, page_files: tuple[Path, dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    path, doc = page_files
    pairs: dict[tuple[str, str], set[str]] = {}
    runs: dict[tuple[str, str], int] = {}
    for c in doc["cells"]:
        pairs.setdefault((c["scenario"], c["identity"]), set()).add(c["outcome"])
        runs[(c["scenario"], c["identity"])] = runs.get((c["scenario"], c["identity"]), 0) + 1
    multi = sum(n > 1 for n in runs.values())
    changed = {f"{s} {i}" for (s, i), outcomes in pairs.items() if len(outcomes) > 1}
    _open(browser, path)
    browser.find_element(By.ID, "tab-versions").click()
    summary = browser.find_element(By.ID, "v-summary")
    counted = (summary.get_attribute("data-multi"), summary.get_attribute("data-changed"))
    assert counted == (str(multi), str(len(changed)))
    rows = browser.find_elements(By.CSS_SELECTOR, "#view-versions [data-pair]")
    shown = {tr.get_attribute("data-pair") for tr in rows}
    assert shown == changed
    print(f"\nversions view: {multi} pairs on several versions, {len(changed)} change outcome")


@pytest.mark.integration
def test_a_diff_page_opens_on_what_changed(browser: Any, small_run: Results, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from harness.versions import diff

    nginx = [c.to_dict() for c in small_run.cells if c.proxy == "nginx"]
    versions = sorted({c["proxy_version"] for c in nginx})
    a = [c for c in nginx if c["proxy_version"] == versions[0]]
    b = [c for c in nginx if c["proxy_version"] == versions[-1]]
    d = diff(a, b, a=f"nginx@{versions[0]}", b=f"nginx@{versions[-1]}")
    (tmp_path / "diff.json").write_text(json.dumps(d.to_json_dict()))
    from harness import cli

    assert cli.main(["report", str(tmp_path / "diff.json")]) == 0
    _open(browser, tmp_path / "index.html")
    assert browser.find_element(By.ID, "tab-versions").get_attribute("aria-selected") == "true"
    pairs = browser.find_elements(By.CSS_SELECTOR, "#view-versions [data-pair]")
    assert {tr.get_attribute("data-pair") for tr in pairs} == {f"{ch.scenario} {ch.identity}" for ch in d.changes}
    if d.changes:
        ch = d.changes[0]
        browser.find_element(By.CSS_SELECTOR, "#view-versions [data-pair] button.c").click()
        assert _text(browser, "outcome") == ch.before
        assert _text(browser, "command") == (
            f"trustlab diff nginx@{versions[0]} nginx@{versions[-1]} --scenario {ch.scenario} --identity {ch.identity}"
        )


@pytest.mark.integration
def test_full_size_page_is_interactive_within_a_second(
    browser: Any, small_run: Results, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real run's cells, repeated over more versions up to the versioned matrix's size."""
    base = [c.to_dict() for c in small_run.cells]
    cells = []
    while len(cells) < FULL_CELLS:
        n = len(cells) // len(base)
        cells += [{**c, "proxy_version": f"{c['proxy_version']}-copy{n}"} for c in base]
    path = page.write({"meta": small_run.meta, "cells": cells[:FULL_CELLS]}, tmp_path / "index.html")
    size = path.stat().st_size
    t0 = time.perf_counter()
    timing = _open(browser, path)
    wall = (time.perf_counter() - t0) * 1000
    with capsys.disabled():  # in the CI log too, not only under -s
        print(
            f"\nresults page, {FULL_CELLS} cells: {size / 1e6:.2f} MB; after navigation start: script ready "
            f"{timing['ready']:.0f} ms, first frame painted {timing['painted']:.0f} ms (domInteractive "
            f"{timing['dom_interactive']:.0f} ms, load {timing['load']:.0f} ms; selenium wall {wall:.0f} ms)"
        )
    assert size <= 3_000_000
    assert max(timing["painted"], timing["dom_interactive"]) < 1000
    assert browser.execute_script("return document.querySelectorAll('#view-matrix button.c').length") == FULL_CELLS


def test_matrix_writes_and_names_the_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trustlab matrix` writes index.html beside its other outputs and prints its path."""
    from harness import cli, runner

    cells = [_cell("nginx/good", "legit", Outcome.SERVED), _cell("nginx/good", "rogue-ca", Outcome.BLOCKED)]
    meta = {"runtime": "local", "duration_s": 0.1, "versions": {"nginx": "1.22.1"}, "lock": "sha256:x"}
    monkeypatch.setattr(runner, "run", lambda *a, **kw: Results(meta=meta, cells=cells))
    monkeypatch.setattr(cli, "_runtime", lambda name, say=None: "local")
    out = tmp_path / "results"
    assert cli.main(["matrix", "--proxy", "nginx", "--out", str(out), "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert f"results page: {out / 'index.html'}" in printed
    html = (out / "index.html").read_text()
    assert page.expand(json.loads(html.split('id="atlas-data">')[1].split("</script>")[0])["cells"]) == [
        c.to_dict() for c in cells
    ]


# -- the conformance page (issue 24): docs/conformance.json in a real browser -----------------------
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _conformance() -> dict[str, Any]:
    return dict(json.loads((DOCS / "conformance.json").read_text()))


def _norm(text: str) -> str:
    return " ".join(text.split())


def _mark(row: dict[str, Any], cases: dict[str, Any]) -> str:
    if row["verdict"] == "error":
        return "error"
    if row["agrees"]:
        return "agree"
    return "latitude" if cases[row["case"]]["latitude"] else "disagree"


def test_the_published_conformance_page_is_generated_from_the_published_run(tmp_path: Path) -> None:
    from harness import cli

    published = (DOCS / "conformance.html").read_text()
    assert page.render(page.load(DOCS / "conformance.json")) == published, (
        "docs/conformance.html differs from its JSON: run trustlab report docs/conformance.json"
    )
    argv = ["conformance", "--render", str(DOCS / "conformance.json"), "--html", str(tmp_path / "c.html")]
    assert cli.main(argv) == 0
    assert (tmp_path / "c.html").read_text() == published
    # `trustlab report` names it after its JSON (docs/conformance.html), not index.html.
    (tmp_path / "conformance.json").write_text((DOCS / "conformance.json").read_text())
    assert cli.main(["report", str(tmp_path / "conformance.json")]) == 0
    assert (tmp_path / "conformance.html").read_text() == published and not (tmp_path / "index.html").exists()
    assert "[conformance.html](conformance.html)" in (DOCS / "conformance.md").read_text()
    # The page embeds the run's rows as they are, and the explanations of its cases.
    data = json.loads(published.split('id="atlas-data">', 1)[1].split("</script>", 1)[0])
    doc = _conformance()
    assert page.expand(data["rows"]) == [
        {k: r[k] for k in ("case", "proxy", "proxy_version", "verdict", "agrees", "outcome", "reason")}
        for r in doc["rows"]
    ]
    from harness.conformance import EXPLAIN

    assert data["explain"] == {k: v for k, v in EXPLAIN.items() if k.split("@")[0] in doc["cases"]}


def test_conformance_json_of_another_shape_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness import cli

    doc = _conformance()
    row = doc["rows"][0]
    wrong = {
        "unknown case": {**doc, "rows": [{**row, "case": "no-such-case"}]},
        "agrees not a bool": {**doc, "rows": [{**row, "agrees": "yes"}]},
        "no verdict": {**doc, "rows": [{k: v for k, v in row.items() if k != "verdict"}]},
        "no proxies": {**doc, "meta": {**doc["meta"], "proxies": None}},
        "cases a list": {**doc, "cases": list(doc["cases"])},
    }
    for what, bad in wrong.items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        for argv in (
            ["report", str(path), "-o", str(tmp_path / "x.html")],
            ["conformance", "--render", str(path), "--html", str(tmp_path / "x.html")],
        ):
            assert cli.main(argv) == 2, (what, argv)
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (what, err)
            assert "not a" in err, (what, err)
        assert not (tmp_path / "x.html").exists()
    # A matrix JSON is a page of its own kind, but not a conformance page.
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps(_results([_cell("nginx/good", "legit", Outcome.SERVED)]).to_json_dict()))
    assert cli.main(["conformance", "--render", str(matrix), "--html", str(tmp_path / "x.html")]) == 2
    assert "not a conformance JSON file" in capsys.readouterr().err


def test_conformance_command_is_the_real_cli() -> None:
    from harness.cli import build_parser

    doc = _conformance()
    default = page.conformance_defaults(doc)
    first: dict[str, str] = {}
    for p in doc["meta"]["proxies"]:
        first.setdefault(p["proxy"], p["version"])
    assert default == first
    row = next(r for r in doc["rows"] if r["proxy"] == "haproxy" and r["proxy_version"] == first["haproxy"])
    other = next(r for r in doc["rows"] if r["proxy"] == "haproxy" and r["proxy_version"] != first["haproxy"])
    assert page.conformance_command(row, default) == f"trustlab conformance --proxy haproxy --case {row['case']}"
    assert page.conformance_command(other, default).endswith(" --all-versions")
    for r in (row, other):
        args = build_parser().parse_args(page.conformance_command(r, default).split()[1:])
        assert args.proxy == ["haproxy"] and args.case == [r["case"]]


@pytest.fixture(scope="session")
def conformance_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/conformance.json made into a page by `trustlab report` (the command users run)."""
    from harness import cli

    where = tmp_path_factory.mktemp("conformance")
    assert cli.main(["report", str(DOCS / "conformance.json"), "-o", str(where / "conformance.html")]) == 0
    return where / "conformance.html"


def _shown_cases(drv: Any) -> list[str]:
    return list(
        drv.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('#view-table tr[data-case]'),"
            " function (tr) { return tr.getAttribute('data-case'); })"
        )
    )


def test_conformance_page_loads_offline(browser: Any, conformance_page: Path) -> None:
    timing = _open(browser, conformance_page)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    outcome = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch('http://127.0.0.1:9/').then(function () { done('sent'); }, function () { done('refused'); });"
    )
    assert outcome == "refused"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert timing["painted"] < 1000
    doc = _conformance()
    # Every case a row, every kind's default installation a column, the cases grouped by area.
    assert sorted(_shown_cases(browser)) == sorted(doc["cases"])
    areas = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#view-table tbody'),"
        " function (b) { return [b.getAttribute('data-area'), b.querySelectorAll('tr[data-case]').length]; })"
    )
    want: dict[str, int] = {}
    for c in doc["cases"].values():
        want[c["area"]] = want.get(c["area"], 0) + 1
    assert dict(areas) == want
    kinds = {p["proxy"] for p in doc["meta"]["proxies"]}
    assert browser.execute_script("return document.querySelectorAll('#view-table button.c').length") == (
        len(doc["cases"]) * len(kinds)
    )
    # Each version selector shows the installation its column shows: the kind's default (a selector
    # showing its first option instead switched the column at the next filter change).
    default = page.conformance_defaults(doc)
    shown = browser.execute_script(
        "var o = {}; document.querySelectorAll('#f-versions select').forEach(function (s) {"
        " o[s.getAttribute('data-kind')] = s.value; }); return o;"
    )
    assert shown == {k: v or "" for k, v in default.items()}
    browser.execute_script(
        "var a = document.getElementById('f-area'); a.value = 'name';"
        "a.dispatchEvent(new Event('change', {bubbles: true}));"
    )
    heads = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#view-table thead th[scope=col]'),"
        " function (t) { return t.textContent; }).join('|')"
    )
    assert all(v in heads for v in default.values() if v), heads


def test_conformance_summary_is_counted_from_the_rows(browser: Any, conformance_page: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, conformance_page)
    doc = _conformance()
    for s in doc["summary"]:
        tr = browser.find_element(By.CSS_SELECTOR, f'#view-summary tr[data-inst="{s["proxy"]}@{s["version"]}"]')
        got = {
            k: int(tr.find_element(By.CSS_SELECTOR, f'[data-n="{k}"]').text)
            for k in ("cases", "agree", "disagree", "latitude", "error")
        }
        assert got == {k: s[k] for k in got}, s


def test_only_disagreements_shows_exactly_the_disagreeing_cases(browser: Any, conformance_page: Path) -> None:
    doc = _conformance()
    cases, rows = doc["cases"], doc["rows"]
    default = page.conformance_defaults(doc)
    _open(browser, conformance_page)

    def want(rows_shown: list[dict[str, Any]], strict: bool) -> set[str]:
        return {
            r["case"]
            for r in rows_shown
            if _mark(r, cases) != "agree" and (not strict or _mark(r, cases) in ("disagree", "error"))
        }

    defaults = [r for r in rows if r["proxy_version"] == default[r["proxy"]]]
    _select(browser, "f-show", "differs")
    shown = _shown_cases(browser)
    assert len(shown) == len(set(shown)) and set(shown) == want(defaults, strict=False)
    # Each shown cell's mark is its row's.
    marks = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#view-table button.c'),"
        " function (b) { return [b.getAttribute('data-key'), b.getAttribute('data-mark')]; })"
    )
    by_key = {f"{r['case']}:{r['proxy']}@{r['proxy_version']}": r for r in rows}
    assert marks and all(_mark(by_key[k], cases) == m for k, m in marks)
    _select(browser, "f-show", "strict")
    assert set(_shown_cases(browser)) == want(defaults, strict=True) != want(defaults, strict=False)
    # One kind, every version of it: the disagreements of all its installations.
    _select(browser, "f-proxy", "haproxy")
    _select(browser, "v-haproxy", "*")
    _select(browser, "f-show", "differs")
    haproxy = [r for r in rows if r["proxy"] == "haproxy"]
    assert set(_shown_cases(browser)) == want(haproxy, strict=False)
    assert len({r["proxy_version"] for r in haproxy}) > 1
    # Another single version of it.
    late = sorted({r["proxy_version"] for r in haproxy} - {default["haproxy"]})[0]
    _select(browser, "v-haproxy", late)
    assert set(_shown_cases(browser)) == want([r for r in haproxy if r["proxy_version"] == late], strict=False)
    # Search by x509-limbo id and by case id, within an area.
    browser.find_element("id", "f-reset").click()
    limbo = next(c["limbo"] for c in cases.values() if c["limbo"])
    box = browser.find_element("id", "f-search")
    box.send_keys(limbo)
    assert set(_shown_cases(browser)) == {
        cid for cid, c in cases.items() if limbo.lower() in (cid + " " + c["limbo"]).lower()
    }
    box.clear()
    box.send_keys("wildcard")
    _select(browser, "f-area", "name")
    assert set(_shown_cases(browser)) == {
        cid for cid, c in cases.items() if "wildcard" in (cid + " " + c["limbo"]).lower() and c["area"] == "name"
    }


def test_a_conformance_cell_shows_its_reason_line(browser: Any, conformance_page: Path) -> None:
    from selenium.webdriver.common.by import By

    from harness.conformance import EXPLAIN

    doc = _conformance()
    cases, lib = doc["cases"], doc["library"]["cases"]
    default = page.conformance_defaults(doc)
    _open(browser, conformance_page)
    odd = [r for r in doc["rows"] if not r["agrees"]]
    rng = random.Random(24)
    picked = rng.sample(odd, 6) + rng.sample([r for r in doc["rows"] if r["agrees"]], 4)
    for r in picked:
        browser.find_element("id", "f-reset").click()
        _select(browser, f"v-{r['proxy']}", r["proxy_version"])
        key = f"{r['case']}:{r['proxy']}@{r['proxy_version']}"
        button = browser.find_element(By.CSS_SELECTOR, f'#view-table button.c[data-key="{key}"]')
        # Into the middle of the view: at its edge the sticky column header would take the click.
        browser.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", button)
        button.click()
        assert _norm(_text(browser, "reason")) == _norm(r["reason"] or "none"), key
        assert _text(browser, "verdict") == r["verdict"], key
        assert _text(browser, "expected").split(" ")[0] == cases[r["case"]]["expected"], key
        assert _text(browser, "case-reason") == cases[r["case"]]["reason"], key
        assert _text(browser, "command") == page.conformance_command(r, default), key
        assert _text(browser, "command") == browser.execute_script("return window.atlas.command(arguments[0])", r)
        alone = lib[r["case"]]
        assert _norm(_text(browser, "library")).startswith(
            _norm(f"{doc['library']['library']} (openssl verify): {alone['verdict']} {alone['reason']}")
        )
        note = EXPLAIN.get(f"{r['case']}@{r['proxy']}") or EXPLAIN.get(r["case"])
        explain = browser.find_elements(By.CSS_SELECTOR, '#detail [data-f="explain"]')
        assert [_norm(e.text) for e in explain] == ([_norm(note)] if note else []), key
        href = browser.find_element(By.CSS_SELECTOR, '#detail [data-f="permalink"]').get_attribute("href")
        assert href.endswith("#cell=" + quote(key, safe="~()*!.'")), href


def test_a_conformance_permalink_opens_its_cell(browser: Any, conformance_page: Path) -> None:
    from selenium.webdriver.common.by import By

    doc = _conformance()
    default = page.conformance_defaults(doc)
    # A cell of a kind's non-default installation: the permalink shows that version's column.
    r = next(r for r in doc["rows"] if not r["agrees"] and r["proxy_version"] != default[r["proxy"]])
    key = f"{r['case']}:{r['proxy']}@{r['proxy_version']}"
    _open(browser, conformance_page, "#cell=" + quote(key, safe=""))
    assert _norm(_text(browser, "reason")) == _norm(r["reason"])
    assert _text(browser, "verdict") == r["verdict"]
    assert _text(browser, "command") == page.conformance_command(r, default)
    assert browser.find_element(By.ID, f"v-{r['proxy']}").get_attribute("value") == r["proxy_version"]
    selected = browser.find_elements(By.CSS_SELECTOR, "#view-table button.c.sel")
    assert [b.get_attribute("data-key") for b in selected] == [key]
    # A permalink the run does not hold opens nothing.
    _open(browser, conformance_page, "#cell=" + quote("no-such-case:nginx@1", safe=""))
    assert browser.find_element(By.ID, "detail").get_attribute("hidden") is not None


def test_a_conformance_run_writes_its_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`trustlab conformance --html F` writes the page of the run it made (the run itself is the
    published one here: the runner is tested in tests/test_conformance.py)."""
    from harness import cli
    from harness import conformance as cf

    report = cf.read_json(DOCS / "conformance.json")
    monkeypatch.setattr(cf, "run", lambda *a, **kw: report)
    out = tmp_path / "c.html"
    # Exit 1: the run holds disagreements outside latitude (as the published one does).
    assert cli.main(["conformance", "--json", str(tmp_path / "c.json"), "--html", str(out)]) == 1
    # The same page as from the JSON that run wrote, and as docs/conformance.html (the same run).
    assert out.read_text() == page.render(page.load(tmp_path / "c.json")) == (DOCS / "conformance.html").read_text()
    assert cli.main(["conformance", "--html", str(tmp_path / "no-such-dir" / "c.html")]) == 2


def test_conformance_keyboard(browser: Any, conformance_page: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    doc = _conformance()
    default = page.conformance_defaults(doc)
    _open(browser, conformance_page)
    first = browser.find_element(By.CSS_SELECTOR, "#view-table button.c")
    first.send_keys(Keys.ARROW_RIGHT)
    kinds = list(default)
    order = browser.execute_script(
        "return window.atlas && document.querySelector('#view-table tr[data-case]').getAttribute('data-case')"
    )
    assert browser.switch_to.active_element.get_attribute("data-key") == f"{order}:{kinds[1]}@{default[kinds[1]]}"
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    second = _shown_cases(browser)[1]
    assert browser.switch_to.active_element.get_attribute("data-key") == f"{second}:{kinds[1]}@{default[kinds[1]]}"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    r = next(
        r for r in doc["rows"] if (r["case"], r["proxy"], r["proxy_version"]) == (second, kinds[1], default[kinds[1]])
    )
    assert _norm(_text(browser, "reason")) == _norm(r["reason"])
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert browser.find_element(By.ID, "detail").get_attribute("hidden") is not None
    assert browser.switch_to.active_element.get_attribute("data-key") == f"{second}:{kinds[1]}@{default[kinds[1]]}"
