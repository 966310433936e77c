"""Why a proxy's conformance verdict differs from the expected one (prose only), and how
conformance runs order versions: the part of :mod:`harness.conformance` the results page
(:mod:`harness.report.page`) reads too, below both so neither imports the other back."""

from __future__ import annotations


def version_key(version: str | None) -> tuple[int, ...]:
    """A version as numbers for sorting (``()`` for none or one that does not parse)."""
    from harness.versions import parse

    try:
        return parse(version) if version else ()
    except ValueError:
        return ()


#: Why a proxy's verdict differs from the expected one, by case id (and, where proxies differ for
#: different reasons, ``case@proxy``). Prose only: every number and verdict on the page comes
#: from the run.
_OPENSSL_CN = (
    "nginx's X509_check_host falls back to the subject CN when the certificate has no dNSName "
    "(unless the caller sets X509_CHECK_FLAG_NEVER_CHECK_SUBJECT); Apache and HAProxy read the CN "
    "themselves; Go ignores the CN since Go 1.15 and Envoy's SAN matcher reads only SANs."
)
_STRING_NAME = (
    "nginx (ngx_ssl_check_host: X509_check_host, never X509_check_ip_asc; nginx/nginx#1363), "
    "Apache (SSLProxyCheckPeerName compares dNSNames and CNs) and HAProxy (verifyhost compares "
    "dNSNames and CNs) treat the IP they connect to as a host name string: "
)
EXPLAIN: dict[str, str] = {
    "wildcard-partial-prefix": "OpenSSL's X509_check_host accepts a partial-label wildcard at the start or end "
    "of the leftmost label (w*, *w) unless the caller passes X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, which nginx "
    "does not; Apache's own matcher (modssl_X509_match_name) takes only a whole '*.' label; HAProxy's "
    "(ssl_sock_srv_hostcheck) and Envoy's DNS matcher take any '*' in the leftmost label; Go rejects partial "
    "wildcards.",
    "wildcard-partial-suffix": "As for wildcard-partial-prefix.",
    "wildcard-partial-infix": "OpenSSL allows a partial wildcard only at a label's start or end, so nginx "
    "rejects w*w; HAProxy's and Envoy's own matchers accept it.",
    "wildcard-public-suffix": "No proxy consults a public suffix list: *.co.uk covers example.co.uk everywhere "
    "(RFC 6125 7.2 leaves it to the client; the CA/B rules keep CAs from issuing it).",
    "peer-trailing-dot": "Go's crypto/x509 (Caddy, Traefik) drops the absolute name's trailing dot before "
    "matching; the OpenSSL- and BoringSSL-based proxies compare the dotted name as written and find no SAN "
    "ending in a dot.",
    "cn-only": _OPENSSL_CN,
    "cn-wildcard-only": _OPENSSL_CN,
    "cn-with-ip-san-only": _OPENSSL_CN + " An iPAddress SAN is not a dNSName, so the CN is still read.",
    "cn-with-email-san-only": _OPENSSL_CN + " An rfc822Name SAN is not a dNSName, so the CN is still read.",
    "cn-with-other-san@apache": "Apache's name check (SSLProxyCheckPeerName: modssl_X509_match_name) gathers "
    "the subject CNs beside the dNSNames as identifiers to match, so the CN matches although a SAN is present "
    "(RFC 6125 6.4.4 forbids it).",
    "cn-with-other-san@haproxy": "HAProxy's verify callback (ssl_sock_srv_verifycbk) reads the subject CN "
    "whenever no dNSName matched, SAN present or not.",
    "san-nul-byte@haproxy": "HAProxy converts the dNSName with ASN1_STRING_to_UTF8 and compares it as a C "
    "string: the name ends at the NUL, so www.conformance.test\\0.evil.test passes as www.conformance.test "
    "(the NUL-prefix attack of 2009), on every HAProxy version the run holds (see Versions). "
    "X509_check_host, used by nginx, refuses embedded NULs, and Apache's matcher does not match them.",
    "idn-wildcard-in-a-label@haproxy": "HAProxy's own wildcard matcher accepts a '*' anywhere in the "
    "leftmost label, also inside an A-label (xn--b*), which RFC 6125 7.2 forbids.",
    "ip-peer-ip-san": _STRING_NAME + "an iPAddress SAN never matches. Envoy (IP_ADDRESS matcher), Caddy and "
    "Traefik (Go) match the iPAddress SAN.",
    "ip-peer-dns-and-ip-san": "As for ip-peer-ip-san: the iPAddress SAN is never compared.",
    "ip-peer-ip-in-dns-san": _STRING_NAME + "the IP written as a dNSName string matches. Envoy's IP_ADDRESS "
    "matcher and Go compare iPAddress SANs only.",
    "cn-with-uri-san-only": _OPENSSL_CN + " A uniformResourceIdentifier SAN is not a dNSName, so the CN is "
    "still read (RFC 6125 6.4.4 counts a URI-ID as a presented identifier that rules the CN out).",
    "ip-peer-ip-san-among-several": "As for ip-peer-ip-san: the iPAddress SANs are never compared.",
    "ip-peer-cn-only": _OPENSSL_CN + " The IP is matched as a string against the CN.",
    "expired-root": "Every proxy's library checks the anchor's own validity period (OpenSSL unless "
    "X509_V_FLAG_NO_CHECK_TIME, Go and BoringSSL always); RFC 5280 6.1.1 leaves the anchor out of path "
    "validation.",
    "root-pathlen-0": "OpenSSL and Go apply the trusted root's own basicConstraints pathLen; Envoy (BoringSSL) "
    "does not, as RFC 5280 6.1.1(d) describes (an anchor's extensions are not processed).",
    "leaf-eku-any": "OpenSSL's SSL-server purpose and BoringSSL require serverAuth itself: "
    "anyExtendedKeyUsage alone is unsuitable; Go accepts ExtKeyUsageAny.",
    "leaf-rsa-1024": "Debian's OpenSSL runs at security level 2 (112 bits), which refuses RSA-1024 in a "
    "chain; an OpenSSL built without Debian's configuration defaults to level 1 (80 bits) and accepts it "
    "(HAProxy 2.8.25 from the cache, linked to its own OpenSSL 3.0.15, where it is run); Go and BoringSSL "
    "(Envoy) verify RSA-1024 signatures without a minimum.",
    "intermediate-rsa-1024": "As for leaf-rsa-1024.",
    "leaf-p384@envoy": "Not a validation verdict: Envoy's default upstream curves are X25519 and P-256, so "
    "the backend cannot use a P-384 certificate and the handshake fails before verification "
    "(ecdh_curves in the upstream TLS context changes it).",
    "leaf-ed25519@envoy": "Not a validation verdict: Envoy's default signature algorithms leave out Ed25519, "
    "so the handshake fails before verification.",
    "leaf-san-noncritical-empty-subject": "No verifier enforces the rule that a SAN must be critical when "
    "the subject is empty: it binds the CA that issues, not the verifier.",
    "partial-chain-served": "OpenSSL accepts a non-self-signed anchor only with X509_V_FLAG_PARTIAL_CHAIN, "
    "which nginx, Apache and HAProxy do not set; Go treats every certificate in the pool as a root; "
    "Envoy accepts the intermediate as an anchor as well.",
    "partial-chain-leaf-only": "As for partial-chain-served.",
    "partial-chain-deeper": "As for partial-chain-served: without X509_V_FLAG_PARTIAL_CHAIN, OpenSSL looks for "
    "the intermediate's own issuer ('unable to get issuer certificate').",
    "nc-ip-permitted-match@envoy": "BoringSSL in Envoy 1.40 ends verification with 'unsupported name "
    "constraint type' when an iPAddress constraint meets an iPAddress SAN, whatever the constraint says; "
    "the reject verdicts of nc-ip-permitted-mismatch and nc-ip-excluded-match on Envoy have the same cause.",
    "nc-ip-excluded-other@envoy": "As for nc-ip-permitted-match.",
}
