"""Each identity's certificate has exactly the meaning DESIGN.md gives it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from harness.pki import BUNDLE_FILE, CA_FILE, LabPKI
from harness.vocab import BACKEND_NAME, IDENTITY_IDS, LOCAL_LAB_IP, SIBLING_NAME


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI.mint()


def chain(pki: LabPKI, ident: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pki.identity(ident).chain_pem)


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [str(a) for a in ext.get_values_for_type(x509.IPAddress)]


def cn(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def internal_root(pki: LabPKI) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.internal_root_pem)


def test_every_identity_is_minted(pki: LabPKI) -> None:
    assert tuple(pki.identities) == IDENTITY_IDS


def test_legit_serves_leaf_and_intermediate_issued_by_the_internal_root(pki: LabPKI) -> None:
    leaf, inter = chain(pki, "legit")
    assert sans(leaf) == ([BACKEND_NAME], [])
    assert cn(leaf) == BACKEND_NAME
    assert leaf.issuer == inter.subject
    assert inter.issuer == internal_root(pki).subject
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_legit_no_chain_is_the_same_leaf_alone(pki: LabPKI) -> None:
    only = chain(pki, "legit-no-chain")
    assert len(only) == 1
    assert only[0] == chain(pki, "legit")[0]


@pytest.mark.parametrize("ident", ["rogue-ca", "public-ca"])
def test_foreign_cas_issue_the_backend_name(pki: LabPKI, ident: str) -> None:
    leaf = chain(pki, ident)[0]
    assert sans(leaf)[0] == [BACKEND_NAME]
    assert leaf.issuer != chain(pki, "legit")[1].subject
    assert leaf.issuer != internal_root(pki).subject


def test_public_ca_is_in_the_system_bundle_and_rogue_is_nowhere(pki: LabPKI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki.write_to(tmp_path)
    bundle = x509.load_pem_x509_certificates((tmp_path / BUNDLE_FILE).read_bytes())
    ca_file = x509.load_pem_x509_certificates((tmp_path / CA_FILE).read_bytes())
    subjects = {c.subject for c in bundle}
    assert [c.subject for c in ca_file] == [internal_root(pki).subject]
    assert chain(pki, "public-ca")[0].issuer in subjects
    assert chain(pki, "rogue-ca")[0].issuer not in subjects


def test_self_signed_is_its_own_issuer(pki: LabPKI) -> None:
    (leaf,) = chain(pki, "self-signed")
    assert leaf.issuer == leaf.subject
    assert sans(leaf)[0] == [BACKEND_NAME]


def test_wrong_name_is_an_internal_cert_for_the_sibling(pki: LabPKI) -> None:
    leaf, inter = chain(pki, "wrong-name")
    assert sans(leaf) == ([SIBLING_NAME], [])
    assert inter == chain(pki, "legit")[1]


def test_validity_windows(pki: LabPKI) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = chain(pki, "expired")[0]
    future = chain(pki, "not-yet-valid")[0]
    legit = chain(pki, "legit")[0]
    assert expired.not_valid_after_utc < now
    assert future.not_valid_before_utc > now
    assert legit.not_valid_before_utc < now < legit.not_valid_after_utc
    assert sans(expired)[0] == sans(future)[0] == [BACKEND_NAME]


def test_ip_san_has_only_the_lab_ip_and_no_cn(pki: LabPKI) -> None:
    leaf = chain(pki, "ip-san")[0]
    assert sans(leaf) == ([], [LOCAL_LAB_IP])
    assert cn(leaf) is None
    assert LabPKI.mint(backend_ip="10.9.8.7").identity("ip-san").describe()["sans"] == ["IP:10.9.8.7"]
    ipaddress.ip_address(LOCAL_LAB_IP)


def test_wildcard_is_star_internal(pki: LabPKI) -> None:
    assert sans(chain(pki, "wildcard")[0]) == (["*.internal"], [])


def test_files_are_private(pki: LabPKI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = pki.write_to(tmp_path / "pki")
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    keys = list(out.rglob("*.key"))
    assert len(keys) == len(IDENTITY_IDS) + 1
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (out / "manifest.json").exists()


def test_no_ca_private_key_is_ever_written(pki: LabPKI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = pki.write_to(tmp_path / "pki")
    for key in out.rglob("*.key"):
        stem = key.name.removesuffix(".key")
        assert stem in IDENTITY_IDS or stem == "default-site"
    assert b"PRIVATE KEY" not in (out / CA_FILE).read_bytes()


@pytest.fixture(scope="module")
def deep() -> LabPKI:
    return LabPKI.mint(optional=("wildcard-parent", "cn-only", "san-other-cn-backend"), backends=("api.svc.internal",))


def test_a_scenario_backend_gets_its_own_identities(deep: LabPKI) -> None:
    other = deep.for_backend("api.svc.internal")
    assert sans(x509.load_pem_x509_certificates(other.identity("legit").chain_pem)[0]) == (["api.svc.internal"], [])
    # wildcard stays the one-label case DESIGN.md defines, whatever the backend name.
    assert sans(x509.load_pem_x509_certificates(other.identity("wildcard").chain_pem)[0]) == (["*.internal"], [])
    assert deep.for_backend(BACKEND_NAME) is deep


def test_wildcard_parent_is_one_label_up_and_only_where_it_differs(deep: LabPKI) -> None:
    other = deep.for_backend("api.svc.internal")
    leaf = x509.load_pem_x509_certificates(other.identity("wildcard-parent").chain_pem)[0]
    assert sans(leaf) == (["*.svc.internal"], [])
    # backend-api.internal's parent is one label: its wildcard-parent would be the wildcard itself.
    assert "wildcard-parent" not in (deep.optional or {})


def test_cn_only_has_no_san_and_chains_to_the_internal_root(deep: LabPKI) -> None:
    leaf, inter = chain(deep, "cn-only")
    assert cn(leaf) == BACKEND_NAME
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert leaf.issuer == inter.subject
    leaf.verify_directly_issued_by(inter)


def test_san_other_cn_backend(deep: LabPKI) -> None:
    leaf = chain(deep, "san-other-cn-backend")[0]
    assert sans(leaf) == ([SIBLING_NAME], [])
    assert cn(leaf) == BACKEND_NAME


def test_other_backends_are_written_privately(deep: LabPKI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = deep.write_to(tmp_path / "pki")
    sub = out / "backends" / "api.svc.internal" / "identities"
    assert (sub / "wildcard-parent.pem").exists()
    for d in (out / "backends", sub.parent, sub):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


# -- every optional identity and the client material, read back (issue 19: no dependence on a
# library's tolerance; cryptography 51 refuses the empty subjectAltName trustme would add) --------


@pytest.fixture(scope="module")
def full() -> LabPKI:
    from harness.vocab import OPTIONAL_IDENTITIES

    return LabPKI.mint(optional=tuple(s.id for s in OPTIONAL_IDENTITIES), backends=("api.svc.internal",))


def test_every_optional_identity_is_minted(full: LabPKI) -> None:
    from harness.vocab import OPTIONAL_IDENTITIES

    minted = set(full.optional or {}) | set(full.for_backend("api.svc.internal").optional or {})
    assert minted == {s.id for s in OPTIONAL_IDENTITIES}


def _pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def test_proxy_client_certificate_names_no_host(full: LabPKI) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    files = full.files or {}
    (client,) = _pem_certs(files["proxy-client.crt"][0])
    (client_ca,) = _pem_certs(files["client-ca.pem"][0])
    assert cn(client) == "trustlab proxy client"
    with pytest.raises(x509.ExtensionNotFound):
        client.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    client.verify_directly_issued_by(client_ca)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The pair files carry the certificate then its key; the two-certificate file another CA's first.
    assert files["proxy-client.pem"][1] and b"PRIVATE KEY" in files["proxy-client.pem"][0]
    first, second = _pem_certs(files["proxy-clients-two.pem"][0])
    assert first.issuer != client_ca.subject and second == client


def test_client_ca_signed_is_a_server_certificate_of_the_client_ca(full: LabPKI) -> None:
    leaf = chain(full, "client-ca-signed")[0]
    (client_ca,) = _pem_certs((full.files or {})["client-ca.pem"][0])
    leaf.verify_directly_issued_by(client_ca)
    assert sans(leaf) == ([BACKEND_NAME], [])


def test_revoked_is_listed_in_the_intermediate_crl_only(full: LabPKI) -> None:
    leaf, inter = chain(full, "revoked")
    files = full.files or {}
    crl_inter = x509.load_pem_x509_crl(files["crl-intermediate.pem"][0])
    crl_root = x509.load_pem_x509_crl(files["crl-root.pem"][0])
    assert crl_inter.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert crl_inter.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert len(list(crl_root)) == 0


def test_legit_deep_serves_two_intermediates(full: LabPKI) -> None:
    leaf, second, first = chain(full, "legit-deep")
    leaf.verify_directly_issued_by(second)
    second.verify_directly_issued_by(first)
    first.verify_directly_issued_by(internal_root(full))


def test_self_signed_has_only_the_backend_name(full: LabPKI) -> None:
    (leaf,) = chain(full, "self-signed")
    leaf.verify_directly_issued_by(leaf)
    assert cn(leaf) == BACKEND_NAME and sans(leaf) == ([BACKEND_NAME], [])


def test_built_leaf_refuses_nothing_it_is_asked(full: LabPKI) -> None:
    """build_leaf with an IP SAN and no CN: the SAN is then critical (RFC 5280 4.2.1.6)."""
    import datetime as _dt

    import trustme

    from harness.pki import build_leaf

    ca = trustme.CA()
    cert = build_leaf("x", ca, common_name=None, sans=("10.0.0.1",), now=_dt.datetime.now(_dt.UTC)).leaf
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ext.critical and sans(cert) == ([], ["10.0.0.1"])
    assert cert.subject == x509.Name([])
