"""Scenario files are validated strictly; each error is one line naming file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import scenarios
from harness.errors import ScenarioError
from harness.vocab import IDENTITY_IDS

GOOD = """\
proxy = "nginx"
title = "t"
[directives]
proxy_ssl_verify = "on"
proxy_ssl_trusted_certificate = "{ca}"
[expected]
""" + "".join(f'"{i}" = "blocked"\n' for i in IDENTITY_IDS)


def write(tmp_path: Path, text: str | bytes, name: str = "x.toml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_a_valid_file_loads(tmp_path: Path) -> None:
    sc = scenarios.load_file(write(tmp_path, GOOD))
    assert sc.id == "nginx/x"
    assert sc.directives == (("proxy_ssl_verify", "on"), ("proxy_ssl_trusted_certificate", "{ca}"))
    assert set(sc.expected) == set(IDENTITY_IDS)


BAD = {
    "unknown identity": (GOOD.replace('"rogue-ca" =', '"rouge-ca" ='), ["expected.rouge-ca", "known: legit"]),
    "unknown outcome": (
        GOOD.replace('"expired" = "blocked"', '"expired" = "denied"'),
        ["expected.expired", "allowed: served, spoofed"],
    ),
    "unknown proxy": (GOOD.replace('proxy = "nginx"', 'proxy = "lighty"'), ["proxy", "known: nginx, apache, haproxy"]),
    "unknown directive": (
        GOOD.replace("proxy_ssl_verify =", "proxy_ssl_verfy ="),
        ["directives.proxy_ssl_verfy", "unknown nginx directive"],
    ),
    "apache directive on nginx": (
        GOOD.replace("proxy_ssl_verify =", "SSLProxyVerify ="),
        ["directives.SSLProxyVerify"],
    ),
    "unknown top key": ("colour = 1\n" + GOOD, ["colour: unknown key"]),
    "empty expected": (GOOD.split("[expected]")[0] + "[expected]\n", ["expected: must be a table"]),
    "bad backend": ('backend = "API_svc"\n' + GOOD, ["backend: 'API_svc' is not a host name"]),
    "ip backend": ('backend = "10.0.0.1"\n' + GOOD, ["backend: '10.0.0.1' is not a host name"]),
    "sibling backend": ('backend = "other-svc.internal"\n' + GOOD, ["backend", "sibling"]),
    "wildcard-parent on a one-label parent": (
        GOOD + '"wildcard-parent" = "spoofed"\n',
        ["expected.wildcard-parent", "at least two labels"],
    ),
    "missing title": (GOOD.replace('title = "t"\n', ""), ["title: missing"]),
    "wrong type": (GOOD.replace('title = "t"', "title = 3"), ["title: must be a string"]),
    "bad target": ('target = "dns"\n' + GOOD, ["target", "allowed: name, ip"]),
    "bad toml": (GOOD.replace("[expected]", "[expected"), ["invalid TOML"]),
    "truncated": (GOOD[: len(GOOD) // 2], ["invalid TOML"]),
    "empty": ("", ["empty file"]),
    "binary": (b"\x00\xff\xfe\x89PNG", ["not UTF-8"]),
    "injection": (GOOD.replace('"{ca}"', '"{ca}; proxy_ssl_verify off"'), ["without newlines"]),
    "seat typo": (GOOD + "[seat]\nsni_route = true\n", ["seat.sni_route", "unknown"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_fail_with_one_line(tmp_path: Path, case: str) -> None:
    text, needles = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        scenarios.load_file(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for needle in needles:
        assert needle in msg, msg


def test_a_partial_expected_table_is_allowed(tmp_path: Path) -> None:
    """Unlisted identities still run; they are reported with no expectation, not refused."""
    sc = scenarios.load_file(write(tmp_path, GOOD.replace('"public-ca" = "blocked"\n', "")))
    assert "public-ca" not in sc.expected
    assert sc.unlisted == ("public-ca",)


def test_builtin_scenarios_list_every_identity() -> None:
    for sc in scenarios.builtin().values():
        assert sc.unlisted == (), f"{sc.path}: [expected] leaves out {', '.join(sc.unlisted)}"


def test_a_scenario_names_its_backend(tmp_path: Path) -> None:
    text = 'backend = "api.svc.internal"\n' + GOOD + '"wildcard-parent" = "spoofed"\n'
    sc = scenarios.load_file(write(tmp_path, text))
    assert sc.backend == "api.svc.internal"
    assert sc.optional_identities == ("wildcard-parent",)
    assert scenarios.load_file(write(tmp_path, GOOD, "y.toml")).backend == "backend-api.internal"


def test_unknown_id_suggests(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="neither a scenario id nor a file"):
        scenarios.resolve("nginx/verify-offf")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file"):
        scenarios.resolve(str(tmp_path / "nope.toml"))
    with pytest.raises(ScenarioError, match="is a directory"):
        scenarios.load_file(tmp_path)


def test_duplicates_are_errors() -> None:
    with pytest.raises(ScenarioError, match="given twice"):
        scenarios.select(["nginx/good", "nginx/good"])


def test_builtin_ids_come_from_paths() -> None:
    for sid, sc in scenarios.builtin().items():
        assert sc.path is not None
        assert sc.path.with_suffix("").as_posix().endswith(sid)
        if not sid.startswith("reported/"):
            assert sid.split("/")[0] == sc.proxy.value
        assert sc.description.strip() and sc.sources, f"{sid}: needs a description and sources"


def test_committed_json_schema_is_current() -> None:
    import json

    committed = json.loads((scenarios.scenarios_root() / "scenario.schema.json").read_text())
    assert committed == scenarios.json_schema(), (
        'scenarios/scenario.schema.json drifted; regenerate it with: python -c "import json; '
        'from harness.scenarios import json_schema; print(json.dumps(json_schema(), indent=2))" '
        "> scenarios/scenario.schema.json"
    )


def test_every_builtin_file_fits_the_schema() -> None:
    import tomllib

    jsonschema = pytest.importorskip("jsonschema")  # installed with the notebooks extra (nbformat)
    validator = jsonschema.Draft202012Validator(scenarios.json_schema())
    for sc in scenarios.builtin().values():
        assert sc.path is not None
        errors = [e.message for e in validator.iter_errors(tomllib.loads(sc.path.read_text()))]
        assert errors == [], (sc.id, errors)
    bad = tomllib.loads(GOOD.replace('"expired" = "blocked"', '"expired" = "denied"'))
    assert list(validator.iter_errors(bad)), "the schema must reject an unknown outcome"
