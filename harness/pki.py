"""The lab's throwaway PKI, minted with trustme.

The internal PKI is *root -> intermediate -> leaf*; every identity of DESIGN.md gets the
certificate that gives it exactly its meaning. Files are written to a private directory
(0700) with keys at 0600::

    DIR/internal-pki.pem          the internal root only: what a proxy should trust
    DIR/system-bundle.pem         internal root + the lab's "public" CA: a broad OS bundle
    DIR/identities/<id>.pem       what the seat presents (leaf, then the chain it serves)
    DIR/identities/<id>.key       its private key
    DIR/default-site.{pem,key}    a multi-site backend's default certificate (no SNI)
    DIR/manifest.json             what each file is

With the optional identity ``client-ca-signed`` (mTLS scenarios) the proxy's own client
material, read by the proxy from the lab directory like the trust files::

    DIR/client-ca.pem             the CA that issued the proxy's client certificate (a root)
    DIR/proxy-client.crt|.key     the proxy's client certificate and key (nginx)
    DIR/proxy-client.pem          certificate + key in one file (Apache, HAProxy)
    DIR/proxy-client-with-ca.pem  certificate + key + client CA (Apache 2.4.59+ reads the CA too)
    DIR/proxy-clients-two.pem     a client certificate of another CA, then the right one

With the optional identity ``revoked`` (revocation scenarios), CRLs in PEM::

    DIR/crl-intermediate.pem      the internal intermediate's CRL (lists ``revoked``)
    DIR/crl-root.pem              the internal root's CRL (lists nothing)
    DIR/crl-chain.pem             both: a CRL for every CA in the chain
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.vocab import (
    BACKEND_NAME,
    DEFAULT_SITE_NAME,
    IDENTITIES,
    LOCAL_LAB_IP,
    OPTIONAL_IDENTITIES,
    SIBLING_NAME,
    identity_spec,
    wildcard_parent,
)

CA_FILE = "internal-pki.pem"
BUNDLE_FILE = "system-bundle.pem"


@dataclass(frozen=True)
class IdentityCert:
    """One identity's certificate material, in PEM."""

    id: str
    chain_pem: bytes
    key_pem: bytes

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    def write_to(self, directory: Path) -> tuple[Path, Path]:
        """Write ``<id>.pem`` and ``<id>.key`` (0600) into *directory*."""
        return _write(directory / f"{self.id}.pem", self.chain_pem), _write_secret(
            directory / f"{self.id}.key", self.key_pem
        )

    def describe(self) -> dict[str, object]:
        """Subject, SANs, issuer, validity and meaning, for ``trustlab pki show``."""
        leaf = self.leaf
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)] + [
                f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)
            ]
        except x509.ExtensionNotFound:
            sans = []
        spec = identity_spec(self.id) if self.id in _IDS else None
        return {
            "identity": self.id,
            "subject": leaf.subject.rfc4514_string(),
            "sans": sans,
            "issuer": leaf.issuer.rfc4514_string(),
            "not_before": leaf.not_valid_before_utc.isoformat(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "chain_served": len(x509.load_pem_x509_certificates(self.chain_pem)),
            "legitimate": spec.legitimate if spec else None,
            "meaning": spec.meaning if spec else "",
        }


_IDS = {s.id for s in IDENTITIES + OPTIONAL_IDENTITIES}


@dataclass(frozen=True)
class LabPKI:
    """Every certificate the lab needs; mint a fresh one per run with :meth:`mint`."""

    internal_root_pem: bytes
    public_root_pem: bytes
    identities: dict[str, IdentityCert]
    default_site: IdentityCert
    backend_ip: str
    backend_name: str = BACKEND_NAME
    #: Optional identities (``legit-deep``), written next to the built-in ones.
    optional: dict[str, IdentityCert] | None = None
    #: The identities of further backend names (``api.svc.internal``), same CAs, by name.
    others: dict[str, LabPKI] | None = None
    #: Extra files for the optional identities' scenarios (client material, CRLs):
    #: name -> (bytes, secret?), written at the top of the PKI directory.
    files: dict[str, tuple[bytes, bool]] | None = None

    @classmethod
    def mint(
        cls,
        *,
        backend_ip: str = LOCAL_LAB_IP,
        backend_name: str = BACKEND_NAME,
        optional: tuple[str, ...] = (),
        backends: tuple[str, ...] = (),
        sibling_name: str = SIBLING_NAME,
    ) -> LabPKI:
        """Mint the internal PKI and one certificate per built-in identity.

        *backend_name* is the name the legitimate backend's certificate carries (and every
        impostor claims); ``trustlab check`` passes the host name of the config's own upstream.
        The wildcard identity covers it from one label up (``*.internal`` for the default).
        *optional* names optional identities to mint as well (``legit-deep``); none by default.
        *backends* are further backend names scenarios set (``backend = "api.svc.internal"``):
        each gets its own full set of identities from the same CAs (see :meth:`for_backend`),
        with ``wildcard`` the one-label ``*.internal`` as the identity table (harness.vocab) defines it.
        *sibling_name* is the compromised sibling ``wrong-name`` is issued to; ``trustlab check``
        picks one none of the config's upstreams uses (else the "impostor" would be legitimate).
        """
        unknown = [i for i in optional if i not in {s.id for s in OPTIONAL_IDENTITIES}]
        if unknown:
            raise KeyError(unknown[0])
        now = dt.datetime.now(dt.UTC)
        root = trustme.CA(organization_name="trustlab internal root")
        inter = root.create_child_ca()
        cas = _CAs(
            inter, trustme.CA(organization_name="trustlab rogue CA"), trustme.CA(organization_name="trustlab public CA")
        )
        wildcard = "*." + (backend_name.split(".", 1)[1] if "." in backend_name else "internal")
        ids, extra = _identity_set(cas, backend_name, backend_ip, wildcard, optional, now, sibling=sibling_name)
        assert tuple(ids) == tuple(s.id for s in IDENTITIES)
        others = {
            name: dict(
                zip(
                    ("identities", "optional"),
                    _identity_set(cas, name, backend_ip, "*." + name.rsplit(".", 1)[-1], optional, now),
                    strict=True,
                )
            )
            for name in dict.fromkeys(backends)
            if name != backend_name
        }
        files: dict[str, tuple[bytes, bool]] = {}
        if "client-ca-signed" in optional:
            extra["client-ca-signed"], client_files = _client_material(backend_name)
            files.update(client_files)
        if "revoked" in optional:
            extra["revoked"], crl_files = _revoked(root, inter, backend_name, now)
            files.update(crl_files)
        default = cas.issue("default-site", inter, DEFAULT_SITE_NAME, common_name=DEFAULT_SITE_NAME)
        return cls(
            internal_root_pem=root.cert_pem.bytes(),
            public_root_pem=cas.public.cert_pem.bytes(),
            identities=ids,
            default_site=default,
            backend_ip=backend_ip,
            backend_name=backend_name,
            optional=extra,
            others={
                name: LabPKI(
                    internal_root_pem=root.cert_pem.bytes(),
                    public_root_pem=cas.public.cert_pem.bytes(),
                    identities=sets["identities"],
                    default_site=default,
                    backend_ip=backend_ip,
                    backend_name=name,
                    optional=sets["optional"],
                )
                for name, sets in others.items()
            },
            files=files,
        )

    def for_backend(self, name: str) -> LabPKI:
        """The identities minted for backend *name* (this PKI itself for its own backend name)."""
        if name == self.backend_name:
            return self
        return (self.others or {})[name]

    def identity(self, identity: str) -> IdentityCert:
        """The certificate material of one identity id (built-in or optional)."""
        if identity in self.identities:
            return self.identities[identity]
        return (self.optional or {})[identity]

    def _write_others(self, directory: Path) -> None:
        """The other backends' identities, each under backends/<name>/identities (0700)."""
        for name, other in (self.others or {}).items():
            sub = directory
            for part in ("backends", name, "identities"):
                sub = sub / part
                sub.mkdir(mode=0o700, exist_ok=True)
            for cert in [*other.identities.values(), *(other.optional or {}).values()]:
                cert.write_to(sub)

    def write_to(self, directory: Path) -> Path:
        """Write every file into *directory* (created 0700) and return it."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        _write(directory / CA_FILE, self.internal_root_pem)
        _write(directory / BUNDLE_FILE, self.internal_root_pem + self.public_root_pem)
        ident_dir = directory / "identities"
        ident_dir.mkdir(mode=0o700, exist_ok=True)
        for cert in [*self.identities.values(), *(self.optional or {}).values()]:
            cert.write_to(ident_dir)
        self.default_site.write_to(directory)
        self._write_others(directory)
        for name, (data, secret) in (self.files or {}).items():
            (_write_secret if secret else _write)(directory / name, data)
        manifest = {
            "backend": self.backend_name,
            "backend_ip": self.backend_ip,
            "ca": CA_FILE,
            "system_bundle": BUNDLE_FILE,
            "identities": {i: self.identities[i].describe() for i in self.identities},
            "default_site": f"{self.default_site.id}.pem",
            "backends": {
                name: {i: c.describe() for i, c in {**o.identities, **(o.optional or {})}.items()}
                for name, o in (self.others or {}).items()
            },
        }
        _write(directory / "manifest.json", json.dumps(manifest, indent=2).encode())
        return directory


@dataclass(frozen=True)
class _CAs:
    """The CAs of one lab: internal intermediate, the rogue CA, the "public" CA."""

    inter: trustme.CA
    rogue: trustme.CA
    public: trustme.CA

    @staticmethod
    def issue(ident: str, ca: trustme.CA, *names: str, chain: bool = True, **kw: object) -> IdentityCert:
        leaf = ca.issue_cert(*names, **kw)  # type: ignore[arg-type]
        pems = leaf.cert_chain_pems if chain else leaf.cert_chain_pems[:1]
        return IdentityCert(ident, b"".join(p.bytes() for p in pems), leaf.private_key_pem.bytes())


def _identity_set(
    cas: _CAs,
    name: str,
    backend_ip: str,
    wildcard: str,
    optional: tuple[str, ...],
    now: dt.datetime,
    *,
    sibling: str = SIBLING_NAME,
) -> tuple[dict[str, IdentityCert], dict[str, IdentityCert]]:
    """Every built-in identity for backend *name*, and the *optional* ones that apply to it."""
    inter, issue = cas.inter, cas.issue
    # One leaf serves both "legit" and "legit-no-chain": same key, same certificate.
    legit_leaf = inter.issue_cert(name, common_name=name)
    chain = legit_leaf.cert_chain_pems
    key = legit_leaf.private_key_pem.bytes()
    ids = {
        "legit": IdentityCert("legit", b"".join(p.bytes() for p in chain), key),
        "legit-no-chain": IdentityCert("legit-no-chain", chain[0].bytes(), key),
        "rogue-ca": issue("rogue-ca", cas.rogue, name, common_name=name),
        "self-signed": _self_signed("self-signed", name, now),
        "wrong-name": issue("wrong-name", inter, sibling, common_name=sibling),
        "expired": issue(
            "expired",
            inter,
            name,
            common_name=name,
            not_before=now - dt.timedelta(days=60),
            not_after=now - dt.timedelta(days=1),
        ),
        "not-yet-valid": issue(
            "not-yet-valid",
            inter,
            name,
            common_name=name,
            not_before=now + dt.timedelta(days=30),
            not_after=now + dt.timedelta(days=400),
        ),
        # trustme puts an IP identity into an iPAddress SAN; no common_name means no CN.
        "ip-san": issue("ip-san", inter, backend_ip),
        "wildcard": issue("wildcard", inter, wildcard, common_name=wildcard),
        "public-ca": issue("public-ca", cas.public, name, common_name=name),
    }
    extra: dict[str, IdentityCert] = {}
    if "legit-deep" in optional:
        # root -> intermediate -> second intermediate -> leaf; trustme serves the leaf and both
        # intermediates (nginx/nginx#1409: two intermediates vs verify depth 1).
        deep_leaf = inter.create_child_ca().issue_cert(name, common_name=name)
        deep_chain = b"".join(p.bytes() for p in deep_leaf.cert_chain_pems)
        extra["legit-deep"] = IdentityCert("legit-deep", deep_chain, deep_leaf.private_key_pem.bytes())
    parent = wildcard_parent(name)
    if "wildcard-parent" in optional and parent:
        extra["wildcard-parent"] = issue("wildcard-parent", inter, parent, common_name=parent)
    if "cn-only" in optional:
        extra["cn-only"] = _cn_only(inter, name, now)
    if "san-other-cn-backend" in optional:
        extra["san-other-cn-backend"] = issue("san-other-cn-backend", inter, sibling, common_name=name)
    return ids, extra


def _cn_only(inter: trustme.CA, name: str, now: dt.datetime) -> IdentityCert:
    """A leaf from the internal intermediate with CN = *name* and no subjectAltName at all.

    Served like legit: leaf + the internal intermediate."""
    return build_leaf("cn-only", inter, common_name=name, sans=None, now=now)


def build_leaf(
    ident: str,
    issuer: trustme.CA | None,
    *,
    common_name: str | None,
    sans: tuple[str, ...] | None,
    now: dt.datetime,
    organization: str | None = None,
    usage: tuple[x509.ObjectIdentifier, ...] = (x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,),
) -> IdentityCert:
    """The one place the lab builds a leaf with cryptography's own builder.

    For what trustme will not issue as wanted: no subjectAltName extension at all (*sans*
    ``None``: trustme always adds one, and cryptography >= 51 refuses the empty one it adds when
    given no names), a client certificate with only a subject, a self-signed leaf (*issuer*
    ``None``). *sans* are DNS names or IP addresses. Valid from a day before *now* for a year.
    The chain served is the leaf, then the issuer and every CA above it but the root, as
    trustme serves its own leaves.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attrs)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    )
    if sans:
        general = [x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n) for n in sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=not common_name)
    chain = b""
    if issuer is None:
        builder, sign_key = builder.issuer_name(subject), key
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer.cert_pem.bytes())
        sign_key = serialization.load_pem_private_key(issuer.private_key_pem.bytes(), password=None)  # type: ignore[assignment]
        builder = builder.issuer_name(ca_cert.subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        ca: trustme.CA | None = issuer
        while ca is not None and ca.parent_cert is not None:
            chain += ca.cert_pem.bytes()
            ca = ca.parent_cert
    cert = builder.sign(sign_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IdentityCert(ident, cert.public_bytes(serialization.Encoding.PEM) + chain, key_pem)


CLIENT_CA_FILE = "client-ca.pem"
#: The subject CN of the proxy's client certificate (the seat records it as evidence).
PROXY_CLIENT_CN = "trustlab proxy client"


def _client_material(backend_name: str) -> tuple[IdentityCert, dict[str, tuple[bytes, bool]]]:
    """The client CA, the proxy's client certificate, and ``client-ca-signed``.

    ``client-ca-signed`` is a backend certificate for the backend's name issued by the CA
    that issued the proxy's client certificate: an impostor that passes wherever a proxy
    trusts the client CA for backends (Apache adds SSLProxyMachineCertificateChainFile to
    its verify store). A second, unrelated CA issues the "other" client certificate.
    """
    client_ca = trustme.CA(organization_name="trustlab client CA")
    other_ca = trustme.CA(organization_name="trustlab other client CA")
    # A client certificate names no host: subject only, no subjectAltName (see build_leaf).
    now = dt.datetime.now(dt.UTC)
    client = (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,)
    mine = build_leaf(
        "proxy-client",
        client_ca,
        common_name=PROXY_CLIENT_CN,
        sans=None,
        now=now,
        organization="trustlab proxy",
        usage=client,
    )
    other = build_leaf(
        "other-client",
        other_ca,
        common_name="trustlab other client",
        sans=None,
        now=now,
        organization="trustlab proxy",
        usage=client,
    )
    cert, key = mine.chain_pem, mine.key_pem
    other_pair = other.chain_pem + other.key_pem
    ca_pem = client_ca.cert_pem.bytes()
    leaf = client_ca.issue_cert(backend_name, common_name=backend_name)
    ident = IdentityCert(
        "client-ca-signed", b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes()
    )
    return ident, {
        CLIENT_CA_FILE: (ca_pem, False),
        "proxy-client.crt": (cert, False),
        "proxy-client.key": (key, True),
        "proxy-client.pem": (cert + key, True),
        "proxy-client-with-ca.pem": (cert + key + ca_pem, True),
        "proxy-clients-two.pem": (other_pair + cert + key, True),
    }


def _revoked(
    root: trustme.CA, inter: trustme.CA, backend_name: str, now: dt.datetime
) -> tuple[IdentityCert, dict[str, tuple[bytes, bool]]]:
    """``revoked`` (internal intermediate -> the backend's name, then revoked) and the CRLs."""
    leaf = inter.issue_cert(backend_name, common_name=backend_name)
    serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
    ident = IdentityCert("revoked", b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes())
    crl_inter = _crl(inter, [serial], now)
    crl_root = _crl(root, [], now)
    return ident, {
        "crl-intermediate.pem": (crl_inter, False),
        "crl-root.pem": (crl_root, False),
        "crl-chain.pem": (crl_inter + crl_root, False),
    }


def _crl(ca: trustme.CA, serials: list[int], now: dt.datetime) -> bytes:
    """A CRL signed by *ca* listing *serials* (revoked an hour ago), valid for a day."""
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(hours=1))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    crl = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.PEM)


def _self_signed(ident: str, name: str, now: dt.datetime) -> IdentityCert:
    return build_leaf(ident, None, common_name=name, sans=(name,), now=now)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_secret(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
