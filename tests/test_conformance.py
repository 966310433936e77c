"""Certificate-validation conformance (harness/conformance/__init__.py): the catalogue read back, the judging
that no expectation can flip silently, and a representative subset through the real proxies."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from harness import conformance as cf
from harness.cli import main
from harness.proxies import driver
from harness.vocab import Outcome

# -- the catalogue, read back ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[cf.Case, list[x509.Certificate]]]:
    kit = cf._Kit(backend_ip="10.203.0.10")
    out = {}
    for case in cf.catalogue():
        chain, key = cf.materialise(case, kit)
        out[case.id] = (case, x509.load_pem_x509_certificates(chain))
        assert b"PRIVATE KEY" in key
    return out


def test_catalogue_is_large_unique_and_closed() -> None:
    cases = cf.catalogue()
    assert len(cases) >= 150  # issue 24: at least 150 cases through the real proxies
    assert len({c.id for c in cases}) == len(cases)
    assert {c.expected for c in cases} == {"accept", "reject"}
    assert {c.area for c in cases} == {"name", "path", "constraints", "anchor"}
    assert all(c.peer in cf.PEERS and c.anchor in cf.ANCHORS and c.reason for c in cases)
    # Citations look like x509-limbo ids (namespace::...::name), never a file of limbo's.
    assert all(c.limbo.count("::") >= 1 and " " not in c.limbo for c in cases if c.limbo)


def _san(cert: x509.Certificate) -> list[Any]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def test_certificates_say_what_their_case_says(built: dict[str, tuple[cf.Case, list[x509.Certificate]]]) -> None:
    leaf = lambda cid: built[cid][1][0]  # noqa: E731
    chain = lambda cid: built[cid][1]  # noqa: E731
    # The NUL is really inside the dNSName, not cut off by the builder.
    assert [n.value for n in _san(leaf("san-nul-byte"))] == ["www.conformance.test\x00.evil.test"]
    assert [n.value for n in _san(leaf("wildcard-partial-infix"))] == ["w*w.conformance.test"]
    assert _san(leaf("cn-only")) == [] and leaf("cn-only").subject.rfc4514_string() == "CN=www.conformance.test"
    assert _san(leaf("ip-peer-ip-san")) == [x509.IPAddress(ipaddress.ip_address("10.203.0.10"))]
    assert [n.value for n in _san(leaf("ip-peer-ip-in-dns-san"))] == ["10.203.0.10"]
    # Path: the pathlen-0 CA sits above another CA; the expired leaf is expired; the anchor is the root.
    top = chain("pathlen-0-violated")[2]
    assert top.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert chain("pathlen-0-violated")[1].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    exp = leaf("expired-leaf")
    assert exp.not_valid_after_utc < dt.datetime.now(dt.UTC) < built["good-chain"][1][0].not_valid_after_utc
    ku = chain("intermediate-no-keycertsign")[1].extensions.get_extension_for_class(x509.KeyUsage).value
    assert not ku.key_cert_sign
    nc = chain("nc-excluded-match")[1].extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and [n.value for n in nc.value.excluded_subtrees or []] == ["conformance.test"]
    assert leaf("leaf-rsa-1024").public_key().key_size == 1024  # type: ignore[union-attr]
    assert [c.subject for c in chain("chain-unordered")][1:] == [c.subject for c in chain("chain-with-root")][:0:-1]
    # The bad signature is bad: the intermediate's key does not verify it.
    bad, inter = chain("bad-signature")[:2]
    with pytest.raises(InvalidSignature):
        bad.verify_directly_issued_by(inter)
    good, inter = chain("good-chain")[:2]
    good.verify_directly_issued_by(inter)
    # A URI-ID only, beside a CN that names the peer; the forged intermediate has the trusted one's
    # name but not its key; pathlen 1 sits above two more CAs.
    assert [type(n) for n in _san(leaf("cn-with-uri-san-only"))] == [x509.UniformResourceIdentifier]
    assert leaf("cn-with-uri-san-only").subject.rfc4514_string() == "CN=www.conformance.test"
    forged = chain("untrusted-intermediate-same-name")[1]
    assert forged.subject == chain("good-chain")[1].subject
    with pytest.raises((InvalidSignature, ValueError)):  # another key (of another type, too)
        leaf("good-chain").verify_directly_issued_by(forged)
    p1 = chain("pathlen-1-violated")
    assert len(p1) == 4 and p1[3].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert len(_san(leaf("san-peer-last-of-many"))) == 64


# -- judging: the verdict is the proxy's, never the case's --------------------------------------


@pytest.mark.parametrize(
    ("outcome", "reason", "verdict"),
    [
        (Outcome.SERVED, "response from legit", "accept"),
        (Outcome.SPOOFED, "response from impostor x", "accept"),
        (Outcome.BLOCKED, "upstream SSL certificate verify error", "reject"),
        (
            Outcome.ERROR,
            "status 503 without identity marker and no verification line in the proxy log; seat saw: "
            "ssl: tlsv1 alert decrypt error; log: x",
            "reject",
        ),
        (
            Outcome.ERROR,
            "status 503 without identity marker and no verification line in the proxy log; seat saw: "
            "ssl: no shared cipher; log: x",
            "reject",
        ),
        (Outcome.ERROR, "status 502 without identity marker and no verification line in the proxy log", "error"),
        (Outcome.ERROR, "no response: timed out", "error"),
        (Outcome.CONFIG_REJECTED, "nginx: [emerg] unknown directive", "error"),
    ],
)
def test_verdict_comes_from_the_cell(outcome: Outcome, reason: str, verdict: str) -> None:
    assert cf.verdict_of(outcome, reason) == verdict


def _report(rows: list[cf.Row]) -> dict[str, Any]:
    return {
        "meta": {"runtime": "local", "started": "t", "cases": 1, "duration_s": 0.0},
        "rows": [r.to_dict() for r in rows],
    }


def test_a_flipped_expectation_is_a_disagreement() -> None:
    case = next(c for c in cf.catalogue() if c.id == "mismatch-domain")
    right = cf.judge(case, proxy="nginx", outcome=Outcome.BLOCKED, reason="does not match")
    flipped = cf.judge(
        dataclasses.replace(case, expected="accept"), proxy="nginx", outcome=Outcome.BLOCKED, reason="does not match"
    )
    assert right.agrees and not flipped.agrees
    assert flipped.verdict == "reject" and flipped.expected == "accept"
    [s] = cf.summary(_report([flipped]))
    assert (s["agree"], s["disagree"], s["latitude"]) == (0, 1, 0)
    assert cf.disagreements(_report([flipped]), strict_only=True)[0]["case"] == "mismatch-domain"
    # Within latitude it is counted apart, still listed as a difference, never as agreement.
    lat = dataclasses.replace(flipped, latitude=True)
    [s] = cf.summary(_report([lat]))
    assert (s["agree"], s["disagree"], s["latitude"]) == (0, 0, 1)
    assert cf.disagreements(_report([lat])) and not cf.disagreements(_report([lat]), strict_only=True)
    # An error is never an agreement, whatever was expected.
    err = cf.judge(case, proxy="nginx", outcome=Outcome.ERROR, reason="no response: timed out")
    assert not err.agrees and cf.summary(_report([err]))[0]["error"] == 1


def test_markdown_shows_the_run_and_explains_disagreements() -> None:
    case = next(c for c in cf.catalogue() if c.id == "san-nul-byte")
    rows = [
        cf.judge(case, proxy="haproxy", outcome=Outcome.SPOOFED, reason="x", version="2.6.12"),
        cf.judge(case, proxy="nginx", outcome=Outcome.BLOCKED, reason="does not match", version="1.22.1"),
    ]
    page = cf.markdown(_report(rows))
    assert "| haproxy | 2.6.12 |" in page and "| `san-nul-byte` | name | reject | ✗ accept | ✓ |" in page
    assert "### `san-nul-byte`" in page and "ASN1_STRING_to_UTF8" in page
    assert "- as expected: nginx" in page


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "argv",
    [
        ["conformance", "--proxy", "nginxx"],
        ["conformance", "--proxy", "squid"],
        ["conformance", "--case", "no-such-case"],
        ["conformance", "--json", "/no/such/dir/x.json", "--case", "good-chain"],
        ["conformance", "--render", "README.md", "--doc", "/tmp/trustlab-conformance-never.md"],
        ["conformance", "--render", "docs/conformance.json"],
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("trustlab: error: ") and err.count("\n") == 1 and "Traceback" not in err


# -- through the real proxies: a representative subset ------------------------------------------

#: Case -> the verdict each proxy kind gives on this lab's installations (docs/conformance.md).
#: Each row holds at least one case where the proxy differs from the expected verdict, so a test
#: that passed by reading the expectation back would fail here.
OBSERVED: dict[str, dict[str, str]] = {
    "exact-dns-san": dict.fromkeys(cf.KINDS, "accept"),
    "mismatch-domain": dict.fromkeys(cf.KINDS, "reject"),
    "expired-intermediate": dict.fromkeys(cf.KINDS, "reject"),
    "nc-excluded-match": dict.fromkeys(cf.KINDS, "reject"),
    "cn-with-other-san": {
        "nginx": "reject",
        "apache": "accept",
        "haproxy": "accept",
        "caddy": "reject",
        "envoy": "reject",
        "traefik": "reject",
    },
    "san-nul-byte": {
        "nginx": "reject",
        "apache": "reject",
        "haproxy": "accept",
        "caddy": "reject",
        "envoy": "reject",
        "traefik": "reject",
    },
    "ip-peer-ip-in-dns-san": {
        "nginx": "accept",
        "apache": "accept",
        "haproxy": "accept",
        "caddy": "reject",
        "envoy": "reject",
        "traefik": "reject",
    },
    "wildcard-partial-prefix": {
        "nginx": "accept",
        "apache": "reject",
        "haproxy": "accept",
        "caddy": "reject",
        "envoy": "accept",
        "traefik": "reject",
    },
    # The seat serves an RSA-1024 key only below its own security level (harness/runtimes/seat.py).
    "leaf-rsa-1024": {
        "nginx": "reject",
        "apache": "reject",
        "haproxy": "reject",
        "caddy": "accept",
        "envoy": "accept",
        "traefik": "accept",
    },
    "partial-chain-served": {
        "nginx": "reject",
        "apache": "reject",
        "haproxy": "reject",
        "caddy": "accept",
        "envoy": "accept",
        "traefik": "accept",
    },
}


@pytest.fixture(scope="module")
def subset_run(local_runtime: str) -> dict[str, Any]:
    from tests.conftest import REQUIRE_PROXIES

    missing = [k for k in cf.KINDS if not driver(k).find_binary()]
    if missing:
        msg = f"conformance needs {', '.join(missing)}; run: {driver(missing[0]).install_hint()}"
        if REQUIRE_PROXIES:
            pytest.fail(msg)
        pytest.skip(msg)
    cases = cf.select(list(OBSERVED))
    # One case with a deliberately wrong expectation: it must come back as a disagreement everywhere.
    wrong = dataclasses.replace(
        next(c for c in cases if c.id == "exact-dns-san"), id="exact-dns-san-flipped", expected="reject"
    )
    return cf.run([*cases, wrong], cf.KINDS, runtime=local_runtime)


@pytest.mark.integration
@pytest.mark.parametrize("kind", cf.KINDS)
def test_real_proxy_verdicts(subset_run: dict[str, Any], kind: str) -> None:
    rows = {r["case"]: r for r in subset_run["rows"] if r["proxy"] == kind}
    got = {cid: rows[cid]["verdict"] for cid in OBSERVED}
    assert got == {cid: seen[kind] for cid, seen in OBSERVED.items()}, {
        cid: rows[cid]["reason"] for cid in OBSERVED if got[cid] != OBSERVED[cid][kind]
    }
    for cid in OBSERVED:
        r = rows[cid]
        assert r["proxy_version"] and r["agrees"] == (r["verdict"] == r["expected"])
        if r["verdict"] == "reject":
            assert "accepted" not in r["reason"] and r["reason"]


@pytest.mark.integration
def test_a_wrong_expectation_through_real_proxies_is_reported(subset_run: dict[str, Any]) -> None:
    flipped = [r for r in subset_run["rows"] if r["case"] == "exact-dns-san-flipped"]
    assert len(flipped) == len(cf.KINDS)
    assert all(r["verdict"] == "accept" and not r["agrees"] for r in flipped)
    strict = {(r["proxy"], r["case"]) for r in cf.disagreements(subset_run, strict_only=True)}
    assert {(k, "exact-dns-san-flipped") for k in cf.KINDS} <= strict
    assert ("haproxy", "san-nul-byte") in strict and ("nginx", "san-nul-byte") not in strict


@pytest.mark.integration
def test_cli_writes_json_and_page_and_fails_on_a_disagreement(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, doc = tmp_path / "c.json", tmp_path / "c.md"
    rc = main(
        [
            "conformance",
            "--proxy",
            "nginx,haproxy",
            "--case",
            "san-nul-byte",
            "--case",
            "good-chain",
            "--json",
            str(out),
            "--doc",
            str(doc),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 1 and "differs: haproxy san-nul-byte: accept, expected reject" in text
    data = json.loads(out.read_text())
    assert {(s["proxy"], s["cases"], s["disagree"]) for s in data["summary"]} == {("nginx", 2, 0), ("haproxy", 2, 1)}
    assert "### `san-nul-byte`" in doc.read_text()
    assert main(["conformance", "--proxy", "nginx", "--case", "good-chain"]) == 0


def test_the_probe_knows_a_case_identity_only_when_it_was_presented() -> None:
    from harness.runtimes.probe import Response, decide

    assert (
        decide(presented="san-nul-byte", response=Response(200, "san-nul-byte"), block_reason=None)[0]
        is Outcome.SPOOFED
    )
    # Another case's marker, or garbage, is still an error (a stale connection, a confused seat).
    assert decide(presented="san-nul-byte", response=Response(200, "cn-only"), block_reason=None)[0] is Outcome.ERROR
    assert decide(presented="legit", response=Response(200, "san-nul-byte"), block_reason=None)[0] is Outcome.ERROR


@pytest.mark.docker
def test_docker_runtime_gives_the_same_verdicts(docker_ready: str) -> None:
    """The seat's address is the docker lab's (127.0.0.10), not the local one's: the cases naming
    it (the iPAddress SANs) are issued for it, and the verdicts are the local runtime's."""
    wanted = ["san-nul-byte", "ip-peer-ip-in-dns-san", "partial-chain-served"]
    report = cf.run(cf.select(wanted), cf.KINDS, runtime=docker_ready)
    assert report["meta"]["runtime"] == "docker" and report["meta"]["backend_ip"] != "10.203.0.10"
    got = {(r["proxy"], r["case"]): r["verdict"] for r in report["rows"]}
    assert got == {(k, cid): OBSERVED[cid][k] for cid in wanted for k in cf.KINDS}


# -- the published page ---------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_published_page_is_generated_from_the_published_run(tmp_path: Path) -> None:
    report = cf.read_json(DOCS / "conformance.json")
    assert cf.markdown(report) == (DOCS / "conformance.md").read_text(), (
        "docs/conformance.md differs from its JSON: run trustlab conformance --render docs/conformance.json "
        "--doc docs/conformance.md"
    )
    assert main(["conformance", "--render", str(DOCS / "conformance.json"), "--doc", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text() == (DOCS / "conformance.md").read_text()
    # The run the page shows: every case of the catalogue on the six kinds (every installed version),
    # no error, and the other runtime's verdicts shared.
    kinds = {r["proxy"] for r in report["rows"]}
    assert kinds == set(cf.KINDS) and {r["case"] for r in report["rows"]} == {c.id for c in cf.catalogue()}
    assert len(report["rows"]) >= len(cf.catalogue()) * len(cf.KINDS)
    assert not [r for r in report["rows"] if r["verdict"] == "error"]
    other = report["meta"]["against"]
    assert other["runtime"] == "docker" and other["shared"] == len(report["rows"]) and other["differ"] == []


def test_every_published_disagreement_is_explained() -> None:
    report = cf.read_json(DOCS / "conformance.json")
    unexplained = sorted(
        {
            (r["case"], r["proxy"])
            for r in cf.disagreements(report)
            if r["case"] not in cf.EXPLAIN and f"{r['case']}@{r['proxy']}" not in cf.EXPLAIN
        }
    )
    assert unexplained == []
    # Explanations name only cases that exist.
    ids = {c.id for c in cf.catalogue()}
    assert {k.split("@")[0] for k in cf.EXPLAIN} <= ids


def test_the_library_on_its_own_is_openssl_verify() -> None:
    """``openssl verify`` with the case's anchor, chain and peer: the column the proxies on the same
    library are compared with (it needs no proxy)."""
    kit = cf._Kit(backend_ip="10.203.0.10")
    wanted = [
        "good-chain",
        "san-nul-byte",
        "ip-peer-ip-san",
        "ip-peer-ip-in-dns-san",
        "partial-chain-served",
        "cn-only",
        "leaf-rsa-1024",
    ]
    lib = cf.library_verdicts(cf.select(wanted), kit)
    assert lib["library"].startswith("OpenSSL ")
    got = {cid: v["verdict"] for cid, v in lib["cases"].items()}
    assert got == {
        "good-chain": "accept",
        "san-nul-byte": "reject",
        "ip-peer-ip-san": "accept",
        "ip-peer-ip-in-dns-san": "reject",
        "partial-chain-served": "reject",
        "cn-only": "accept",
        "leaf-rsa-1024": "reject",
    }
    assert "hostname mismatch" in lib["cases"]["san-nul-byte"]["reason"]
    assert "IP address mismatch" in lib["cases"]["ip-peer-ip-in-dns-san"]["reason"]


def test_the_published_page_names_where_proxies_leave_their_library() -> None:
    page = (DOCS / "conformance.md").read_text()
    section = page.split("## Where a proxy differs from its own TLS library", 1)[1].split("## Versions")[0]
    assert "- haproxy 2.6.12 `san-nul-byte`: the proxy accepts, OpenSSL rejects" in section
    assert "- apache 2.4.71 `cn-with-other-san`: the proxy accepts, OpenSSL rejects" in section
    assert "- nginx 1.22.1 `ip-peer-ip-san`: the proxy rejects, OpenSSL accepts" in section
    assert "nginx 1.22.1 `san-nul-byte`" not in section
