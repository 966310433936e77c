"""A trust path stands for the lab's system bundle only when it is an OS store's exact path (issue 24)."""

from __future__ import annotations

import pytest

from harness.configs.base import is_system_bundle


@pytest.mark.parametrize("path", [
    "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/certs", "/etc/ssl/certs/", '"/etc/ssl/cert.pem"',
    "/usr/local/share/certs/ca-root-nss.crt",
])
def test_os_stores_are_the_system_bundle(path: str) -> None:
    assert is_system_bundle(path)


@pytest.mark.parametrize("path", [
    "upstreamcacert.pem",  # nginx-tests names its private CA like this: a substring match took it for the OS store
    "/etc/nginx/upstreamcacert.pem", "cacert.pem", "/etc/ssl/certs/internal-ca.pem", "/etc/ssl/certs/corp-root.crt",
    "/usr/local/share/ca-certificates/corp-root.crt", "/etc/pki/internal/ca.pem", "/srv/ca-certificates.crt.bak",
    "/etc/ssl/certs/ca-certificates.crt/../../private/ca.pem",
])
def test_a_private_ca_file_is_not(path: str) -> None:
    assert not is_system_bundle(path)
