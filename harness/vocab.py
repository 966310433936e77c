"""The closed vocabularies of trustlab: outcomes, proxy kinds and identities.

These names are a contract (see DESIGN.md): they appear in scenario files, in the
matrix JSON and on the command line. Never rename them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: The name the proxy is configured to reach.
BACKEND_NAME = "backend-api.internal"
#: A backend name two labels below its parent (``svc.internal``): the name a scenario sets with
#: ``backend = ...`` to show a wildcard (``*.svc.internal``) that OpenSSL-based proxies accept.
SUBDOMAIN_BACKEND_NAME = "api.svc.internal"
#: A compromised sibling service that holds a genuine internal certificate.
SIBLING_NAME = "other-svc.internal"
#: The name a multi-site backend answers with when no (or an unknown) SNI arrives.
DEFAULT_SITE_NAME = "default-site.internal"
#: Port the backend seat listens on, inside the lab's own network.
BACKEND_PORT = 8443
#: The backend seat's fixed address inside a local lab namespace.
LOCAL_LAB_IP = "10.203.0.10"
#: The public name clients use to reach the proxy (sent as Host by the probe).
PUBLIC_HOST = "www.trustlab.test"


#: Files of the PKI directory a config may name (as ``{client_pem}`` ...), and the optional identity that mints them.
PKI_FILES: dict[str, tuple[str, str]] = {
    "client_ca": ("client-ca.pem", "client-ca-signed"),
    "client_cert": ("proxy-client.crt", "client-ca-signed"),
    "client_key": ("proxy-client.key", "client-ca-signed"),
    "client_pem": ("proxy-client.pem", "client-ca-signed"),
    "client_pem_with_ca": ("proxy-client-with-ca.pem", "client-ca-signed"),
    "client_pems_two": ("proxy-clients-two.pem", "client-ca-signed"),
    "crl_chain": ("crl-chain.pem", "revoked"),
    "crl_intermediate": ("crl-intermediate.pem", "revoked"),
    "crl_root": ("crl-root.pem", "revoked"),
}


class Outcome(enum.StrEnum):
    """What happened to one request through the proxy (a *cell*)."""

    SERVED = "served"
    SPOOFED = "spoofed"
    BLOCKED = "blocked"
    CONFIG_REJECTED = "config-rejected"
    ERROR = "error"


class ProxyKind(enum.StrEnum):
    """The reverse proxies the lab drives."""

    NGINX = "nginx"
    APACHE = "apache"
    HAPROXY = "haproxy"
    CADDY = "caddy"
    ENVOY = "envoy"
    TRAEFIK = "traefik"
    TRAFFICSERVER = "trafficserver"
    SQUID = "squid"


@dataclass(frozen=True)
class IdentitySpec:
    """What one identity stands for (its certificate is minted by :mod:`harness.pki`)."""

    id: str
    legitimate: bool
    meaning: str
    #: Who answers with it, in one sentence for a learner (the grader's feedback, the docs).
    story: str = ""


IDENTITIES: tuple[IdentitySpec, ...] = (
    IdentitySpec(
        "legit",
        True,
        "internal intermediate -> backend-api.internal, chain served",
        "the real backend, with its certificate from your internal CA",
    ),
    IdentitySpec(
        "legit-no-chain",
        True,
        "the legitimate leaf without its intermediate",
        "the real backend, forgetting to send its intermediate certificate",
    ),
    IdentitySpec(
        "rogue-ca",
        False,
        "an unrelated CA, trusted nowhere -> backend-api.internal",
        "an attacker's own CA issued a certificate with the backend's name; only checking the chain stops it",
    ),
    IdentitySpec(
        "self-signed",
        False,
        "a self-signed certificate for backend-api.internal",
        "anyone can sign a certificate with the backend's name themselves; only checking the chain stops it",
    ),
    IdentitySpec(
        "wrong-name",
        False,
        "internal intermediate -> other-svc.internal (a sibling)",
        "a compromised sibling service (other-svc.internal) with its own genuine certificate from your CA; "
        "only checking the name stops it",
    ),
    IdentitySpec(
        "expired",
        False,
        "internal intermediate -> backend-api.internal, expired",
        "a retired certificate for the backend's name (an old key that may have leaked); "
        "only checking validity dates stops it",
    ),
    IdentitySpec(
        "not-yet-valid",
        False,
        "internal intermediate -> backend-api.internal, not yet valid",
        "a certificate for the backend's name that is not valid yet; only checking validity dates stops it",
    ),
    IdentitySpec(
        "ip-san",
        False,
        "internal intermediate -> only an IP SAN (the lab IP), no CN",
        "a certificate from your CA naming only the backend's IP address; "
        "checking the backend's name, not its address, stops it",
    ),
    IdentitySpec(
        "wildcard",
        False,
        "internal intermediate -> *.internal",
        "a wildcard certificate *.internal from your CA, covering every service at once; "
        "some proxies' name checks refuse it, for the others only the PKI's policy can",
    ),
    IdentitySpec(
        "public-ca",
        False,
        "a 'public' CA (in the system bundle) -> backend-api.internal",
        "a public CA from the OS trust store issued a certificate for the backend's name; "
        "only trusting your internal root alone stops it",
    ),
)

IDENTITY_IDS: tuple[str, ...] = tuple(spec.id for spec in IDENTITIES)

#: Identities a scenario may add by listing them in ``[expected]`` (never run otherwise): they
#: stand for backends the built-in PKI does not have, e.g. a deeper chain (nginx/nginx#1409), or
#: certificates whose names only some matchers read the same way. "The backend name" is the
#: scenario's ``backend`` (``backend-api.internal`` unless it sets one).
OPTIONAL_IDENTITIES: tuple[IdentitySpec, ...] = (
    IdentitySpec(
        "legit-deep", True, "internal root -> intermediate -> second intermediate -> backend-api.internal, both served"
    ),
    IdentitySpec(
        "wildcard-parent",
        False,
        "internal intermediate -> *.<parent> (*.svc.internal for api.svc.internal); needs a backend "
        "name with at least two labels under its parent",
    ),
    IdentitySpec("cn-only", False, "internal intermediate -> CN = the backend name, no SAN at all"),
    IdentitySpec(
        "san-other-cn-backend", False, "internal intermediate -> SAN other-svc.internal, CN = the backend name"
    ),
    IdentitySpec(
        "client-ca-signed", False, "the CA that issued the proxy's client certificate -> backend-api.internal"
    ),
    IdentitySpec(
        "revoked",
        False,
        "internal intermediate -> backend-api.internal, then revoked (listed in the intermediate's CRL)",
    ),
)
OPTIONAL_IDENTITY_IDS: tuple[str, ...] = tuple(spec.id for spec in OPTIONAL_IDENTITIES)
ALL_IDENTITY_IDS: tuple[str, ...] = IDENTITY_IDS + OPTIONAL_IDENTITY_IDS
LEGITIMATE_IDS: frozenset[str] = frozenset(s.id for s in IDENTITIES + OPTIONAL_IDENTITIES if s.legitimate)


def wildcard_parent(backend: str) -> str | None:
    """``*.<parent>`` of *backend* when its parent has at least two labels, else ``None``.

    ``api.svc.internal`` -> ``*.svc.internal``; ``backend-api.internal`` -> ``None`` (its parent
    ``internal`` is one label: that is the ``wildcard`` identity, ``*.internal``, which OpenSSL
    refuses to match whatever the proxy's config says).
    """
    labels = backend.split(".")
    return "*." + ".".join(labels[1:]) if len(labels) >= 3 else None


def identity_spec(identity: str) -> IdentitySpec:
    """Return the spec of a built-in identity id."""
    for spec in IDENTITIES + OPTIONAL_IDENTITIES:
        if spec.id == identity:
            return spec
    raise KeyError(identity)
