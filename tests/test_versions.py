"""Versions as an axis: numbers, ranges, selectors, the nearest version, plans, diffs, and the
scenario files' ``[[versions]]`` tables (each bad one a one-line error)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import scenarios, versions
from harness.errors import LabError, ScenarioError
from harness.proxies import Installation
from harness.runner import plan_targets
from harness.versions import Selector, matches_prefix, nearest, parse, parse_range, parse_selector
from harness.vocab import IDENTITY_IDS, Outcome, ProxyKind

KINDS = ("nginx", "apache", "haproxy")


def test_version_numbers_compare_by_component() -> None:
    assert parse("1.22.1") == (1, 22, 1)
    assert parse("2.8.25-5cf5d0683") == (2, 8, 25)
    assert versions.compare((1, 29), (1, 29, 0)) == 0
    assert versions.compare((1, 9, 9), (1, 22, 1)) < 0
    with pytest.raises(ValueError, match="not a version number"):
        parse("unknown")


def test_a_prefix_matches_whole_components() -> None:
    assert matches_prefix("1.31.3", "1.31")
    assert matches_prefix("1.31.3", "1")
    assert not matches_prefix("1.31.3", "1.3")
    assert not matches_prefix("unknown", "1")


def test_ranges_are_half_open() -> None:
    r = parse_range(">=1.23.4,<1.29.7")
    assert "1.23.4" in r and "1.29.6" in r
    assert "1.29.7" not in r and "1.22.1" not in r
    assert "1.0" in parse_range("<1.29.7")
    assert "9.0" in parse_range(">=1.29.7")
    assert parse_range("<1.29.7").overlaps(parse_range(">=1.29"))
    assert not parse_range("<1.29.7").overlaps(parse_range(">=1.29.7"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a range"),
        ("~1.2", "not a bound"),
        (">=1.2,>=1.3", "two lower bounds"),
        ("<1.2,<1.3", "two upper bounds"),
        (">=1.3,<1.2", "is empty"),
        ("==1.2", "not a bound"),
    ],
)
def test_bad_ranges_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_range(text)


def test_selectors() -> None:
    assert parse_selector("nginx@1.31", kinds=KINDS) == Selector("nginx", "1.31")
    assert parse_selector("haproxy", kinds=KINDS) == Selector("haproxy")
    with pytest.raises(ValueError, match="'ngnix' is unknown; known: nginx, apache, haproxy"):
        parse_selector("ngnix@1.22", kinds=KINDS)
    with pytest.raises(ValueError, match="not a version prefix"):
        parse_selector("nginx@latest", kinds=KINDS)


def test_the_nearest_version_shares_the_longest_prefix() -> None:
    installed = ["1.22.1", "1.26.3", "1.31.3"]
    assert nearest("1.18.0", installed) == "1.22.1"
    assert nearest("1.25.1", installed) == "1.26.3"
    assert nearest("1.31.0", installed) == "1.31.3"
    assert nearest("1.40", installed) == "1.31.3"
    assert nearest("2.8.1", ["2.6.12", "2.8.25", "3.0.11"]) == "2.8.25"
    assert nearest("1.0", []) is None


# -- scenario files ------------------------------------------------------------------------------
BASE = (
    'proxy = "nginx"\ntitle = "t"\n[directives]\nproxy_ssl_verify = "on"\n'
    'proxy_ssl_trusted_certificate = "{ca}"\n[expected]\n' + "".join(f'"{i}" = "blocked"\n' for i in IDENTITY_IDS)
)
RULE = (
    '\n[[versions]]\nrange = "<1.23.4"\nsource = "https://nginx.org/en/CHANGES"\n'
    '[versions.expected]\nlegit = "served"\n'
)


def load(tmp_path: Path, text: str) -> scenarios.Scenario:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return scenarios.load_file(path)


def test_expectations_by_version_range(tmp_path: Path) -> None:
    sc = load(tmp_path, BASE + RULE)
    assert sc.expected_for("1.22.1")["legit"] is Outcome.SERVED
    assert sc.expected_for("1.22.1")["rogue-ca"] is Outcome.BLOCKED
    assert sc.expected_for("1.31.3")["legit"] is Outcome.BLOCKED
    assert sc.expected_for(None) == sc.expected
    assert sc.versions[0].source == "https://nginx.org/en/CHANGES"


BAD_RULES = {
    "no source": (RULE.replace('source = "https://nginx.org/en/CHANGES"\n', ""), "versions[0].source: missing"),
    "empty source": (RULE.replace('"https://nginx.org/en/CHANGES"', '" "'), "versions[0].source: must name"),
    "bad range": (RULE.replace('"<1.23.4"', '"before 1.23"'), "versions[0].range: 'before 1.23' is not a bound"),
    "unknown key": (
        RULE.replace("[versions.expected]", 'since = "x"\n[versions.expected]'),
        "versions[0].since: unknown key; allowed: range, source, why, expected",
    ),
    "unknown outcome": (RULE.replace('legit = "served"', 'legit = "ok"'), "versions[0].expected.legit: outcome 'ok'"),
    "identity not run": (
        RULE.replace('legit = "served"', '"legit-deep" = "served"'),
        "versions[0].expected.legit-deep: not in the scenario's [expected]",
    ),
    "overlap": (
        RULE + RULE.replace('"<1.23.4"', '">=1.20"'),
        "versions[1].range: >=1.20 overlaps versions[0].range <1.23.4",
    ),
    "not an array": ('\nversions = "1.22"\n', "versions: must be an array of tables"),
}


@pytest.mark.parametrize("case", sorted(BAD_RULES))
def test_bad_version_tables_are_one_line_errors(tmp_path: Path, case: str) -> None:
    text, message = BAD_RULES[case]
    body = BASE.replace("[directives]", text.strip() + "\n[directives]") if case == "not an array" else BASE + text
    with pytest.raises(ScenarioError) as err:
        load(tmp_path, body)
    assert message in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "x.toml"))
    assert "\n" not in str(err.value)


def test_reported_on_must_be_a_version(tmp_path: Path) -> None:
    assert load(tmp_path, 'reported_on = "1.18.0"\n' + BASE).reported_on == "1.18.0"
    with pytest.raises(ScenarioError, match="reported_on: 'eighteen' is not a version number"):
        load(tmp_path, 'reported_on = "eighteen"\n' + BASE)


def test_the_schema_knows_versions() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(scenarios.json_schema())
    good = {
        "proxy": "nginx",
        "title": "t",
        "expected": {"legit": "served"},
        "reported_on": "1.18.0",
        "versions": [{"range": ">=1.23.4,<1.29.7", "source": "x", "expected": {"legit": "blocked"}}],
    }
    assert not list(validator.iter_errors(good))
    bad = {**good, "versions": [{"range": "~1", "source": "x", "expected": {"legit": "blocked"}}]}
    assert list(validator.iter_errors(bad))
    assert list(validator.iter_errors({**good, "versions": [{"range": "<1", "expected": {"legit": "ok"}}]}))


def test_every_builtin_version_rule_cites_a_source() -> None:
    ruled = [sc for sc in scenarios.builtin().values() if sc.versions]
    assert ruled, "at least one built-in scenario states expectations by version"
    for sc in ruled:
        for rule in sc.versions:
            assert rule.source.startswith("https://"), (sc.id, rule.source)


# -- plans ---------------------------------------------------------------------------------------
def inst(kind: str, version: str) -> Installation:
    return Installation(ProxyKind(kind), version, f"/opt/{kind}-{version}/{kind}", "cache")


INSTALLED = {"nginx": [inst("nginx", "1.22.1"), inst("nginx", "1.31.3")], "haproxy": [inst("haproxy", "2.6.12")]}


def test_plans_default_all_versions_and_selectors() -> None:
    good, ha = scenarios.resolve("nginx/good"), scenarios.resolve("haproxy/good")
    available = INSTALLED.__getitem__
    default = plan_targets([good, ha], available)
    assert [(t.key, t.version) for t in default] == [("nginx/good", "1.22.1"), ("haproxy/good", "2.6.12")]
    every = plan_targets([good, ha], available, all_versions=True)
    assert [t.key for t in every] == ["nginx/good@1.22.1", "nginx/good@1.31.3", "haproxy/good"]
    one = plan_targets([good], available, selectors=[Selector("nginx", "1.31")])
    assert [(t.key, t.version) for t in one] == [("nginx/good", "1.31.3")]
    with pytest.raises(LabError, match=r"nginx@1\.40 matches no installed nginx \(installed: 1\.22\.1, 1\.31\.3\)"):
        plan_targets([good], available, selectors=[Selector("nginx", "1.40")])


def test_a_reported_case_runs_on_the_version_nearest_its_report(tmp_path: Path) -> None:
    case = scenarios.parse(
        {"proxy": "nginx", "title": "t", "reported_on": "1.29.0", "expected": {"legit": "served"}},
        scenario_id="reported/x",
        where="x.toml",
    )
    (target,) = plan_targets([case], INSTALLED.__getitem__)
    assert target.version == "1.31.3"
    (pinned,) = plan_targets([case], INSTALLED.__getitem__, selectors=[Selector("nginx", "1.22")])
    assert pinned.version == "1.22.1"


# -- diff ----------------------------------------------------------------------------------------
def cell(scenario: str, identity: str, outcome: str, reason: str, tls: str | None) -> dict[str, object]:
    return {"scenario": scenario, "identity": identity, "outcome": outcome, "reason": reason, "tls": tls}


def test_diff_lists_outcome_changes_with_both_reasons_and_counts_evidence() -> None:
    a = [
        cell("nginx/k", "legit", "config-rejected", "invalid number of arguments", None),
        cell("nginx/good", "legit", "served", "response from legit", "TLSv1.2"),
        cell("nginx/good", "rogue-ca", "blocked", "verify error", "TLSv1.2"),
    ]
    b = [
        cell("nginx/k", "legit", "blocked", "verify error (20)", "TLSv1.3"),
        cell("nginx/good", "legit", "served", "response from legit", "TLSv1.3"),
        cell("nginx/good", "rogue-ca", "blocked", "verify error", "TLSv1.3"),
    ]
    d = versions.diff(a, b, a="nginx@1.22.1", b="nginx@1.31.3")
    assert [(c.scenario, c.before, c.after) for c in d.changes] == [("nginx/k", "config-rejected", "blocked")]
    assert d.evidence == {"tls": {("TLSv1.2", "TLSv1.3"): 2}}
    text = versions.render_diff(d)
    assert "nginx@1.22.1: invalid number of arguments" in text
    assert "nginx@1.31.3: verify error (20)" in text
    assert "evidence tls: TLSv1.2 -> TLSv1.3 in 2 cell(s)" in text
    assert json.loads(json.dumps(d.to_json_dict()))["changes"][0]["after_reason"] == "verify error (20)"


def trustlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


def matrix_file(path: Path, cells: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"meta": {}, "cells": cells}))
    return path


def test_diff_of_two_files_exits_1_on_a_change_0_without(tmp_path: Path) -> None:
    a = matrix_file(tmp_path / "a.json", [cell("nginx/good", "legit", "served", "ok", "TLSv1.2")])
    b = matrix_file(tmp_path / "b.json", [cell("nginx/good", "legit", "blocked", "no", "TLSv1.2")])
    changed = trustlab("diff", str(a), str(b), "--json", str(tmp_path / "d.json"))
    assert changed.returncode == 1, changed.stderr
    assert "nginx/good x legit: served -> blocked" in changed.stdout
    assert json.loads((tmp_path / "d.json").read_text())["changes"][0]["before"] == "served"
    same = trustlab(
        "diff", str(a), str(matrix_file(tmp_path / "c.json", [cell("nginx/good", "legit", "served", "ok", "TLSv1.3")]))
    )
    assert same.returncode == 0, same.stderr
    assert "evidence tls: TLSv1.2 -> TLSv1.3 in 1 cell(s)" in same.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nginx@1.22", "nowhere.json"], "'nowhere.json' is neither KIND@VERSION"),
        (["nginx", "nginx@1.22"], "names no version; write nginx@VERSION"),
        (["ngnix@1.22", "nginx@1.22"], "neither KIND@VERSION"),
        (["nginx@1.x", "nginx@1.22"], "not a version prefix"),
        (["nginx@1.22", "nginx@1.22"], "both sides are nginx@1.22"),
        (["nginx@1.22", "haproxy@2.6"], "different proxies"),
    ],
)
def test_diff_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    proc = trustlab("diff", *args, "--runtime", "local")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_diff_refuses_a_file_that_is_not_a_matrix(tmp_path: Path) -> None:
    junk = tmp_path / "j.json"
    junk.write_text('{"cells": [1]}')
    proc = trustlab("diff", str(junk), str(junk))
    assert proc.returncode == 2
    assert "not a trustlab matrix JSON file" in proc.stderr
    two = matrix_file(
        tmp_path / "two.json",
        [
            {**cell("nginx/good", "legit", "served", "ok", None), "proxy_version": "1.22.1"},
            {**cell("nginx/good", "legit", "served", "ok", None), "proxy_version": "1.31.3"},
        ],
    )
    proc = trustlab("diff", str(two), str(junk))
    assert proc.returncode == 2
    assert "holds nginx/good on 1.22.1, 1.31.3; pick one" in proc.stderr


# -- live ----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_version_range_decides_the_expectation_on_the_real_server(local_runtime: str) -> None:
    """nginx/keepalive-local: `keepalive 8 local` is refused before nginx 1.29.7, its [[versions]]
    table says so, and the cells name the version that ran them."""
    from harness import runner
    from harness.proxies import driver

    sc = scenarios.resolve("nginx/keepalive-local")
    installed = driver("nginx").installations()
    res = runner.run([sc], runtime=local_runtime, identities=("legit", "rogue-ca"), all_versions=True)
    assert not res.mismatches, [(c.proxy_version, c.identity, c.outcome, c.reason) for c in res.mismatches]
    assert {c.proxy_version for c in res.cells} == {i.version for i in installed}
    for c in res.cells:
        old = versions.compare(parse(c.proxy_version or "0"), (1, 29, 7)) < 0
        if old:
            assert c.outcome is Outcome.CONFIG_REJECTED
            assert 'invalid number of arguments in "keepalive" directive' in c.reason
        else:  # the pool is per location, the saved session is not: the unverified one is resumed
            assert c.outcome is Outcome.BLOCKED
            assert "20:unable to get local issuer certificate" in c.reason
    assert res.meta["proxy_versions"][0]["version"] == installed[0].version


@pytest.mark.integration
def test_check_runs_on_the_chosen_version(local_runtime: str, tmp_path: Path) -> None:
    from harness.proxies import driver

    config = str(Path(__file__).parent / "configs" / "haproxy-good.cfg")
    default = driver("haproxy").installations()[0]
    out = tmp_path / "check.json"
    proc = trustlab(
        "check", "haproxy", config, "--runtime", "local", "--proxy-version", default.version, "--json", str(out)
    )
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(out.read_text())
    assert data["proxy_version"] == default.version
    assert f"haproxy {default.version}" in proc.stdout
    missing = trustlab("check", "haproxy", config, "--runtime", "local", "--proxy-version", "99.1")
    assert missing.returncode == 2
    assert "--proxy-version: no installed haproxy 99.1 on the local runtime (installed: " in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_an_installation_in_a_root_file_system_gets_that_userland(tmp_path: Path) -> None:
    """The sandbox binds the root's /usr, /lib... and /etc files where the host's would be."""
    from harness.runtimes import sandbox

    root = tmp_path / "trixie"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "etc" / "ssl").mkdir(parents=True)
    (root / "etc" / "ld.so.cache").write_text("trixie's loader cache")
    (root / "etc" / "ssl" / "openssl.cnf").write_text("trixie's openssl.cnf")
    (root / "lib").symlink_to("usr/lib")
    etc_dir = sandbox.write_etc(tmp_path / "etc", ["", str(root)], ["/etc/trafficserver/body_factory"])
    argv = sandbox.command(
        ["/usr/sbin/nginx", "-v"],
        run_dir=str(tmp_path / "run"),
        hosts_file="/etc/hosts",
        etc_dir=str(etc_dir),
        uid=None,
        root=str(root),
    )
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--ro-bind", str(root / "usr"), "/usr") in pairs
    assert ("--symlink", "usr/lib", "/lib") in pairs
    # One /etc per root, bound whole: that root's loader cache and openssl.cnf, the lab's accounts.
    mine = Path(sandbox.etc_of(str(etc_dir), str(root)))
    assert ("--ro-bind", str(mine), "/etc") in pairs and ("--ro-bind", "/etc/hosts", "/etc/hosts") in pairs
    assert (mine / "ld.so.cache").read_text() == "trixie's loader cache"
    assert (mine / "ssl" / "openssl.cnf").read_text() == "trixie's openssl.cnf"
    assert "www-data:x:33:" in (mine / "passwd").read_text()
    assert (mine / "hosts").read_text() == ""  # where the lab's hosts file is bound
    assert (mine / "trafficserver" / "body_factory").exists()  # where a driver's /etc path is bound
    assert ("--ro-bind", "/usr", "/usr") not in pairs
    host = sandbox.command(
        ["x"], run_dir=str(tmp_path / "run"), hosts_file="/etc/hosts", etc_dir=str(etc_dir), uid=None
    )
    host_pairs = list(zip(host, host[1:], host[2:], strict=False))
    assert ("--ro-bind", "/usr", "/usr") in host_pairs
    assert ("--ro-bind", sandbox.etc_of(str(etc_dir), ""), "/etc") in host_pairs
    assert Path(sandbox.etc_of(str(etc_dir), ""), "ld.so.cache").read_bytes() == Path("/etc/ld.so.cache").read_bytes()
    assert not any(p.name in ("shadow", "sudoers") for p in etc_dir.rglob("*"))


@pytest.mark.integration
def test_a_rooted_installation_runs_in_the_sandbox(local_runtime: str, tmp_path: Path) -> None:
    """The worker starts an installation's binary inside its root (here a root whose /usr is the
    host's, so the same nginx runs: the plumbing, not trixie, is under test)."""
    from harness import runner
    from harness.proxies import driver
    from harness.runtimes.local import LocalRuntime

    default = driver("nginx").installations()[0]
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr").symlink_to("/usr")
    for name in ("bin", "sbin", "lib", "lib64"):
        if Path("/", name).is_symlink():
            (root / name).symlink_to(Path("/", name).readlink())
    rooted = Installation(default.kind, "1.22.99", default.binary, "rootfs", default.tls, root=str(root))

    class Rooted(LocalRuntime):
        def installations(self, kind: str) -> list[Installation]:
            return [rooted] if kind == "nginx" else driver(kind).installations()

    res = runner.run([scenarios.resolve("nginx/good")], runtime=Rooted(), identities=("legit", "rogue-ca"))
    assert [(c.proxy_version, c.outcome) for c in res.cells] == [
        ("1.22.99", Outcome.SERVED),
        ("1.22.99", Outcome.BLOCKED),
    ]
    # A root without that binary: nothing starts, so the root (not the host's /usr) is what ran.
    (tmp_path / "empty" / "usr").mkdir(parents=True)
    rooted = Installation(default.kind, "1.22.99", default.binary, "rootfs", default.tls, root=str(tmp_path / "empty"))
    res = runner.run([scenarios.resolve("nginx/good")], runtime=Rooted(), identities=("legit",))
    assert res.cells[0].outcome is Outcome.ERROR, res.cells[0]
    assert "the sandbox could not start the proxy: bwrap: execvp" in res.cells[0].reason
    with pytest.raises(LabError, match="only the sandbox mounts"):
        runner.run([scenarios.resolve("nginx/good")], runtime=type("Off", (Rooted,), {})(sandbox=False))
