"""Issue 14: mTLS to the backend, trust carried by connection/session reuse, revocation.

Unit tests for the new PKI material, scenario fields and seat modes (no proxy), then the
live evidence on the local runtime: each "it gets through" next to its "fails when fixed".
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from harness import scenarios
from harness.errors import ScenarioError
from harness.pki import PROXY_CLIENT_CN, LabPKI
from harness.runtimes.seat import IDENTITY_HEADER, Seat
from harness.vocab import BACKEND_NAME, IDENTITY_IDS, Outcome


# -- PKI -------------------------------------------------------------------------------------
def test_client_material_and_crls_are_opt_in(tmp_path: Path) -> None:
    assert LabPKI.mint().files == {}
    pki = LabPKI.mint(optional=("client-ca-signed", "revoked"))
    d = pki.write_to(tmp_path / "pki")
    client_ca = x509.load_pem_x509_certificate((d / "client-ca.pem").read_bytes())
    proxy_cert = x509.load_pem_x509_certificate((d / "proxy-client.crt").read_bytes())
    impostor = pki.identity("client-ca-signed").leaf
    # The impostor and the proxy's client certificate share one issuer: the client CA.
    assert proxy_cert.issuer == impostor.issuer == client_ca.subject
    assert PROXY_CLIENT_CN in proxy_cert.subject.rfc4514_string()
    for key in ("proxy-client.key", "proxy-client.pem", "proxy-clients-two.pem", "proxy-client-with-ca.pem"):
        assert (d / key).stat().st_mode & 0o777 == 0o600, key
    # The second file lists another CA's certificate first, the right one second.
    two = x509.load_pem_x509_certificates((d / "proxy-clients-two.pem").read_bytes())
    assert [c.issuer == client_ca.subject for c in two] == [False, True]
    with_ca = x509.load_pem_x509_certificates((d / "proxy-client-with-ca.pem").read_bytes())
    assert with_ca[-1] == client_ca


def test_crl_lists_revoked_only(tmp_path: Path) -> None:
    pki = LabPKI.mint(optional=("revoked",))
    d = pki.write_to(tmp_path / "pki")
    crl = x509.load_pem_x509_crl((d / "crl-intermediate.pem").read_bytes())
    revoked = pki.identity("revoked").leaf
    legit = pki.identity("legit").leaf
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(legit.serial_number) is None
    assert crl.issuer == revoked.issuer
    root_crl = x509.load_pem_x509_crl((d / "crl-root.pem").read_bytes())
    assert len(list(root_crl)) == 0

    # OpenSSL agrees: revoked with the full set, legit fails with the intermediate's CRL only.
    def verify(leaf: str, crl_file: str) -> str:
        chain = str(d / "identities" / f"{leaf}.pem")
        proc = subprocess.run(
            [
                "openssl",
                "verify",
                "-crl_check_all",
                "-CAfile",
                str(d / "internal-pki.pem"),
                "-CRLfile",
                str(d / crl_file),
                "-untrusted",
                chain,
                chain,
            ],
            capture_output=True,
            text=True,
        )
        return proc.stdout + proc.stderr

    assert "certificate revoked" in verify("revoked", "crl-chain.pem")
    assert ": OK" in verify("legit", "crl-chain.pem")
    assert "unable to get certificate CRL" in verify("legit", "crl-intermediate.pem")


# -- scenario fields -------------------------------------------------------------------------
def _parse(data: dict[str, Any], sid: str = "nginx/x") -> scenarios.Scenario:
    base: dict[str, Any] = {"proxy": "nginx", "title": "t", "expected": {i: "blocked" for i in IDENTITY_IDS}}
    return scenarios.parse({**base, **data}, scenario_id=sid, where="x.toml")


def test_multi_policy_fields_are_validated() -> None:
    sc = _parse({"multi_policy": True, "prime": "/loose/", "config": "proxy_pass {upstream};"}, sid="nginx/keepalive-x")
    assert sc.multi_policy and sc.cell_options()["prime"] == "/loose/"
    with pytest.raises(ScenarioError, match="must say what it tests"):
        _parse({"multi_policy": True, "prime": "/loose/"}, sid="nginx/two-locations")
    with pytest.raises(ScenarioError, match="needs prime"):
        _parse({"multi_policy": True}, sid="nginx/reuse-x")
    with pytest.raises(ScenarioError, match="only a multi-policy scenario"):
        _parse({"prime": "/loose/"})
    assert _parse({}).cell_options() == {"sni_routing": False}  # the default cell is unchanged


def test_two_policies_in_one_process_must_be_marked() -> None:
    two = "proxy_pass {upstream};\nlocation /loose/ {\n    proxy_pass {upstream};\n}\n"
    with pytest.raises(ScenarioError, match="2 proxy_pass lines run two policies"):
        _parse({"config": two})
    assert _parse({"config": two, "multi_policy": True, "prime": "/loose/"}, sid="nginx/reuse-x").multi_policy
    assert not _parse({"config": "proxy_pass {upstream};"}).multi_policy


def test_pki_file_placeholders_need_their_identity() -> None:
    with pytest.raises(ScenarioError, match="client-ca-signed"):
        _parse({"directives": {"proxy_ssl_certificate": "{client_cert}"}})
    with pytest.raises(ScenarioError, match="list it in"):
        _parse({"directives": {"proxy_ssl_crl": "{crl_chain}"}})
    with pytest.raises(ScenarioError, match="seat.client_auth"):
        _parse({"seat": {"client_auth": True}})
    ok = _parse(
        {
            "directives": {"proxy_ssl_crl": "{crl_chain}"},
            "expected": {**{i: "blocked" for i in IDENTITY_IDS}, "revoked": "blocked"},
        }
    )
    assert ok.optional_identities == ("revoked",)


def test_builtin_multi_policy_scenarios() -> None:
    multi = [s for s in scenarios.builtin().values() if s.multi_policy]
    assert len(multi) >= 3
    assert {s.proxy.value for s in multi} == {"nginx", "apache", "haproxy"}
    for sc in multi:
        assert any(w in sc.variant for w in scenarios.MULTI_POLICY_WORDS), sc.id
        assert sc.sources, sc.id


# -- the seat's new modes (no proxy) -----------------------------------------------------------
@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    return LabPKI.mint(optional=("client-ca-signed", "revoked")).write_to(tmp_path / "pki")


def _client(pki_dir: Path, *, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki_dir / "internal-pki.pem")
    if cert:
        ctx.load_cert_chain(pki_dir / "proxy-client.crt", pki_dir / "proxy-client.key")
    return ctx


def _get(conn: http.client.HTTPSConnection, path: str = "/") -> str | None:
    conn.request("GET", path, headers={"Host": BACKEND_NAME})
    resp = conn.getresponse()
    resp.read()
    return resp.getheader(IDENTITY_HEADER)


def test_keepalive_records_a_reused_connection(pki_dir: Path) -> None:
    with Seat(pki_dir) as seat:
        seat.present("legit", keepalive=True)
        ctx = _client(pki_dir, cert=False)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", seat.port, context=ctx)
        assert _get(conn) == "legit" and _get(conn) == "legit"
        log = seat.wait_settled(0, timeout=2)
        assert [c.reused for c in log] == [False, True]
        assert log[1].conn == log[0].seq
        # The next cell's present() closes the idle connection: nothing carries over.
        seat.present("rogue-ca", keepalive=True)
        with pytest.raises((http.client.HTTPException, OSError)):
            _get(conn)
        conn.close()


def test_default_mode_still_closes_after_one_response(pki_dir: Path) -> None:
    with Seat(pki_dir) as seat:
        ctx = _client(pki_dir, cert=False)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", seat.port, context=ctx)
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("Connection") == "close"
        conn.close()


def test_resumed_session_is_recorded(pki_dir: Path) -> None:
    ctx = _client(pki_dir, cert=False)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the last handshake meets an impostor
    with Seat(pki_dir) as seat:
        seat.present("legit")
        first = ctx.wrap_socket(socket.create_connection(("127.0.0.1", seat.port)), server_hostname=BACKEND_NAME)
        first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while first.recv(4096):  # reading also takes the TLS 1.3 session tickets
            pass
        session = first.session
        first.close()
        again = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", seat.port)), server_hostname=BACKEND_NAME, session=session
        )
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while again.recv(4096):
            pass
        assert again.session_reused
        again.close()
        log = seat.wait_settled(0, timeout=2)
        assert [c.resumed for c in log] == [False, True]
        # Each identity has its own context: another identity never resumes that session.
        seat.present("public-ca")
        other = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", seat.port)), server_hostname=BACKEND_NAME, session=session
        )
        assert not other.session_reused
        other.close()


def test_client_auth_records_the_certificate_and_advertises_the_client_ca(pki_dir: Path) -> None:
    with Seat(pki_dir) as seat:
        seat.present("legit", client_auth=True)
        ctx = _client(pki_dir)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", seat.port, context=ctx)
        assert _get(conn) == "legit"
        conn.close()
        # The legitimate backend requires a certificate: none, no response.
        bare = _client(pki_dir, cert=False)
        bare.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", seat.port, context=bare)
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            _get(conn)
        conn.close()
        log = seat.wait_settled(0, timeout=2)
        assert log[0].client_subject == f"O=trustlab proxy,CN={PROXY_CLIENT_CN}"
        assert log[0].client_issuer == "O=trustlab client CA"
        assert log[1].client_subject is None and log[1].error
        # The CertificateRequest names the client CA (what Apache picks its certificate by).
        out = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{seat.port}", "-servername", BACKEND_NAME],
            input="",
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert "Acceptable client certificate CA names" in out
        assert "trustlab client CA" in out.split("Acceptable client certificate CA names", 1)[1][:300]


# -- live evidence (local runtime) ---------------------------------------------------------------
LIVE = [
    "nginx/keepalive-shared-upstream",
    "nginx/keepalive-separate-upstreams",
    "nginx/resume-across-locations",
    "nginx/resume-separate-upstreams",
    "nginx/resume-verify-off-location",
    "apache/keepalive-two-workers",
    "haproxy/reuse-two-servers",
    "apache/mtls-good",
    "apache/mtls-chain-file",
    "apache/mtls-ca-in-machine-file",
    "apache/mtls-pick-by-ca",
    "nginx/mtls-verify-off",
    "nginx/crl-missing",
    "nginx/crl-chain",
    "nginx/crl-incomplete",
    "apache/crl-leaf",
    "apache/crl-without-check",
    "haproxy/crl-incomplete",
]


@pytest.fixture(scope="module")
def live(local_runtime: str) -> Any:
    from harness import runner

    return runner.run([scenarios.resolve(s) for s in LIVE], runtime=local_runtime)


@pytest.mark.integration
def test_live_cells_match_their_scenarios(live: Any) -> None:
    assert not live.mismatches, [(c.scenario, c.identity, c.outcome.value, c.reason) for c in live.mismatches]


@pytest.mark.integration
def test_keepalive_pool_carries_an_unverified_connection(live: Any) -> None:
    ridden = live.cell("nginx/keepalive-shared-upstream", "rogue-ca")
    assert ridden.outcome is Outcome.SPOOFED and ridden.reuse == "reused connection"
    assert ridden.primed and "marker rogue-ca" in ridden.primed  # the loose location let it in first
    fixed = live.cell("nginx/keepalive-separate-upstreams", "rogue-ca")
    assert fixed.outcome is Outcome.BLOCKED and fixed.reuse is None
    for sid in ("apache/keepalive-two-workers", "haproxy/reuse-two-servers"):
        assert live.cell(sid, "rogue-ca").outcome is Outcome.BLOCKED, sid
        assert all(c.reuse is None for c in live.cells if c.scenario == sid), sid


@pytest.mark.integration
def test_shared_session_carries_the_broad_policys_verdict(live: Any) -> None:
    resumed = live.cell("nginx/resume-across-locations", "public-ca")
    assert resumed.outcome is Outcome.SPOOFED and resumed.reuse == "resumed session"
    assert live.cell("nginx/resume-separate-upstreams", "public-ca").outcome is Outcome.BLOCKED
    # The other way round: a session made with verification off fails the strict policy, legit too.
    refused = live.cell("nginx/resume-verify-off-location", "legit")
    assert refused.outcome is Outcome.BLOCKED and refused.reuse == "resumed session"
    assert "20:unable to get local issuer certificate" in refused.reason


@pytest.mark.integration
def test_apache_client_chain_widens_backend_trust(live: Any) -> None:
    assert live.cell("apache/mtls-good", "client-ca-signed").outcome is Outcome.BLOCKED
    for sid in ("apache/mtls-chain-file", "apache/mtls-ca-in-machine-file"):
        cell = live.cell(sid, "client-ca-signed")
        assert cell.outcome is Outcome.SPOOFED, sid
    picked = live.cell("apache/mtls-pick-by-ca", "legit")
    assert picked.outcome is Outcome.SERVED
    assert picked.client_cert == f"O=trustlab proxy,CN={PROXY_CLIENT_CN} (issuer O=trustlab client CA)"


@pytest.mark.integration
def test_impostors_receive_the_client_certificate(live: Any) -> None:
    cell = live.cell("nginx/mtls-verify-off", "client-ca-signed")
    assert cell.outcome is Outcome.SPOOFED and PROXY_CLIENT_CN in (cell.client_cert or "")


@pytest.mark.integration
def test_revocation(live: Any) -> None:
    assert live.cell("nginx/crl-missing", "revoked").outcome is Outcome.SPOOFED
    assert "23:certificate revoked" in live.cell("nginx/crl-chain", "revoked").reason
    assert live.cell("nginx/crl-chain", "legit").outcome is Outcome.SERVED
    assert "3:unable to get certificate CRL" in live.cell("nginx/crl-incomplete", "legit").reason
    assert live.cell("apache/crl-leaf", "legit").outcome is Outcome.SERVED
    assert "(23): certificate revoked" in live.cell("apache/crl-leaf", "revoked").reason
    assert live.cell("apache/crl-without-check", "revoked").outcome is Outcome.SPOOFED
    assert live.cell("haproxy/crl-incomplete", "legit").outcome is Outcome.BLOCKED


# -- the same evidence on the docker runtime (the seat runs in its own container) ---------------
@pytest.mark.docker
def test_docker_seat_gives_the_same_evidence(live: Any) -> None:
    import os

    from harness import runner
    from harness.runtimes import images

    ready, why = images.docker_ready()
    if not ready:
        if os.environ.get("TRUSTLAB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"TRUSTLAB_REQUIRE_DOCKER=1 but {why}")
        pytest.skip(why)
    on_docker = runner.run([scenarios.resolve(s) for s in LIVE], runtime="docker", seed=14)
    assert not on_docker.mismatches

    def evidence(r: Any) -> dict[tuple[str, str], tuple[object, ...]]:
        return {(c.scenario, c.identity): (c.outcome, c.reuse, c.client_cert) for c in r.cells}

    assert evidence(on_docker) == evidence(live)
    assert on_docker.cell("nginx/keepalive-shared-upstream", "rogue-ca").reuse == "reused connection"
    assert on_docker.cell("nginx/resume-across-locations", "public-ca").reuse == "resumed session"
