"""A trust path stands for the lab's system bundle only when it is an OS store's exact path (issue 24)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.configs.base import ABSENT_CA, LabPaths, Note, is_system_bundle, trust_file


@pytest.mark.parametrize(
    "path",
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/certs",
        "/etc/ssl/certs/",
        '"/etc/ssl/cert.pem"',
        "/usr/local/share/certs/ca-root-nss.crt",
    ],
)
def test_os_stores_are_the_system_bundle(path: str) -> None:
    assert is_system_bundle(path)


@pytest.mark.parametrize(
    "path",
    [
        "upstreamcacert.pem",  # nginx-tests names its private CA like this: a substring match took it for the OS store
        "/etc/nginx/upstreamcacert.pem",
        "cacert.pem",
        "/etc/ssl/certs/internal-ca.pem",
        "/etc/ssl/certs/corp-root.crt",
        "/usr/local/share/ca-certificates/corp-root.crt",
        "/etc/pki/internal/ca.pem",
        "/srv/ca-certificates.crt.bak",
        "/etc/ssl/certs/ca-certificates.crt/../../private/ca.pem",
    ],
)
def test_a_private_ca_file_is_not(path: str) -> None:
    assert not is_system_bundle(path)


def _lab(tmp_path: Path, ca_files: tuple[str, ...] | None) -> LabPaths:
    fields = {n: tmp_path / n for n in LabPaths.__dataclass_fields__ if n not in ("crl_chain", "crl_leaf", "ca_files")}
    return LabPaths(**fields, ca_files=ca_files)


@pytest.mark.parametrize(
    "path",
    ["/etc/nginx/tls/internal-pki.pem", '"/etc/nginx/tls/internal-pki.pem"', "/etc/nginx//tls/./internal-pki.pem"],
)
def test_a_challenges_ca_file_stands_for_the_lab_root(tmp_path: Path, path: str) -> None:
    lab, notes = _lab(tmp_path, ("/etc/nginx/tls/internal-pki.pem",)), list[Note]()
    assert trust_file(path, lab, notes) == str(lab.ca)
    assert not any(ABSENT_CA in n.text for n in notes)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/nginx/tls/internal-pki.pm",
        "/etc/nginx/internal-pki.pem",
        "internal-pki.pem",
        "/etc/nginx/tls/internal-pki.pem.bak",
    ],
)
def test_any_other_ca_path_of_a_challenge_is_a_missing_file(tmp_path: Path, path: str) -> None:
    """A typo'd CA path graded SOLVED while every path stood for the lab's root."""
    lab, notes = _lab(tmp_path, ("/etc/nginx/tls/internal-pki.pem",)), list[Note]()
    new = Path(trust_file(path, lab, notes))
    assert new.parent == lab.run_dir / "absent" and not new.exists()
    assert notes == [
        Note.whole(f"{path} {ABSENT_CA} (its CA file: /etc/nginx/tls/internal-pki.pem); it stands for a missing file")
    ]


def test_the_system_bundle_exists_on_every_host_and_check_trusts_any_path(tmp_path: Path) -> None:
    lab = _lab(tmp_path, ("/etc/nginx/tls/internal-pki.pem",))
    assert trust_file("/etc/ssl/certs/ca-certificates.crt", lab, []) == str(lab.bundle)
    # check on a user's own config: the lab cannot see their files, any CA path is the lab's root
    assert trust_file("/etc/nginx/tls/internal-pki.pm", _lab(tmp_path, None), []) == str(lab.ca)
