"""Certificate-validation conformance through real proxies (issue 24 item 7).

A catalogue of cases, each written here with ``cryptography``: the chain the backend seat
presents, the trust anchor the proxy is given, the peer name the proxy is configured to
check, and the verdict RFC 5280 (path validation) / RFC 6125 and its successor RFC 9525
(service identity) expect, with a one-line reason and, where one exists, the x509-limbo case
that tests the same rule in libraries (cited by id; none of limbo's code or data is used).

Each case runs through each proxy kind's ``good`` scenario, changed only where the case needs
it: the backend name becomes the case's peer name (HAProxy's ``verifyhost``/``sni`` and
Envoy's SAN matcher and ``sni`` follow it), the trust file is the case's anchor, and nginx's
and Apache's verify depth is raised so that chain length is never the variable a case tests.
The proxy's verdict is ``accept`` (the response came through: ``served``/``spoofed``),
``reject`` (``blocked``, with its verification line) or ``error`` (anything else, with the
detail), and a case *agrees* when the verdict is the expected one.

Some rules leave the verifier latitude (RFC 6125 allows partial-label wildcards and CN
fallback; RFC 5280 does not make a trust anchor's own extensions or validity binding). Such
cases carry ``latitude`` and the stricter modern expectation (RFC 9525, CA/B Baseline
Requirements); a proxy that differs on them is reported as differing *within latitude*, not
as a conformance failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.conformance.notes import EXPLAIN
from harness.conformance.notes import version_key as _version_key
from harness.errors import LabError
from harness.proxies.base import Installation
from harness.vocab import BACKEND_NAME, LOCAL_LAB_IP, Outcome

if TYPE_CHECKING:
    from harness.pki import LabPKI

ACCEPT, REJECT, ERROR = "accept", "reject", "error"
VERDICTS = (ACCEPT, REJECT)

#: The peer names cases use (the backend name the proxy is configured with); ``ip`` is the seat's
#: lab address, reached by IP.
PEERS: dict[str, str] = {
    "www": "www.conformance.test",
    "deep": "a.b.conformance.test",
    "upper": "WWW.CONFORMANCE.TEST",
    "dot": "www.conformance.test.",
    "idn": "xn--bcher-kva.conformance.test",
    "psl": "example.co.uk",
    "ip": "ip.conformance.test",  # the seat's identity-set name; the proxy is pointed at the IP
}
#: Trust anchors: ``roots`` (the catalogue's roots: main, expired, pathlen-0, name-constrained),
#: ``intermediate`` (the main intermediate only: a partial chain).
ANCHORS = ("roots", "intermediate")
#: The proxy kinds conformance runs by default (the others' good configs need a request path
#: that Traffic Server and Squid do not give a per-case name).
KINDS = ("nginx", "apache", "haproxy", "caddy", "envoy", "traefik")


@dataclass(frozen=True)
class Case:
    """One certificate-validation case."""

    id: str
    area: str  # "name", "path", "constraints", "anchor"
    expected: str  # accept | reject
    reason: str
    build: Callable[[_Kit], tuple[list[x509.Certificate], Any]] = field(repr=False, compare=False)
    peer: str = "www"
    anchor: str = "roots"
    limbo: str = ""
    #: The rule leaves the verifier a choice; *expected* is the stricter modern reading.
    latitude: bool = False

    @property
    def peer_name(self) -> str:
        return PEERS[self.peer]


@dataclass(frozen=True)
class _Node:
    cert: x509.Certificate
    key: Any


def _key(kind: str = "ec") -> Any:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    bits = int(kind.removeprefix("rsa"))
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


class _Kit:
    """The catalogue's CAs, built once per run; cases issue leaves and further CAs from them."""

    def __init__(self, *, backend_ip: str, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime.now(dt.UTC)
        self.backend_ip = backend_ip
        # RSA CAs: an RSA issuer can sign with SHA-1 and MD5 (the weak-signature cases).
        self.root = self.ca("conformance root", None, key=_key("rsa2048"))
        self.inter = self.ca("conformance intermediate", self.root, key=_key("rsa2048"))
        self.other_root = self.ca("conformance untrusted root", None)
        self.expired_root = self.ca(
            "conformance expired root",
            None,
            not_before=self.now - dt.timedelta(days=400),
            not_after=self.now - dt.timedelta(days=2),
        )
        self.pathlen0_root = self.ca("conformance pathlen-0 root", None, pathlen=0)
        self.nc_root = self.ca(
            "conformance constrained root", None, nc=x509.NameConstraints([x509.DNSName("other.test")], None)
        )

    def anchor_pem(self, anchor: str) -> bytes:
        if anchor == "intermediate":
            return _pem(self.inter.cert)
        return b"".join(_pem(n.cert) for n in (self.root, self.expired_root, self.pathlen0_root, self.nc_root))

    # -- builders ----------------------------------------------------------------------
    def cert(
        self,
        subject: str | None,
        issuer: _Node | None,
        *,
        key: Any = None,
        sans: Sequence[x509.GeneralName] | None = None,
        ca: bool | None = False,
        pathlen: int | None = None,
        bc_critical: bool = True,
        ku: x509.KeyUsage | None | str = "default",
        eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
        nc: x509.NameConstraints | None = None,
        nc_critical: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        digest: Any = "default",
        extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
        san_critical: bool | None = None,
    ) -> _Node:
        key = key or _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]) if subject else x509.Name([])
        b = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.cert.subject if issuer else name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._when(not_before, -1))
            .not_valid_after(self._when(not_after, 365))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer is not None:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
            )
        if ca is not None:
            b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen if ca else None), critical=bc_critical)
        if ku == "default":
            ku = _ku_ca() if ca else _ku_leaf()
        if ku is not None:
            b = b.add_extension(ku, critical=True)  # type: ignore[arg-type]
        if eku is not None and not ca:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if sans:
            crit = not subject if san_critical is None else san_critical
            b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=crit)
        if nc is not None:
            b = b.add_extension(nc, critical=nc_critical)
        for ext, crit in extra:
            b = b.add_extension(ext, critical=crit)
        sign_key = issuer.key if issuer else key
        if digest == "default":
            digest = None if isinstance(sign_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return _Node(b.sign(sign_key, digest), key)

    def _when(self, value: Any, default_days: int) -> dt.datetime:
        if value is None:
            return self.now + dt.timedelta(days=default_days)
        if isinstance(value, _Rel):
            return self.now + dt.timedelta(days=value.days)
        return value  # type: ignore[no-any-return]

    def ca(self, subject: str, issuer: _Node | None, **kw: Any) -> _Node:
        return self.cert(subject, issuer, ca=True, eku=None, **kw)

    def leaf(self, *names: str, issuer: _Node | None = None, cn: str | None = None, **kw: Any) -> _Node:
        """A server leaf under the intermediate (default) with DNS/IP SANs *names*."""
        sans = [_general(n) for n in names]
        return self.cert(cn, issuer or self.inter, sans=sans or None, **kw)

    def dns_raw(self, value: str) -> x509.GeneralName:
        """A dNSName exactly as given (cryptography's constructor refuses some on purpose)."""
        return x509.DNSName._init_without_validation(value)  # type: ignore[attr-defined]


def _general(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName._init_without_validation(name)  # type: ignore[attr-defined]


def _ku_ca() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ku_leaf(*, sign: bool = True, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


Built = tuple[list[x509.Certificate], Any]


def _served(leaf: _Node, *cas: _Node) -> Built:
    return [leaf.cert, *(c.cert for c in cas)], leaf.key


# -- the catalogue ---------------------------------------------------------------------------------

WWW = PEERS["www"]


# The catalogue is a table, one case a row: the formatter leaves its rows as written.
# fmt: off
def _san(*names: str, cn: str | None = None, peer: str = "www", **kw: Any) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        resolved = [k.backend_ip if n == "{ip}" else n for n in names]
        c = None if cn is None else (k.backend_ip if cn == "{ip}" else cn)
        return _served(k.leaf(*resolved, cn=c, **kw), k.inter)
    return build


def _raw(value: str) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        return _served(k.cert(None, k.inter, sans=[k.dns_raw(value)]), k.inter)
    return build


def _name_exact_cases() -> list[Case]:
    """The peer name exactly, its near misses, and case."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("exact-dns-san", "name", A, "SAN dNSName equals the peer name", _san(WWW),
          limbo="webpki::san::exact-dns-san"),
        c("san-among-several", "name", A, "the peer name is one of several dNSNames", _san("other.test", WWW)),
        c("mismatch-domain", "name", R, "no SAN matches the peer name", _san("other.conformance.test"),
          limbo="webpki::san::mismatch-domain-san"),
        c("mismatch-subdomain", "name", R, "a subdomain of the peer name is not the peer name",
          _san("x.www.conformance.test"), limbo="webpki::san::mismatch-subdomain-san"),
        c("mismatch-apex", "name", R, "the parent domain is not the peer name", _san("conformance.test"),
          limbo="webpki::san::mismatch-subdomain-apex-san"),
        c("san-case-differs", "name", A, "DNS names compare case-insensitively (RFC 6125 6.4.1)",
          _san("WWW.Conformance.TEST")),
        c("peer-upper-case", "name", A, "an upper-case peer name matches a lower-case SAN (RFC 6125 6.4.1)",
          _san(WWW.lower(), peer="upper"), peer="upper"),
    ]


def _name_wildcard_cases() -> list[Case]:
    """Wildcards: one leftmost label only (RFC 6125 6.4.3, RFC 9525)."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("wildcard-leftmost", "name", A, "*.conformance.test covers one leftmost label (RFC 6125 6.4.3)",
          _san("*.conformance.test"), limbo="webpki::san::leftmost-wildcard-san"),
        c("wildcard-upper-case", "name", A, "a wildcard's fixed labels compare case-insensitively",
          _san("*.CONFORMANCE.test")),
        c("wildcard-not-leftmost", "name", R, "a wildcard only in the leftmost label (RFC 6125 6.4.3)",
          _san("www.*.test"), limbo="webpki::san::wildcard-not-in-leftmost-san"),
        c("wildcard-two-wildcards", "name", R, "*.*.test has a wildcard outside the leftmost label",
          _san("*.*.test")),
        c("wildcard-across-labels", "name", R, "a wildcard matches exactly one label, never two",
          _san("*.conformance.test"), peer="deep", limbo="webpki::san::wildcard-match-across-labels-san"),
        c("wildcard-deep-match", "name", A, "*.b.conformance.test covers a.b.conformance.test",
          _san("*.b.conformance.test"), peer="deep"),
        c("wildcard-middle-label", "name", R, "a.*.conformance.test: wildcard outside the leftmost label",
          _san("a.*.conformance.test"), peer="deep"),
        c("wildcard-no-empty-label", "name", R, "*.www.conformance.test does not cover www.conformance.test",
          _san("*.www.conformance.test")),
        c("wildcard-partial-prefix", "name", R, "w*.conformance.test: partial-label wildcard (RFC 9525 forbids; "
          "RFC 6125 6.4.3 allowed)", _san("w*.conformance.test"), latitude=True,
          limbo="webpki::san::wildcard-embedded-leftmost-san"),
        c("wildcard-partial-suffix", "name", R, "*w.conformance.test: partial-label wildcard (RFC 9525)",
          _san("*w.conformance.test"), latitude=True),
        c("wildcard-partial-infix", "name", R, "w*w.conformance.test (f*o): partial-label wildcard (RFC 9525)",
          _san("w*w.conformance.test"), latitude=True),
    ]


def _name_suffix_idn_cases() -> list[Case]:
    """A bare wildcard, wildcards over public suffixes, and internationalised names."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("wildcard-only", "name", R, "a SAN of just * matches nothing", _san("*"),
          limbo="webpki::san::san-wildcard-only"),
        c("wildcard-tld", "name", R, "*.test: a wildcard directly over a TLD", _san("*.test"), peer="psl",
          limbo="webpki::san::san-wildcard-only-tld"),
        c("wildcard-public-suffix", "name", R, "*.co.uk covers a whole public suffix (RFC 6125 7.2; the CA/B "
          "rules forbid it)", _san("*.co.uk"), peer="psl", latitude=True,
          limbo="webpki::san::public-suffix-wildcard-san"),
        c("public-suffix-exact", "name", A, "example.co.uk named exactly", _san("example.co.uk"), peer="psl"),
        c("wildcard-one-label-over-suffix", "name", R, "*.uk does not cover example.co.uk (one label only)",
          _san("*.uk"), peer="psl"),
        c("idn-a-label-exact", "name", A, "an A-label SAN equals the A-label peer name (RFC 6125 6.4.2)",
          _san("xn--bcher-kva.conformance.test"), peer="idn"),
        c("idn-a-label-mismatch", "name", R, "a different A-label is a different name",
          _san("xn--bcher-lva.conformance.test"), peer="idn"),
        c("idn-wildcard-whole-label", "name", A, "*.conformance.test covers an A-label as a whole label",
          _san("*.conformance.test"), peer="idn"),
        c("idn-wildcard-in-a-label", "name", R, "xn--b*: a wildcard inside an A-label (RFC 6125 7.2)",
          _san("xn--b*.conformance.test"), peer="idn", limbo="webpki::san::wildcard-embedded-ulabel-san"),
        c("idn-u-label-san", "name", R, "a U-label (raw UTF-8) in a dNSName is malformed, never the A-label",
          _raw("bücher.conformance.test"), peer="idn", limbo="webpki::san::unicode-emoji-san"),
    ]


def _name_syntax_cn_cases() -> list[Case]:
    """Trailing dots, odd bytes in a name, and the CN fallback."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("peer-trailing-dot", "name", A, "an absolute peer name www.conformance.test. is the same name "
          "(RFC 6125 6.2.1: trailing dot removed)", _san(WWW, peer="dot"), peer="dot", latitude=True),
        c("san-trailing-dot", "name", R, "a dNSName with a trailing dot is not in preferred name syntax "
          "(RFC 5280 4.2.1.6)", _raw(WWW + "."), latitude=True),
        c("san-nul-byte", "name", R, "an embedded NUL (www.conformance.test\\0.evil.test) is not the peer "
          "name", _raw(WWW + "\x00.evil.test")),
        c("san-underscore", "name", A, "a label with an underscore still matches byte for byte",
          _san("_x.conformance.test", WWW), limbo="rfc5280::san::underscore-dns"),
        c("cn-only", "name", R, "no SAN: CN fallback is deprecated (RFC 9525 6.3; RFC 6125 allowed it)",
          _san(cn=WWW), latitude=True, limbo="webpki::san::no-san"),
        c("cn-wildcard-only", "name", R, "no SAN, CN *.conformance.test: CN fallback (RFC 9525)",
          _san(cn="*.conformance.test"), latitude=True),
        c("cn-with-other-san", "name", R, "a SAN present: the CN is never consulted (RFC 6125 6.4.4)",
          _san("other.conformance.test", cn=WWW), limbo="webpki::cn::not-in-san"),
        c("cn-with-ip-san-only", "name", R, "the SAN has only an iPAddress: CN fallback (RFC 9525 forbids)",
          _san("{ip}", cn=WWW), latitude=True),
        c("cn-with-email-san-only", "name", R, "the SAN has only an rfc822Name: CN fallback (RFC 9525 forbids)",
          lambda k: _served(k.cert(WWW, k.inter, sans=[x509.RFC822Name("ops@conformance.test")]), k.inter),
          latitude=True),
    ]


def _name_ip_cases() -> list[Case]:
    """IP peers and iPAddress SANs."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("ip-san-for-dns-peer", "name", R, "an iPAddress SAN never matches a DNS peer name", _san("{ip}")),
        c("ip-peer-ip-san", "name", A, "the peer IP equals an iPAddress SAN (RFC 6125 / RFC 5280 4.2.1.6)",
          _san("{ip}"), peer="ip", limbo="webpki::san::exact-localhost-ip-san"),
        c("ip-peer-dns-and-ip-san", "name", A, "iPAddress SAN beside a dNSName", _san(WWW, "{ip}"), peer="ip"),
        c("ip-peer-ip-in-dns-san", "name", R, "an IP written as a dNSName is not an iPAddress SAN",
          lambda k: _served(k.cert(None, k.inter, sans=[k.dns_raw(k.backend_ip)]), k.inter), peer="ip",
          limbo="rfc5280::san::ip-in-dns"),
        c("ip-peer-other-ip", "name", R, "another iPAddress SAN", _san("192.0.2.7"), peer="ip"),
        c("ip-peer-cn-only", "name", R, "an IP only in the CN: CN fallback for an IP (RFC 9525)", _san(cn="{ip}"),
          peer="ip", latitude=True),
        c("ip-peer-dns-san-only", "name", R, "only a dNSName: a DNS-ID never matches an IP peer",
          _san(WWW), peer="ip"),
    ]


def _name_near_miss_cases() -> list[Case]:
    """Longer SAN lists and names that almost match."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("san-dns-beside-wildcard", "name", A, "an unrelated dNSName beside *.conformance.test",
          _san("other.test", "*.conformance.test")),
        c("san-peer-last-of-many", "name", A, "the peer name is the last of 64 dNSNames",
          _san(*[f"n{i}.other.test" for i in range(63)], WWW)),
        c("mismatch-longer-suffix", "name", R, "www.conformance.test.evil.test only ends with more labels",
          _san(WWW + ".evil.test")),
        c("mismatch-shorter-label", "name", R, "ww.conformance.test differs in the first label",
          _san("ww.conformance.test")),
        c("mismatch-label-prefix", "name", R, "wwwx.conformance.test is another label, not a prefix match",
          _san("wwwx.conformance.test")),
        c("wildcard-deep-wrong-parent", "name", R, "*.c.conformance.test does not cover a.b.conformance.test",
          _san("*.c.conformance.test"), peer="deep"),
        c("wildcard-deep-two-wildcards", "name", R, "*.*.conformance.test: a second wildcard label",
          _san("*.*.conformance.test"), peer="deep"),
        c("wildcard-over-peer-itself", "name", R, "*.example.co.uk does not cover example.co.uk",
          _san("*.example.co.uk"), peer="psl"),
    ]


def _name_other_type_cases() -> list[Case]:
    """SAN types other than dNSName, and the CN beside them."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("san-uri-only", "name", R, "only a URI-ID (https://www.conformance.test/): a client matching a "
          "DNS-ID ignores it (RFC 6125 6.4)",
          lambda k: _served(k.cert(None, k.inter, sans=[x509.UniformResourceIdentifier(
              "https://www.conformance.test/")]), k.inter)),
        c("cn-with-uri-san-only", "name", R, "a URI-ID present: the CN is never consulted (RFC 6125 6.4.4), "
          "CN fallback forbidden altogether (RFC 9525)",
          lambda k: _served(k.cert(WWW, k.inter, sans=[x509.UniformResourceIdentifier(
              "https://other.conformance.test/")]), k.inter)),
        c("san-email-beside-dns", "name", A, "an rfc822Name beside the matching dNSName",
          lambda k: _served(k.cert(None, k.inter, sans=[x509.RFC822Name("ops@conformance.test"),
                                                         x509.DNSName(WWW)]), k.inter)),
        c("cn-other-san-matches", "name", A, "CN names another host, the SAN matches: the CN is not read",
          _san(WWW, cn="other.conformance.test")),
        c("san-space-in-name", "name", R, "a dNSName with a space is malformed and matches nothing",
          _raw("www conformance.test")),
        c("ip-san-v6-for-dns-peer", "name", R, "an IPv6 iPAddress SAN never matches a DNS peer", _san("::1")),
        c("ip-peer-ip-san-among-several", "name", A, "the peer IP is one of several iPAddress SANs",
          _san("192.0.2.7", "{ip}"), peer="ip"),
        c("ip-peer-ipv6-san", "name", R, "an IPv6 SAN (::1) is not the peer's IPv4 address", _san("::1"),
          peer="ip"),
    ]


def _name_cases() -> list[Case]:
    """Does the certificate name the peer (RFC 6125, RFC 9525)?"""
    return [
        *_name_exact_cases(),
        *_name_wildcard_cases(),
        *_name_suffix_idn_cases(),
        *_name_syntax_cn_cases(),
        *_name_ip_cases(),
        *_name_near_miss_cases(),
        *_name_other_type_cases(),
    ]



def _leaf(**kw: Any) -> Callable[[_Kit], Built]:
    return lambda k: _served(k.leaf(WWW, **kw), k.inter)


def _under(make_ca: Callable[[_Kit], _Node], *, chain: bool = True, **kw: Any) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        ca = make_ca(k)
        return _served(k.leaf(WWW, issuer=ca, **kw), *([ca] if chain else []))
    return build


def _two(top_kw: dict[str, Any], low_kw: dict[str, Any] | None = None) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        top = k.ca("conformance ica-1", k.root, **top_kw)
        low = k.ca("conformance ica-2", top, **(low_kw or {}))
        return _served(k.leaf(WWW, issuer=low), low, top)
    return build


def _chain_of(order: Callable[[_Kit, _Node], list[_Node]]) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        lf = k.leaf(WWW)
        nodes = order(k, lf)
        return [n.cert for n in nodes], lf.key
    return build


def _bad_signature(k: _Kit) -> Built:
    lf = k.leaf(WWW)
    der = bytearray(lf.cert.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature value
    return [x509.load_der_x509_certificate(bytes(der)), k.inter.cert], lf.key


_UNKNOWN_EXT = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55738.666.1"), b"\x05\x00")


def _path_validity_cases() -> list[Case]:
    """The control, missing links, untrusted roots and validity periods."""
    A, R = ACCEPT, REJECT
    return [
        Case("good-chain", "path", A, "leaf + intermediate to a trusted root (the control)", _leaf()),
        Case("leaf-only-served", "path", R, "the intermediate is not served and not in the trust file",
          lambda k: _served(k.leaf(WWW)), limbo="webpki::cryptographydotio-chain-missing-intermediate"),
        Case("untrusted-root", "path", R, "the chain ends at a root the proxy does not trust",
          _under(lambda k: k.ca("conformance untrusted ica", k.other_root)), limbo="rfc5280::chain-untrusted-root"),
        Case("self-signed-leaf", "path", R, "a self-signed leaf is not a trust anchor",
          lambda k: _served(k.cert(WWW, None, sans=[x509.DNSName(WWW)]))),
        Case("expired-leaf", "path", R, "leaf notAfter in the past (RFC 5280 6.1.3(a)(2))",
          _leaf(not_before=_ago(60), not_after=_ago(1)), limbo="rfc5280::validity::expired-leaf"),
        Case("not-yet-valid-leaf", "path", R, "leaf notBefore in the future",
          _leaf(not_before=_ahead(30), not_after=_ahead(400)), limbo="rfc5280::validity::not-yet-valid-5-seconds"),
        Case("expired-intermediate", "path", R, "intermediate notAfter in the past",
          _under(lambda k: k.ca("conformance expired ica", k.root, not_before=_ago(60), not_after=_ago(1))),
          limbo="rfc5280::validity::expired-intermediate"),
        Case("not-yet-valid-intermediate", "path", R, "intermediate notBefore in the future",
          _under(lambda k: k.ca("conformance future ica", k.root, not_before=_ahead(30), not_after=_ahead(400)))),
        Case("expired-root", "anchor", A, "an anchor's own validity is not part of RFC 5280 path validation "
          "(6.1.1(d)); most verifiers check it", _under(lambda k: k.ca("conformance ica under expired root",
                                                                    k.expired_root)),
          latitude=True, limbo="rfc5280::validity::expired-root"),
    ]


def _path_ca_cases() -> list[Case]:
    """What makes an intermediate a CA: basicConstraints, keyUsage, EKU."""
    A, R = ACCEPT, REJECT
    return [
        Case("intermediate-ca-false", "path", R, "intermediate with basicConstraints CA:FALSE (RFC 5280 6.1.4(k))",
          _under(lambda k: k.cert("conformance ca-false ica", k.root, ca=False, eku=None, ku=_ku_ca())),
          limbo="rfc5280::intermediate-ca-without-ca-bit"),
        Case("intermediate-no-basic-constraints", "path", R, "intermediate without basicConstraints "
          "(RFC 5280 6.1.4(k))", _under(lambda k: k.cert("conformance no-bc ica", k.root, ca=None, eku=None,
                                                        ku=_ku_ca())),
          limbo="rfc5280::intermediate-ca-missing-basic-constraints"),
        Case("intermediate-bc-not-critical", "path", A, "basicConstraints not critical on a CA: issuance rule, "
          "not a validation rule", _under(lambda k: k.ca("conformance noncrit-bc ica", k.root, bc_critical=False)),
          latitude=True),
        Case("intermediate-no-keycertsign", "path", R, "intermediate keyUsage without keyCertSign "
          "(RFC 5280 6.1.4(n))", _under(lambda k: k.ca("conformance no-kcs ica", k.root,
                                                      ku=_ku_leaf(sign=True))),
          limbo="rfc5280::ica-ku-keycertsign"),
        Case("intermediate-no-keyusage", "path", A, "a CA without keyUsage: RFC 5280 6.1.4(n) checks it only "
          "when present", _under(lambda k: k.ca("conformance no-ku ica", k.root, ku=None)), latitude=True,
          limbo="rfc5280::no-keyusage"),
        Case("intermediate-eku-client-only", "path", R, "an intermediate's EKU (clientAuth) excludes serverAuth: "
          "not RFC 5280, enforced by OpenSSL and Go", _under(lambda k: k.ca(
              "conformance client-eku ica", k.root,
              extra=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])), latitude=True),
    ]


def _path_length_cases() -> list[Case]:
    """pathlen and the number of intermediates."""
    A, R = ACCEPT, REJECT
    return [
        Case("pathlen-0-direct", "path", A, "pathlen 0 intermediate issuing the leaf",
          _under(lambda k: k.ca("conformance pathlen-0 ica", k.root, pathlen=0)),
          limbo="pathlen::ee-with-intermediate-pathlen-0"),
        Case("pathlen-0-violated", "path", R, "pathlen 0 intermediate above another intermediate "
          "(RFC 5280 6.1.4(m))", _two({"pathlen": 0}), limbo="pathlen::intermediate-violates-pathlen-0"),
        Case("pathlen-1-two-intermediates", "path", A, "pathlen 1 allows one intermediate below",
          _two({"pathlen": 1}), limbo="pathlen::ee-with-intermediate-pathlen-1"),
        Case("pathlen-in-leaf-ignored", "path", A, "a pathlen on a non-CA leaf is meaningless here",
          _two({}, {"pathlen": 0}), limbo="pathlen::validation-ignores-pathlen-in-leaf"),
        Case("root-pathlen-0", "anchor", A, "the anchor's pathlen: RFC 5280 does not process an anchor's "
          "extensions (6.1.1(d)); most verifiers do", _under(lambda k: k.ca("conformance ica under pathlen-0 root",
                                                                          k.pathlen0_root)), latitude=True),
        Case("two-intermediates", "path", A, "leaf + two intermediates served", _two({})),
        Case("three-intermediates", "path", A, "leaf + three intermediates served",
          lambda k: (lambda a: (lambda b: (lambda c: _served(k.leaf(WWW, issuer=c), c, b, a))(
              k.ca("conformance ica-3", b)))(k.ca("conformance ica-2", a)))(k.ca("conformance ica-1", k.root))),
    ]


def _path_served_cases() -> list[Case]:
    """Which certificates are served, and in which order."""
    A = ACCEPT
    return [
        Case("root-issued-leaf", "path", A, "a leaf issued directly by the trusted root",
          lambda k: _served(k.leaf(WWW, issuer=k.root))),
        Case("root-issued-leaf-root-served", "path", A, "a root-issued leaf, the root served too",
          lambda k: _served(k.leaf(WWW, issuer=k.root), k.root)),
        Case("chain-with-root", "path", A, "leaf, intermediate and the root served", lambda k: _served(
            k.leaf(WWW), k.inter, k.root)),
        Case("chain-unordered", "path", A, "leaf, root, intermediate: TLS 1.3 lets the client reorder "
          "(RFC 8446 4.4.2)", _chain_of(lambda k, lf: [lf, k.root, k.inter]), latitude=True,
          limbo="rfc5280::root-and-intermediate-swapped"),
        Case("chain-duplicate-intermediate", "path", A, "the intermediate served twice",
          _chain_of(lambda k, lf: [lf, k.inter, k.inter]), latitude=True),
        Case("chain-unrelated-extra", "path", A, "an unrelated CA certificate between leaf and intermediate",
          _chain_of(lambda k, lf: [lf, k.other_root, k.inter]), latitude=True),
    ]


def _path_leaf_cases() -> list[Case]:
    """The leaf's EKU, keyUsage and extensions; a bad signature."""
    A, R = ACCEPT, REJECT
    return [
        Case("leaf-eku-client-only", "path", R, "leaf EKU clientAuth only: not for a TLS server "
          "(RFC 5280 4.2.1.12)", _leaf(eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)), limbo="rfc5280::eku::ee-wrong-eku"),
        Case("leaf-eku-client-and-server", "path", A, "leaf EKU serverAuth + clientAuth",
          _leaf(eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))),
        Case("leaf-no-eku", "path", A, "no EKU: any purpose (RFC 5280 4.2.1.12)", _leaf(eku=None),
          limbo="rfc5280::eku::ee-without-eku"),
        Case("leaf-eku-any", "path", A, "anyExtendedKeyUsage only", _leaf(eku=(
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)), latitude=True, limbo="webpki::eku::ee-anyeku"),
        Case("leaf-eku-code-signing", "path", R, "leaf EKU codeSigning only", _leaf(eku=(
            ExtendedKeyUsageOID.CODE_SIGNING,))),
        Case("leaf-no-keyusage", "path", A, "leaf without keyUsage", _leaf(ku=None)),
        Case("leaf-is-ca", "path", A, "a CA:TRUE certificate as the server's leaf (RFC 5280 allows it)",
          lambda k: _served(k.cert(None, k.inter, ca=True, sans=[x509.DNSName(WWW)]), k.inter),
          latitude=True, limbo="rfc5280::ca-as-leaf"),
        Case("leaf-unknown-critical-ext", "path", R, "an unrecognised critical extension (RFC 5280 4.2)",
          _leaf(extra=[(_UNKNOWN_EXT, True)]), limbo="rfc5280::unknown-critical-extension-ee"),
        Case("leaf-unknown-noncritical-ext", "path", A, "an unrecognised non-critical extension is ignored",
          _leaf(extra=[(_UNKNOWN_EXT, False)])),
        Case("intermediate-unknown-critical-ext", "path", R, "an unrecognised critical extension on the "
          "intermediate", _under(lambda k: k.ca("conformance crit-ext ica", k.root, extra=[(_UNKNOWN_EXT, True)])),
          limbo="rfc5280::unknown-critical-extension-intermediate"),
        Case("bad-signature", "path", R, "the leaf's signature does not verify", _bad_signature),
    ]


def _path_crypto_cases() -> list[Case]:
    """Digests, key types and sizes, times, subject and SAN."""
    A, R = ACCEPT, REJECT
    return [
        Case("leaf-sha384-signature", "path", A, "leaf signed with SHA-384", _leaf(digest=hashes.SHA384())),
        Case("leaf-rsa-1024", "path", R, "an RSA-1024 leaf key (below 112-bit security: NIST SP 800-131A, "
          "CA/B BR 6.1.5)", _leaf(key=_key("rsa1024")), latitude=True,
          limbo="webpki::forbidden-weak-rsa-in-leaf"),
        Case("leaf-rsa-2048", "path", A, "an RSA-2048 leaf key", _leaf(key=_key("rsa2048"))),
        Case("intermediate-rsa-1024", "path", R, "an RSA-1024 intermediate key",
          _under(lambda k: k.ca("conformance rsa1024 ica", k.root, key=_key("rsa1024"))), latitude=True),
        Case("leaf-p384", "path", A, "an ECDSA P-384 leaf key", _leaf(key=_key("p384"))),
        Case("leaf-ed25519", "path", A, "an Ed25519 leaf key (RFC 8410, RFC 8446)", _leaf(key=_key("ed25519")),
          latitude=True),
        Case("leaf-generalized-time", "path", A, "notAfter in 2051 (GeneralizedTime, RFC 5280 4.1.2.5)",
          _leaf(not_after=dt.datetime(2051, 1, 1, tzinfo=dt.UTC))),
        Case("leaf-san-critical-empty-subject", "path", A, "empty subject, critical SAN (RFC 5280 4.2.1.6)",
          lambda k: _served(k.cert(None, k.inter, sans=[x509.DNSName(WWW)]), k.inter)),
        Case("leaf-san-noncritical-empty-subject", "path", R, "empty subject with a non-critical SAN is "
          "malformed (RFC 5280 4.2.1.6)",
          lambda k: _served(k.cert(None, k.inter, sans=[x509.DNSName(WWW)], san_critical=False), k.inter),
          latitude=True, limbo="rfc5280::san::noncritical-with-empty-subject"),
    ]


def _path_issuer_cases() -> list[Case]:
    """Deeper pathlen violations and issuers that are not what they seem."""
    A, R = ACCEPT, REJECT
    return [
        Case("pathlen-1-violated", "path", R, "pathlen 1 above two more intermediates (RFC 5280 6.1.4(m))",
          lambda k: (lambda a: (lambda b: (lambda c: _served(k.leaf(WWW, issuer=c), c, b, a))(
              k.ca("conformance ica-3", b)))(k.ca("conformance ica-2", a)))(
              k.ca("conformance pathlen-1 ica", k.root, pathlen=1)), limbo="pathlen::intermediate-violates-pathlen-1"),
        Case("leaf-issued-by-leaf", "path", R, "a leaf issued by another end-entity certificate (CA:FALSE)",
          _under(lambda k: k.leaf("issuer.conformance.test"))),
        Case("untrusted-root-served", "path", R, "a chain to an untrusted root, the root served as well",
          lambda k: (lambda ica: _served(k.leaf(WWW, issuer=ica), ica, k.other_root))(
              k.ca("conformance untrusted ica", k.other_root))),
        Case("untrusted-intermediate-same-name", "path", R, "an intermediate with the trusted intermediate's "
          "name but another key (a forged issuer name)",
          lambda k: (lambda fake: _served(k.leaf(WWW, issuer=fake), fake))(
              k.ca("conformance intermediate", k.other_root))),
        Case("leaf-long-validity", "path", A, "a leaf valid for 10 years: lifetime limits bind CAs, not RFC 5280 "
          "validation", _leaf(not_after=_ahead(3650))),
    ]


def _path_more_cases() -> list[Case]:
    """More digests, keys, EKU sets and policies."""
    A, R = ACCEPT, REJECT
    return [
        Case("leaf-sha512-signature", "path", A, "leaf signed with SHA-512", _leaf(digest=hashes.SHA512())),
        Case("intermediate-sha384-signature", "path", A, "intermediate signed with SHA-384",
          _under(lambda k: k.ca("conformance sha384 ica", k.root, digest=hashes.SHA384()))),
        Case("leaf-rsa-3072", "path", A, "an RSA-3072 leaf key", _leaf(key=_key("rsa3072"))),
        Case("intermediate-p384", "path", A, "an ECDSA P-384 intermediate issuing a P-256 leaf",
          _under(lambda k: k.ca("conformance p384 ica", k.root, key=_key("p384")))),
        Case("intermediate-eku-server", "path", A, "an intermediate whose EKU lists serverAuth",
          _under(lambda k: k.ca("conformance server-eku ica", k.root,
                               extra=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]))),
        Case("leaf-eku-server-and-code", "path", A, "leaf EKU serverAuth + codeSigning",
          _leaf(eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING))),
        Case("leaf-eku-ocsp-only", "path", R, "leaf EKU OCSPSigning only: not for a TLS server",
          _leaf(eku=(ExtendedKeyUsageOID.OCSP_SIGNING,))),
        Case("leaf-policy-any", "path", A, "a leaf with certificatePolicies anyPolicy",
          _leaf(extra=[(x509.CertificatePolicies([x509.PolicyInformation(
              x509.ObjectIdentifier("2.5.29.32.0"), None)]), False)])),
        Case("leaf-empty-subject-no-san", "path", R, "no subject and no SAN: nothing names the server",
          lambda k: _served(k.cert(None, k.inter), k.inter)),
    ]


def _path_cases() -> list[Case]:
    """Does the chain lead to a trusted root (RFC 5280 6.1)?"""
    return [
        *_path_validity_cases(),
        *_path_ca_cases(),
        *_path_length_cases(),
        *_path_served_cases(),
        *_path_leaf_cases(),
        *_path_crypto_cases(),
        *_path_issuer_cases(),
        *_path_more_cases(),
    ]




def _ago(days: int) -> _Rel:
    return _Rel(-days)


def _ahead(days: int) -> _Rel:
    return _Rel(days)


class _Rel:
    """A time relative to the kit's *now*, resolved when the certificate is built."""

    def __init__(self, days: int) -> None:
        self.days = days


def _nc(permitted: list[x509.GeneralName] | None, excluded: list[x509.GeneralName] | None, *names: str,
       cn: str | None = None, critical: bool = True) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        ica = k.ca("conformance constrained ica", k.root, nc=x509.NameConstraints(permitted, excluded),
                   nc_critical=critical)
        resolved = [k.backend_ip if n == "{ip}" else n for n in names]
        return _served(k.leaf(*resolved, issuer=ica, cn=cn), ica)
    return build


def _ipnet(spec: str) -> Callable[[_Kit], x509.GeneralName]:
    return lambda k: x509.IPAddress(ipaddress.ip_network(k.backend_ip + "/32" if spec == "{ip}" else spec))


def _ipnc(kind: str, spec: str, *names: str) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        net = _ipnet(spec)(k)
        p, e = ([net], None) if kind == "permitted" else (None, [net])
        ica = k.ca("conformance ip-constrained ica", k.root, nc=x509.NameConstraints(p, e))
        resolved = [k.backend_ip if n == "{ip}" else n for n in names]
        return _served(k.leaf(*resolved, issuer=ica), ica)
    return build


def _nested(upper: list[x509.GeneralName], lower: list[x509.GeneralName]) -> Callable[[_Kit], Built]:
    def build(k: _Kit) -> Built:
        top = k.ca("conformance constrained ica-1", k.root, nc=x509.NameConstraints(upper, None))
        low = k.ca("conformance constrained ica-2", top, nc=x509.NameConstraints(lower, None))
        return _served(k.leaf(WWW, issuer=low), low, top)
    return build


def _nc_permitted_cases() -> list[Case]:
    """Permitted DNS subtrees (RFC 5280 4.2.1.10)."""
    A, R = ACCEPT, REJECT
    D = x509.DNSName
    c = Case
    return [
        c("nc-permitted-match", "constraints", A, "permitted conformance.test covers www.conformance.test",
          _nc([D("conformance.test")], None, WWW), limbo="rfc5280::nc::permitted-dns-match"),
        c("nc-permitted-exact", "constraints", A, "permitted www.conformance.test covers itself",
          _nc([D(WWW)], None, WWW)),
        c("nc-permitted-tld", "constraints", A, "permitted test covers every name under it",
          _nc([D("test")], None, WWW)),
        c("nc-permitted-mismatch", "constraints", R, "permitted other.test does not cover the leaf",
          _nc([D("other.test")], None, WWW), limbo="rfc5280::nc::permitted-dns-mismatch"),
        c("nc-permitted-not-label-boundary", "constraints", R, "permitted onformance.test is not a label "
          "boundary of conformance.test (RFC 5280 4.2.1.10)", _nc([D("onformance.test")], None, WWW)),
        c("nc-permitted-second-san-outside", "constraints", R, "every SAN must be permitted: evil.test is not",
          _nc([D("conformance.test")], None, WWW, "evil.test")),
        c("nc-permitted-upper-case", "constraints", A, "constraints compare case-insensitively",
          _nc([D("CONFORMANCE.TEST")], None, WWW)),
        c("nc-permitted-wildcard-leaf", "constraints", A, "a wildcard SAN inside the permitted subtree",
          _nc([D("conformance.test")], None, "*.conformance.test")),
        c("nc-permitted-noncritical", "constraints", A, "name constraints not critical (CAs MUST mark them "
          "critical; validation still applies them)", _nc([D("conformance.test")], None, WWW, critical=False),
          latitude=True, limbo="rfc5280::nc::permitted-dns-match-noncritical"),
        c("nc-permitted-leading-period", "constraints", A, "permitted .conformance.test (leading period: "
          "subdomains only, a form RFC 5280 defines for URIs)", _nc([D(".conformance.test")], None, WWW),
          latitude=True, limbo="rfc5280::nc::invalid-dnsname-leading-period"),
    ]


def _nc_excluded_cases() -> list[Case]:
    """Excluded DNS subtrees, both kinds, and what a DNS constraint leaves alone."""
    A, R = ACCEPT, REJECT
    D = x509.DNSName
    c = Case
    return [
        c("nc-excluded-match", "constraints", R, "excluded conformance.test covers the leaf",
          _nc(None, [D("conformance.test")], WWW), limbo="rfc5280::nc::excluded-dns-match"),
        c("nc-excluded-exact", "constraints", R, "excluded www.conformance.test is the leaf's name",
          _nc(None, [D(WWW)], WWW)),
        c("nc-excluded-other", "constraints", A, "excluded other.test does not touch the leaf",
          _nc(None, [D("other.test")], WWW)),
        c("nc-excluded-not-label-boundary", "constraints", A, "excluded onformance.test is not a label boundary",
          _nc(None, [D("onformance.test")], WWW)),
        c("nc-excluded-second-san", "constraints", R, "excluded evil.test: one SAN inside is enough to fail",
          _nc(None, [D("evil.test")], WWW, "evil.test"), limbo="rfc5280::nc::excluded-dns-match-second"),
        c("nc-excluded-wildcard-leaf", "constraints", R, "excluded conformance.test covers *.conformance.test",
          _nc(None, [D("conformance.test")], "*.conformance.test")),
        c("nc-permitted-and-excluded", "constraints", R, "permitted test, excluded conformance.test: excluded "
          "wins", _nc([D("test")], [D("conformance.test")], WWW),
          limbo="rfc5280::nc::excluded-match-permitted-and-excluded"),
        c("nc-permitted-cn-only-leaf", "constraints", R, "permitted other.test, no SAN, CN www.conformance.test: "
          "a verifier that falls back to the CN must constrain it", _nc([D("other.test")], None, cn=WWW),
          latitude=True),
        c("nc-dns-only-ip-leaf", "constraints", A, "permitted DNS conformance.test does not restrict the "
          "leaf's iPAddress SAN (RFC 5280 4.2.1.10)", _nc([D("conformance.test")], None, WWW, "{ip}"),
          limbo="rfc5280::nc::permitted-different-constraint-type"),
    ]


def _nc_ip_cases() -> list[Case]:
    """iPAddress constraints."""
    A, R = ACCEPT, REJECT
    c = Case
    return [
        c("nc-ip-only-dns-leaf", "constraints", A, "an IP constraint does not restrict a dNSName",
          _ipnc("permitted", "192.0.2.0/24", WWW)),
        c("nc-ip-permitted-match", "constraints", A, "permitted the seat's /32 covers its iPAddress SAN",
          _ipnc("permitted", "{ip}", WWW, "{ip}"), limbo="rfc5280::nc::permitted-ipv4-match"),
        c("nc-ip-permitted-mismatch", "constraints", R, "permitted 192.0.2.0/24 does not cover the seat's IP",
          _ipnc("permitted", "192.0.2.0/24", WWW, "{ip}"), limbo="rfc5280::nc::permitted-ip-mismatch"),
        c("nc-ip-excluded-match", "constraints", R, "excluded the seat's /32",
          _ipnc("excluded", "{ip}", WWW, "{ip}"), limbo="rfc5280::nc::excluded-ipv4-match"),
        c("nc-ip-excluded-other", "constraints", A, "excluded 192.0.2.0/24 does not touch the seat's IP",
          _ipnc("excluded", "192.0.2.0/24", WWW, "{ip}")),
    ]


def _nc_more_cases() -> list[Case]:
    """Deeper names, several subtrees, nested CAs and a constrained anchor."""
    A, R = ACCEPT, REJECT
    D = x509.DNSName
    c = Case
    return [
        c("nc-permitted-deep", "constraints", A, "permitted b.conformance.test covers a.b.conformance.test",
          _nc([D("b.conformance.test")], None, PEERS["deep"]), peer="deep"),
        c("nc-excluded-parent-of-deep", "constraints", R, "excluded b.conformance.test covers a.b.conformance.test",
          _nc(None, [D("b.conformance.test")], PEERS["deep"]), peer="deep"),
        c("nc-permitted-two-subtrees", "constraints", A, "permitted other.test and conformance.test: the second "
          "covers the leaf", _nc([D("other.test"), D("conformance.test")], None, WWW)),
        c("nc-permitted-idn", "constraints", A, "permitted conformance.test covers an A-label under it",
          _nc([D("conformance.test")], None, PEERS["idn"]), peer="idn"),
        c("nc-permitted-email-only", "constraints", A, "an rfc822Name constraint does not restrict a dNSName "
          "(RFC 5280 4.2.1.10)", _nc([x509.RFC822Name("conformance.test")], None, WWW)),
        c("nc-permitted-wildcard-outside", "constraints", R, "permitted conformance.test; a second SAN "
          "*.evil.test lies outside", _nc([D("conformance.test")], None, WWW, "*.evil.test")),
        c("nc-nested-narrows", "constraints", A, "permitted test above, permitted conformance.test below",
          _nested([D("test")], [D("conformance.test")]),
          limbo="rfc5280::nc::restrictive-permits-in-intermediates-narrows"),
        c("nc-nested-cannot-widen", "constraints", R, "permitted other.test above; a lower CA cannot widen it",
          _nested([D("other.test")], [D("conformance.test")]),
          limbo="rfc5280::nc::restrictive-permits-in-intermediates-widens"),
        c("nc-on-root", "anchor", R, "name constraints on the trust anchor (permitted other.test): RFC 5280 "
          "leaves anchor constraints to the verifier (6.1.1(d)); OpenSSL and Go apply them",
          lambda k: (lambda ica: _served(k.leaf(WWW, issuer=ica), ica))(k.ca("conformance ica under nc root",
                                                                          k.nc_root)),
          latitude=True, limbo="rfc5280::nc::intermediate-with-san-rejected-by-root-nc"),
    ]


def _constraint_cases() -> list[Case]:
    """Name constraints on the CAs above the leaf (RFC 5280 4.2.1.10)."""
    return [
        *_nc_permitted_cases(),
        *_nc_excluded_cases(),
        *_nc_ip_cases(),
        *_nc_more_cases(),
    ]



def _anchor_cases() -> list[Case]:
    A, R = ACCEPT, REJECT
    return [
        Case("partial-chain-served", "anchor", A, "the trust file holds only the intermediate: any CA can be a "
             "trust anchor (RFC 5280 6.1.1(d)); OpenSSL needs X509_V_FLAG_PARTIAL_CHAIN",
             lambda k: _served(k.leaf(WWW), k.inter), anchor="intermediate", latitude=True),
        Case("partial-chain-leaf-only", "anchor", A, "intermediate anchor, leaf served alone",
             lambda k: _served(k.leaf(WWW)), anchor="intermediate", latitude=True),
        Case("partial-chain-root-issued", "anchor", R, "intermediate anchor, a leaf issued by the root "
             "(not under the anchor)", lambda k: _served(k.leaf(WWW, issuer=k.root)), anchor="intermediate"),
        Case("partial-chain-expired-leaf", "anchor", R, "intermediate anchor, an expired leaf",
             lambda k: _served(k.leaf(WWW, not_before=_ago(60), not_after=_ago(1)), k.inter),
             anchor="intermediate"),
        Case("partial-chain-wrong-name", "anchor", R, "intermediate anchor, a leaf for another name",
             lambda k: _served(k.leaf("other.conformance.test"), k.inter), anchor="intermediate"),
        Case("partial-chain-deeper", "anchor", A, "intermediate anchor, a leaf under a CA the anchor issued",
             lambda k: (lambda ica: _served(k.leaf(WWW, issuer=ica), ica))(k.ca("conformance ica-2", k.inter)),
             anchor="intermediate", latitude=True),
        Case("partial-chain-untrusted-root", "anchor", R, "intermediate anchor, a chain to an untrusted root",
             lambda k: (lambda ica: _served(k.leaf(WWW, issuer=ica), ica))(
                 k.ca("conformance untrusted ica", k.other_root)), anchor="intermediate"),
    ]


# fmt: on
def catalogue() -> list[Case]:
    """Every case, in a stable order; ids are unique."""
    cases = [*_name_cases(), *_path_cases(), *_constraint_cases(), *_anchor_cases()]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise AssertionError(f"duplicate conformance case id {case.id}")
        if case.expected not in VERDICTS:
            raise AssertionError(f"{case.id}: expected {case.expected!r}")
        seen.add(case.id)
    return cases


def select(ids: Iterable[str] | None = None, *, areas: Iterable[str] | None = None) -> list[Case]:
    """Cases by id (all when *ids* is empty) and area; an unknown id is a :class:`LabError`."""
    cases = catalogue()
    wanted = list(ids or [])
    known = {c.id for c in cases}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise LabError(f"--case: {unknown[0]!r} is not a conformance case; see trustlab conformance --list")
    if wanted:
        cases = [c for c in cases if c.id in wanted]
    if areas:
        cases = [c for c in cases if c.area in set(areas)]
    return cases


def materialise(case: Case, kit: _Kit) -> tuple[bytes, bytes]:
    """The chain the seat serves (PEM, leaf first) and the leaf's key, for *case*."""
    certs, key = case.build(kit)
    return b"".join(_pem(c) for c in certs), _key_pem(key)


# -- running cases through proxies -----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One case on one proxy installation: the proxy's verdict against the expected one."""

    case: str
    area: str
    proxy: str
    proxy_version: str | None
    tls_library: str | None
    expected: str
    verdict: str  # accept | reject | error
    outcome: str
    reason: str
    latitude: bool
    limbo: str

    @property
    def agrees(self) -> bool:
        return self.verdict == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "agrees": self.agrees}


#: An ``error`` cell whose handshake the proxy's TLS stack ended: it alerted the seat (a signature
#: that does not verify, a certificate it cannot parse), or it offered nothing the case's key can
#: sign with (the seat found no shared cipher). The proxy refused the certificate though its log
#: line is not one the driver knows as a verification reason; the row says so.
_HANDSHAKE_REFUSED = re.compile(r"seat saw: ssl: (?:(?:tlsv1|sslv3) alert ([a-z ]+)|(no shared cipher))")


def library_verdicts(cases: list[Case], kit: _Kit) -> dict[str, Any]:
    """What the host's OpenSSL itself says of each case: ``openssl verify`` with the TLS client's
    purpose, the case's anchor, its served chain as untrusted certificates (how a TLS client
    treats a peer's chain), the peer name (``-verify_hostname``/``-verify_ip``) and security level 2
    (Debian's, as its TLS clients get it). Where an OpenSSL-based proxy on the same library
    version answers otherwise, the proxy, not the library, decided: those are the findings."""
    import shutil
    import subprocess
    import tempfile

    openssl = shutil.which("openssl")
    if not openssl:
        return {}
    version = subprocess.run([openssl, "version"], capture_output=True, text=True, timeout=10).stdout.split()
    out: dict[str, Any] = {
        "library": f"OpenSSL {version[1]}" if len(version) > 1 else "OpenSSL",
        "how": "openssl verify -purpose sslserver -auth_level 2 -CAfile ANCHOR -untrusted CHAIN "
        "-verify_hostname PEER (-verify_ip for an IP peer) LEAF",
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="trustlab-conformance-") as tmp:
        d = Path(tmp)
        for anchor in ANCHORS:
            (d / f"{anchor}.pem").write_bytes(kit.anchor_pem(anchor))
        for case in cases:
            chain, _ = materialise(case, kit)
            certs = x509.load_pem_x509_certificates(chain)
            (d / "leaf.pem").write_bytes(_pem(certs[0]))
            argv = [
                openssl,
                "verify",
                "-purpose",
                "sslserver",
                "-auth_level",
                "2",
                "-CAfile",
                str(d / f"{case.anchor}.pem"),
            ]
            if certs[1:]:
                (d / "chain.pem").write_bytes(b"".join(_pem(c) for c in certs[1:]))
                argv += ["-untrusted", str(d / "chain.pem")]
            argv += ["-verify_ip", kit.backend_ip] if case.peer == "ip" else ["-verify_hostname", case.peer_name]
            proc = subprocess.run([*argv, str(d / "leaf.pem")], capture_output=True, text=True, timeout=20)
            errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error ")]
            out["cases"][case.id] = {
                "verdict": ACCEPT if proc.returncode == 0 else REJECT,
                "reason": (errors[0] if errors else "OK") if proc.returncode else "OK",
            }
    return out


def verdict_of(outcome: Outcome, reason: str = "") -> str:
    """The proxy's verdict on a case from its cell's outcome (and, for an error, its evidence)."""
    if outcome in (Outcome.SERVED, Outcome.SPOOFED):
        return ACCEPT
    if outcome is Outcome.BLOCKED:
        return REJECT
    if outcome is Outcome.ERROR and reason.startswith("status ") and _HANDSHAKE_REFUSED.search(reason):
        return REJECT
    return ERROR


def _reason(outcome: Outcome, reason: str) -> str:
    """The row's reason line: the proxy's own words for a rejection, short for an acceptance."""
    if outcome in (Outcome.SERVED, Outcome.SPOOFED):
        return "accepted: the response came through the proxy"
    found = _HANDSHAKE_REFUSED.search(reason) if outcome is Outcome.ERROR else None
    if found and verdict_of(outcome, reason) == REJECT:
        what = f"it sent the alert '{found.group(1)}'" if found.group(1) else "no shared cipher or curve"
        log = reason.split("; log: ", 1)[1][-240:] if "; log: " in reason else ""
        return f"handshake refused ({what}); no verification line in the log" + (f": {log}" if log else "")
    return reason


def judge(
    case: Case, *, proxy: str, outcome: Outcome, reason: str, version: str | None = None, tls: str | None = None
) -> Row:
    """A case's row from a proxy's cell: the verdict is never taken from the case itself."""
    return Row(
        case.id,
        case.area,
        proxy,
        version,
        tls,
        case.expected,
        verdict_of(outcome, reason),
        outcome.value,
        _reason(outcome, reason),
        case.latitude,
        case.limbo,
    )


def _scenario_for(kind: str, case_peer: str, anchor: str, tag: str = "", version: str | None = None) -> Any:
    """*kind*'s good scenario for one peer name and anchor (see the module docstring)."""
    from harness.scenarios import builtin

    known = builtin()
    by_ip = case_peer == "ip"
    base = known.get(f"{kind}/ip-target") if by_ip and kind != "haproxy" else known[f"{kind}/good"]
    if base is None:
        raise LabError(f"{kind}: no ip-target scenario to run IP cases on")
    name = PEERS[case_peer]
    checked = "{backend_ip}" if by_ip else name  # the seat's address on the runtime's lab network
    directives = []
    for key, value in base.directives:
        if isinstance(value, str):
            if key == "match_typed_subject_alt_names" and by_ip:
                value = "IP_ADDRESS exact {backend_ip}"
            value = value.replace(BACKEND_NAME, checked)
        if key == "SSLProxyVerifyDepth":
            value = "5"
        if key == "tls_trust_pool" and version and _version_key(version) < (2, 11):
            # Caddy 2.6.2 has no tls_trust_pool (scenario caddy/good's [[versions]]): the older
            # spelling of the same trust.
            key, value = "tls_trusted_ca_certs", "{ca}"
        directives.append((key, value))
    if kind == "nginx":
        directives.append(("proxy_ssl_verify_depth", "5"))
    sid = f"conformance/{kind}{tag}--{anchor}--{case_peer}"
    return dataclasses.replace(
        base,
        id=sid,
        backend=name,
        directives=tuple(directives),
        target="ip" if by_ip else "name",
        expected={},
        control=None,
        versions=(),
    )


def run(
    cases: list[Case],
    kinds: Sequence[str] = KINDS,
    *,
    runtime: str = "local",
    keep: bool = False,
    all_versions: bool = False,
    on_row: Callable[[Row], None] | None = None,
) -> dict[str, Any]:
    """Run *cases* through each kind's good config on *runtime* (its default installation, or
    every installed version with *all_versions*); return ``{"meta", "rows"}``."""
    from harness.pki import LabPKI
    from harness.runner import get_runtime, lab_dir
    from harness.runtimes.base import ScenarioJob

    if not cases:
        raise LabError("no conformance cases selected")
    rt = get_runtime(runtime)
    rt.preflight(set(kinds))
    backend_ip = LOCAL_LAB_IP
    kit = _Kit(backend_ip=backend_ip)
    by_id = {c.id: c for c in cases}
    targets: list[tuple[str, Installation | None]] = []
    for k in kinds:
        found: list[Installation | None] = list(rt.installations(k)) or [None]
        targets += [(k, i) for i in (found if all_versions else found[:1])]
    rows: list[Row] = []
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    minting = threading.Lock()
    for anchor in ANCHORS:
        group = [c for c in cases if c.anchor == anchor]
        if not group:
            continue
        peers = list(dict.fromkeys(c.peer for c in group))

        def mint(ip: str, group: list[Case] = group, peers: list[str] = peers, anchor: str = anchor) -> LabPKI:
            """The lab's PKI with each case's chain under its peer name, the seat at *ip* (one per
            docker lab, side by side: the kit's address is set and read under one lock)."""
            with minting:
                kit.backend_ip = ip  # the same CAs; the leaves naming the seat's address are issued again
                return _lab_pki(kit, LabPKI.mint(backend_ip=ip), group, peers, anchor, ip)

        inst_of: dict[str, Installation | None] = {}
        scenarios = []
        for j, (k, inst) in enumerate(targets):
            for p in peers:
                sc = _scenario_for(k, p, anchor, f"@{j}" if all_versions else "", inst.version if inst else None)
                scenarios.append(sc)
                inst_of[sc.id] = inst
        extra = {sc.id: tuple(c.id for c in group if PEERS[c.peer] == sc.backend) for sc in scenarios}
        kind_of = {sc.id: sc.proxy.value for sc in scenarios}
        job = ScenarioJob(
            scenarios=tuple(scenarios),
            identities=(),
            mint=mint,
            extra=extra,
            installations={key: i for key, i in inst_of.items() if i is not None},
        )
        with lab_dir(keep=keep) as path:
            for ev in rt.run(job, lab_dir=path):
                inst = inst_of[ev.key]
                row = judge(
                    by_id[ev.identity],
                    proxy=kind_of[ev.key],
                    outcome=ev.outcome,
                    reason=ev.reason,
                    version=inst.version if inst else None,
                    tls=(inst.tls or None) if inst else None,
                )
                rows.append(row)
                if on_row:
                    on_row(row)
    kit.backend_ip = LOCAL_LAB_IP
    library = library_verdicts(cases, kit)
    order = {c.id: i for i, c in enumerate(cases)}
    rows.sort(key=lambda r: (list(kinds).index(r.proxy), _version_key(r.proxy_version), order[r.case]))
    meta = {
        "runtime": rt.name,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 3),
        "cases": len(cases),
        "proxies": [
            {"proxy": k, "version": i.version if i else None, "tls_library": (i.tls or None) if i else None}
            for k, i in targets
        ],
        "backend_ip": rt.facts().get("backend_ip") or backend_ip,
    }
    return {"meta": meta, "rows": [r.to_dict() for r in rows], "library": library}


def _lab_pki(kit: _Kit, base: LabPKI, group: list[Case], peers: list[str], anchor: str, ip: str) -> LabPKI:
    """*base* (the lab's PKI for a seat at *ip*) with *anchor* as its internal root and each
    case of *group* as an identity under its peer's name."""
    from harness.pki import IdentityCert, LabPKI

    others = {
        PEERS[p]: LabPKI(
            internal_root_pem=kit.anchor_pem(anchor),
            public_root_pem=base.public_root_pem,
            identities={c.id: IdentityCert(c.id, *materialise(c, kit)) for c in group if c.peer == p},
            default_site=base.default_site,
            backend_ip=ip,
            backend_name=PEERS[p],
        )
        for p in peers
    }
    return dataclasses.replace(base, internal_root_pem=kit.anchor_pem(anchor), others=others)


def summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per proxy and version: cases, agreements, disagreements (strict / within latitude), errors."""
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    for r in report["rows"]:
        s = out.setdefault(
            (r["proxy"], r["proxy_version"]),
            {
                "proxy": r["proxy"],
                "version": r["proxy_version"],
                "tls_library": r["tls_library"],
                "cases": 0,
                "agree": 0,
                "disagree": 0,
                "latitude": 0,
                "error": 0,
            },
        )
        s["cases"] += 1
        if r["verdict"] == ERROR:
            s["error"] += 1
        elif r["agrees"]:
            s["agree"] += 1
        elif r["latitude"]:
            s["latitude"] += 1
        else:
            s["disagree"] += 1
    return list(out.values())


def disagreements(report: dict[str, Any], *, strict_only: bool = False) -> list[dict[str, Any]]:
    """Rows whose verdict is not the expected one (errors included)."""
    return [r for r in report["rows"] if not r["agrees"] and not (strict_only and r["latitude"])]


#: The fields of a row in the JSON file; the case's own facts are written once, under ``cases``.
ROW_FIELDS = ("case", "proxy", "proxy_version", "expected", "verdict", "agrees", "outcome", "reason")


def write_json(report: dict[str, Any], path: Path, *, against: dict[str, Any] | None = None) -> None:
    """``{"meta", "summary", "cases": {id: facts}, "rows": [...]}``, one row a line; with *against*
    (another runtime's report) ``meta.against`` holds how many verdicts both share."""
    doc = document(report, against=against)
    rows = doc.pop("rows")
    text = json.dumps(doc, indent=1, ensure_ascii=False)[:-2] + ',\n "rows": [\n'
    text += ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text(text + "\n ]\n}\n")


def _case_fields(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the catalogue says of each case the report ran, by id."""
    by_id = {c.id: c for c in catalogue()}
    return {
        cid: {
            "area": c.area,
            "expected": c.expected,
            "reason": c.reason,
            "peer": c.peer_name,
            "anchor": c.anchor,
            "latitude": c.latitude,
            "limbo": c.limbo,
        }
        for cid in dict.fromkeys(r["case"] for r in report["rows"])
        if (c := by_id.get(cid))
    }


def document(report: dict[str, Any], *, against: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON file's content (:func:`write_json`) as a dict: what ``trustlab report`` reads."""
    cases = _case_fields(report)
    meta = dict(report["meta"])
    if against is not None:
        shared, differ = compare(report, against)
        meta["against"] = {
            "runtime": against["meta"]["runtime"],
            "started": against["meta"]["started"],
            "shared": shared,
            "differ": [[r["proxy"], r["proxy_version"], r["case"], r["verdict"], v] for r, v in differ],
        }
    return {
        "meta": meta,
        "summary": summary(report),
        "cases": cases,
        "library": report.get("library") or {},
        "rows": [{k: r[k] for k in ROW_FIELDS} for r in report["rows"]],
    }


def read_json(path: Path) -> dict[str, Any]:
    """A report written by :func:`write_json` (``--against``); a bad file is a :class:`LabError`."""
    try:
        data = json.loads(path.read_text())
        rows, cases, tls = (
            data["rows"],
            data["cases"],
            {(p["proxy"], p["version"]): p["tls_library"] for p in data["meta"]["proxies"]},
        )
        for r in rows:  # the case's facts and the TLS library again on every row, as run() gives them
            r.update(
                {k: cases[r["case"]][k] for k in ("area", "latitude", "limbo")},
                tls_library=tls.get((r["proxy"], r["proxy_version"])),
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LabError(f"{path}: not a conformance JSON file ({type(exc).__name__}: {exc})") from None
    return dict(data)


def compare(report: dict[str, Any], other: dict[str, Any]) -> tuple[int, list[tuple[dict[str, Any], str]]]:
    """How many rows of *report* the *other* run has too, and those whose verdict differs there."""
    theirs = {(r["proxy"], r["proxy_version"], r["case"]): r["verdict"] for r in other["rows"]}
    both = [
        (r, theirs[(r["proxy"], r["proxy_version"], r["case"])])
        for r in report["rows"]
        if (r["proxy"], r["proxy_version"], r["case"]) in theirs
    ]
    return len(both), [(r, v) for r, v in both if v != r["verdict"]]


# -- the published table ---------------------------------------------------------------------------

_MARK = {True: "✓", False: "✗"}


@dataclass(frozen=True)
class _Page:
    """A conformance report indexed for :func:`markdown`: each kind's default installation first."""

    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    default: dict[str, str | None]
    lib: dict[str, Any]

    @property
    def kinds(self) -> list[str]:
        return list(self.default)

    @property
    def main(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["proxy_version"] == self.default[r["proxy"]]]

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(r["case"] for r in self.rows))

    @property
    def cell(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["case"], r["proxy"]): r for r in self.main}

    @property
    def first(self) -> dict[str, dict[str, Any]]:
        return {r["case"]: r for r in self.rows}

    @property
    def lib_cases(self) -> dict[str, dict[str, str]]:
        cases: dict[str, dict[str, str]] = self.lib.get("cases", {})
        return cases


def _page_of(report: dict[str, Any]) -> _Page:
    meta, rows = report["meta"], report["rows"]
    default: dict[str, str | None] = {}
    for p in meta.get("proxies", []):
        default.setdefault(p["proxy"], p["version"])
    for r in rows:
        default.setdefault(r["proxy"], r["proxy_version"])
    return _Page(meta, rows, default, report.get("library") or {})


def _md_intro(report: dict[str, Any], pg: _Page, against: dict[str, Any] | None) -> list[str]:
    """The title, how the page was made, and the summary table."""
    meta, rows, kinds = pg.meta, pg.rows, pg.kinds
    versions = sorted({(r["proxy"], r["proxy_version"]) for r in rows}, key=lambda pv: kinds.index(pv[0]))
    out = [
        "# Certificate-validation conformance through real proxies",
        "",
        "Generated by `trustlab conformance --all-versions --json docs/conformance.json --doc "
        f"docs/conformance.md{' --against FILE' if meta.get('against') or against else ''}` (FILE: the "
        f"JSON of the same on the other runtime; {meta['runtime']} runtime, {meta['started']}, {meta['cases']} cases, "
        f"{len(versions)} proxy installations, {len(rows)} rows in {meta['duration_s']:.1f} s); do not edit by "
        "hand (`--render docs/conformance.json --doc docs/conformance.md` writes it again from the JSON after "
        "the explanations change). The cases are written in `harness/conformance/__init__.py`: a chain the backend "
        "presents, the anchor the proxy trusts, the peer name it checks, and the verdict RFC 5280 / RFC 6125 / "
        "RFC 9525 expect; an x509-limbo id marks a case that tests the same rule in libraries (cited, not used).",
        "",
        "The same run as a page: [conformance.html](conformance.html) (one offline file: filter by area, proxy "
        "and version, only the disagreements, search by case or x509-limbo id; each cell's reason line, the "
        "library's own verdict, the explanation and the command that reproduces it), written from the JSON by "
        "`trustlab report docs/conformance.json`.",
        "",
        "Each case runs through each kind's `good` scenario with the backend name set to the case's peer "
        "name and the trust file set to the case's anchor (nginx's and Apache's verify depth raised to 5). "
        "*accept*: the response came through; *reject*: the proxy refused (its log line below). "
        "Cases marked *latitude* are ones where the RFCs leave the verifier a choice: the expected verdict "
        "is the stricter modern reading, and a proxy that differs is counted apart, not as a failure.",
        "",
        "## Summary",
        "",
        "| proxy | version | TLS library | cases | agree | disagree | differs within latitude | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary(report):
        out.append(
            f"| {s['proxy']} | {s['version']} | {s['tls_library']} | {s['cases']} | {s['agree']} | "
            f"{s['disagree']} | {s['latitude']} | {s['error']} |"
        )
    return out


def _md_against(report: dict[str, Any], meta: dict[str, Any], against: dict[str, Any] | None) -> list[str]:
    """How many verdicts another runtime's run of the same cases shares."""
    out: list[str] = []
    other = meta.get("against")
    if against is not None:
        shared, differ = compare(report, against)
        other = {
            "runtime": against["meta"]["runtime"],
            "started": against["meta"]["started"],
            "shared": shared,
            "differ": [[r["proxy"], r["proxy_version"], r["case"], r["verdict"], v] for r, v in differ],
        }
    if other:
        out += [
            "",
            f"The same cases on the {other['runtime']} runtime ({other['started']}): "
            f"{other['shared'] - len(other['differ'])} of {other['shared']} shared rows give the same verdict.",
        ]
        out += [f"- {p} {v} `{c}`: {here} here, {there} there" for p, v, c, here, there in other["differ"]]
    return out


def _md_marks(pg: _Page, cid: str, kinds: list[str], cell: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """One case's marks: per kind's default installation, then the host's library."""
    marks = []
    for k in kinds:
        r = cell.get((cid, k))
        if r is None:
            marks.append("")
        elif r["verdict"] == ERROR:
            marks.append("! error")
        else:
            marks.append(_MARK[r["agrees"]] + ("" if r["agrees"] else f" {r['verdict']}"))
    if pg.lib_cases:
        expected = pg.first[cid]["expected"]
        v = pg.lib_cases.get(cid, {}).get("verdict", "")
        marks.append("" if not v else _MARK[v == expected] + ("" if v == expected else f" {v}"))
    return marks


def _md_cases(pg: _Page) -> list[str]:
    """Every case: one row, a mark per kind's default installation and the host's library."""
    kinds, default, cell, first, lib = pg.kinds, pg.default, pg.cell, pg.first, pg.lib
    heads = [f"{k} {default[k]}" for k in kinds] + ([f"{lib['library']} (`openssl verify`)"] if pg.lib_cases else [])
    out = [
        "",
        "## Every case",
        "",
        "✓ the proxy's verdict is the expected one, ✗ it is not (the verdict follows), ! error. The last "
        "column is the host's OpenSSL on its own (below).",
        "",
        "| case | area | expected | " + " | ".join(heads) + " | x509-limbo |",
        "|---|---|---|" + "---|" * len(heads) + "---|",
    ]
    for cid in pg.cases:
        r0 = first[cid]
        marks = _md_marks(pg, cid, kinds, cell)
        lat = " (latitude)" if r0["latitude"] else ""
        out.append(
            f"| `{cid}` | {r0['area']} | {r0['expected']}{lat} | "
            + " | ".join(marks)
            + f" | {r0['limbo'] and '`' + r0['limbo'] + '`'} |"
        )
    return out


def _md_reasons(cid: str, kinds: list[str], cell: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Each default installation that disagrees on a case: its verdict, reason line and note."""
    out = []
    for k in kinds:
        r = cell.get((cid, k))
        if r is None or r["agrees"]:
            continue
        out.append(f"- **{r['proxy']} {r['proxy_version']}**: {r['verdict']}: `{_one_line(r['reason'])}`")
        note = EXPLAIN.get(f"{cid}@{r['proxy']}")
        if note:
            out.append(f"  {note}")
    return out


def _md_disagreements(pg: _Page) -> list[str]:
    """Each case some default installation gets wrong, with the proxies' reasons and the notes."""
    kinds, cell, first = pg.kinds, pg.cell, pg.first
    differing = [cid for cid in pg.cases if any(not cell[(cid, k)]["agrees"] for k in kinds if (cid, k) in cell)]
    out = [
        "",
        "## Disagreements explained",
        "",
        "For each kind's default installation; the reason line is the proxy's own.",
        "",
    ]
    by_case = {c.id: c for c in catalogue()}
    for cid in differing:
        r0 = first[cid]
        case = by_case.get(cid)
        lat = " *(latitude)*" if r0["latitude"] else ""
        out += [f"### `{cid}`{lat}", "", f"Expected **{r0['expected']}**: {case.reason if case else ''}.", ""]
        out += _md_reasons(cid, kinds, cell)
        agreeing = [k for k in kinds if (cid, k) in cell and cell[(cid, k)]["agrees"]]
        if agreeing:
            out.append(f"- as expected: {', '.join(agreeing)}")
        if EXPLAIN.get(cid):
            out += ["", EXPLAIN[cid]]
        out.append("")
    return out


def _md_library(pg: _Page) -> list[str]:
    """The rows where a proxy's verdict is not its own TLS library's."""
    lib, lib_cases = pg.lib, pg.lib_cases
    out: list[str] = []
    if lib_cases:
        same = [r for r in pg.main if r["tls_library"] == lib["library"]]
        apart = [r for r in same if r["verdict"] != lib_cases.get(r["case"], {}).get("verdict", r["verdict"])]
        out += [
            "## Where a proxy differs from its own TLS library",
            "",
            f"The host's {lib['library']} on its own: `{lib['how']}`. The proxies below run on that same "
            f"library; where their verdict is not the library's, the proxy's own code decided (its name "
            f"check, its CN handling, the flags it passes). {len(apart)} of {len(same)} rows.",
            "",
        ]
        for r in apart:
            mine = lib_cases[r["case"]]
            out.append(
                f"- {r['proxy']} {r['proxy_version']} `{r['case']}`: the proxy {r['verdict']}s, "
                f"OpenSSL {mine['verdict']}s (`{_one_line(mine['reason'], 100)}`)"
            )
        out.append("")
    return out


def _md_versions(rows: list[dict[str, Any]]) -> list[str]:
    """The cases where the installed versions of a kind disagree."""
    out = ["## Versions", ""]
    by_kind: dict[tuple[str, str], dict[str | None, dict[str, Any]]] = {}
    for r in rows:
        by_kind.setdefault((r["proxy"], r["case"]), {})[r["proxy_version"]] = r
    split = [(k, cid, vs) for (k, cid), vs in by_kind.items() if len({r["verdict"] for r in vs.values()}) > 1]
    if not split:
        out.append("Every installed version of a kind gives the same verdict on every case.")
    for k, cid, vs in split:
        says = ", ".join(f"{v}: {r['verdict']}" for v, r in vs.items())
        out.append(f"- {k} `{cid}`: {says}")
        odd = [r for r in vs.values() if r["verdict"] == ERROR]
        out += [f"  - {r['proxy_version']}: `{_one_line(r['reason'])}`" for r in odd]
    return out


def markdown(report: dict[str, Any], *, against: dict[str, Any] | None = None) -> str:
    """docs/conformance.md, generated from one run's report (``trustlab conformance --doc``).

    The case table shows each kind's default installation (the first the run lists); other
    versions appear in the summary and, where their verdict differs, under "Versions". *against*
    is another runtime's report of the same cases: the page says how many verdicts both share."""
    pg = _page_of(report)
    out = _md_intro(report, pg, against)
    out += _md_against(report, pg.meta, against)
    out += _md_cases(pg)
    out += _md_disagreements(pg)
    out += _md_library(pg)
    out += _md_versions(pg.rows)
    return "\n".join(out).rstrip() + "\n"


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(text.split()).replace("`", "'").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- `trustlab conformance` ------------------------------------------------------------------------


def add_command(sub: Any, parser_class: type) -> None:
    """Register ``trustlab conformance`` on the CLI's subparsers."""
    sp = sub.add_parser("conformance", help="certificate-validation cases through each proxy's good config")
    sp.add_argument(
        "--proxy",
        action="append",
        metavar="KIND",
        help=f"a proxy kind, repeatable or comma-separated (default: {', '.join(KINDS)})",
    )
    sp.add_argument("--case", action="append", metavar="ID", help="a case id, repeatable (default: all)")
    sp.add_argument(
        "--area",
        action="append",
        choices=("name", "path", "constraints", "anchor"),
        help="only the cases of an area, repeatable",
    )
    sp.add_argument("--list", action="store_true", help="list the cases with their expected verdicts")
    sp.add_argument("--json", metavar="FILE", help="write the rows and the summary as JSON")
    sp.add_argument("--doc", metavar="FILE", help="write the Markdown page (docs/conformance.md)")
    sp.add_argument(
        "--runtime", choices=("auto", "local", "docker"), default="local", help="where the proxies run (default: local)"
    )
    sp.add_argument("--all-versions", action="store_true", help="every installed version of each kind")
    sp.add_argument(
        "--against",
        metavar="FILE",
        help="the JSON of a run on the other runtime: the page says how many verdicts both share",
    )
    sp.add_argument(
        "--html",
        metavar="FILE",
        help="write the results page of the run (docs/conformance.html; "
        "trustlab report JSON writes it from a JSON file)",
    )
    sp.add_argument(
        "--render",
        metavar="JSON",
        help="write --doc and/or --html from a JSON file this command "
        "wrote, without running anything (after editing the explanations)",
    )
    sp.add_argument("--keep", action="store_true", help="keep the lab directories (configs, logs, keys)")
    sp.set_defaults(func=cmd_conformance)


def _kinds(values: list[str] | None) -> list[str]:
    from harness.proxies import names

    chosen = [k.strip() for v in values or [] for k in v.split(",") if k.strip()] or list(KINDS)
    known = set(names())
    for k in chosen:
        if k not in known:
            raise LabError(f"--proxy: {k!r} is not a proxy kind; choose from {', '.join(sorted(known))}")
        if k not in KINDS:
            raise LabError(f"--proxy: {k} has no conformance config yet; choose from {', '.join(KINDS)}")
    return list(dict.fromkeys(chosen))


def cmd_conformance(args: Any) -> int:
    """Exit 1 when a proxy disagrees with a case's expected verdict outside latitude (or errs)."""
    cases = select(args.case, areas=args.area)
    if args.list:
        for c in cases:
            print(f"{c.id:<38} {c.expected:<6}{' ~' if c.latitude else '  '} {c.reason}")
        print(f"{len(cases)} cases (~ latitude: the RFCs leave the verifier a choice)")
        return 0
    if args.render:
        if not args.doc and not args.html:
            raise LabError("--render needs --doc FILE or --html FILE: the page to write")
        if args.doc:
            Path(args.doc).write_text(markdown(read_json(Path(args.render))))
            print(f"wrote {args.doc}")
        if args.html:
            from harness.report import page

            doc = page.load(Path(args.render))
            if page.source_kind(doc) != "conformance":
                raise LabError(
                    f"{args.render}: not a conformance JSON file (write one with trustlab conformance --json FILE)"
                )
            page.write(doc, Path(args.html))
            print(f"wrote {args.html}")
        return 0
    kinds = _kinds(args.proxy)
    for flag, value in (("--json", args.json), ("--doc", args.doc), ("--html", args.html)):
        if value and not Path(value).parent.is_dir():
            raise LabError(f"{flag}: {Path(value).parent} is not a directory")
    runtime = args.runtime
    if runtime == "auto":
        from harness.runner import resolve_auto

        runtime, _ = resolve_auto()
    against = read_json(Path(args.against)) if args.against else None
    report = run(cases, kinds, runtime=runtime, keep=args.keep, all_versions=args.all_versions)
    print(f"{'proxy':<9} {'version':<10} {'cases':>5} {'agree':>5} {'disagree':>8} {'latitude':>8} {'error':>5}")
    for s in summary(report):
        print(
            f"{s['proxy']:<9} {str(s['version'])[:10]:<10} {s['cases']:>5} {s['agree']:>5} {s['disagree']:>8} "
            f"{s['latitude']:>8} {s['error']:>5}"
        )
    strict = [r for r in disagreements(report, strict_only=True)]
    for r in strict:
        print(
            f"differs: {r['proxy']} {r['case']}: {r['verdict']}, expected {r['expected']} "
            f"({_one_line(r['reason'], 160)})"
        )
    if args.json:
        write_json(report, Path(args.json), against=against)
    if args.doc:
        Path(args.doc).write_text(markdown(report, against=against))
    if args.html:
        from harness.report import page

        page.write(document(report, against=against), Path(args.html))
    print(
        f"conformance: {len(report['rows'])} rows in {report['meta']['duration_s']:.1f} s on the "
        f"{report['meta']['runtime']} runtime"
    )
    return 1 if strict else 0
