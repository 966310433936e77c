"""The proxy's own verification line is extracted from its log; anything else is not a block."""

from __future__ import annotations

from harness.proxies import driver
from harness.runtimes.probe import Response, decide
from harness.vocab import Outcome

# Log lines and the reason each gives, one pair a row (the formatter leaves them as written).
# fmt: off
NGINX = {
    '2026/11/27 05:53:24 [error] 3323#3323: *3 upstream SSL certificate verify error: (21:unable to verify '
    'the first certificate) while SSL handshaking to upstream, client: 127.0.0.1':
        "upstream SSL certificate verify error: (21:unable to verify the first certificate)",
    '2026/11/27 05:53:33 [error] 3323#3323: *9 upstream SSL certificate does not match "backend-api.internal" '
    'while SSL handshaking to upstream':
        'upstream SSL certificate does not match "backend-api.internal"',
}
APACHE = {
    "[Fri Nov 27 05:53:24.664346 2026] [ssl:info] [pid 3324:tid 3343] [remote 10.203.0.10:8443] AH02276: "
    "Certificate Verification: Error (20): unable to get local issuer certificate [subject: CN=x]":
        "AH02276: Certificate Verification: Error (20): unable to get local issuer certificate",
    "[Fri Nov 27 05:53:33.713781 2026] [ssl:info] [pid 3324:tid 3352] [remote 10.203.0.10:8443] AH02411: "
    "SSL Proxy: Peer certificate does not match for hostname backend-api.internal":
        "AH02411: SSL Proxy: Peer certificate does not match for hostname backend-api.internal",
    "[ssl:info] AH02040: Certificate Verification: Certificate Chain too long (chain has 2 certificates, "
    "but maximum allowed are only 1)":
        "AH02040: Certificate Verification: Certificate Chain too long (chain has 2 certificates, "
        "but maximum allowed are only 1)",
}
HAPROXY = {
    'trustlab req="GET /x HTTP/1.1" status=503 term=SC ssl_bc_err=167772294 '
    'ssl_bc_err_str="error:0A000086:SSL routines::certificate verify failed"':
        'ssl_bc_err_str="error:0A000086:SSL routines::certificate verify failed"',
}
# fmt: on


def test_nginx_reasons() -> None:
    for line, reason in NGINX.items():
        assert driver("nginx").block_reason("noise\n" + line + "\n") == reason


def test_apache_reasons() -> None:
    for line, reason in APACHE.items():
        assert driver("apache").block_reason(line) == reason


def test_haproxy_reasons() -> None:
    for line, reason in HAPROXY.items():
        assert driver("haproxy").block_reason(line) == reason


def test_non_verification_lines_are_not_reasons() -> None:
    assert (
        driver("nginx").block_reason("[error] connect() failed (111: Connection refused) while connecting to upstream")
        is None
    )
    assert (
        driver("apache").block_reason(
            "[proxy:error] AH00957: HTTPS: attempt to connect to 10.203.0.10:8443 (backend) failed"
        )
        is None
    )
    assert (
        driver("haproxy").block_reason(
            'trustlab req="GET / HTTP/1.1" status=503 term=SC ssl_bc_err=0 ssl_bc_err_str="-"'
        )
        is None
    )


def test_decide_served_spoofed_blocked_error() -> None:
    ok = Response(200, "legit")
    assert decide(presented="legit", response=ok, block_reason=None)[0] is Outcome.SERVED
    spoof = Response(200, "rogue-ca")
    assert decide(presented="rogue-ca", response=spoof, block_reason=None)[0] is Outcome.SPOOFED
    refused = Response(502, None)
    assert decide(presented="rogue-ca", response=refused, block_reason="verify error")[0] is Outcome.BLOCKED


def test_decide_never_folds_errors_into_blocked() -> None:
    # a refusal without a verification line in the log is an error, whatever the status
    assert decide(presented="rogue-ca", response=Response(502, None), block_reason=None)[0] is Outcome.ERROR
    assert decide(presented="rogue-ca", response=Response(None, None, "timeout"), block_reason=None)[0] is Outcome.ERROR
    # a response from an identity other than the one presented is a stale connection, not a verdict
    assert decide(presented="rogue-ca", response=Response(200, "legit"), block_reason=None)[0] is Outcome.ERROR
    # the wrong site of a multi-site backend is not "served"
    assert (
        decide(presented="legit", response=Response(200, "legit@default-site"), block_reason=None)[0] is Outcome.ERROR
    )
