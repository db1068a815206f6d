"""hello-certs: a CA that can sign, leaf certificates for one purpose each, keys only the owner can read."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from service.security.tokens import MIN_TOKEN_LENGTH, parse_tokens

from .processes import BIN, clean_env, run

FILES = ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem", "token"]
SECRETS = ["ca-key.pem", "server-key.pem", "client-key.pem", "token"]


def hello_certs(*args: str | Path) -> str:
    """Run hello-certs; return what it says (on stderr: its stdout stays empty, for pipes)."""
    result = run([str(BIN / "hello-certs"), *map(str, args)], clean_env(), 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("made")
    hello_certs("--dir", directory, "--san", "hello.hello.svc,hello.hello.svc.cluster.local", "--san", "10.1.2.3")
    return directory


def _cert(directory: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / name).read_bytes())


def test_all_files_written(made: Path) -> None:
    assert sorted(p.name for p in made.iterdir()) == sorted(FILES)


@pytest.mark.parametrize("name", SECRETS)
def test_secrets_are_owner_only(made: Path, name: str) -> None:
    assert stat.S_IMODE((made / name).stat().st_mode) == 0o600


def test_ca_can_sign_certificates(made: Path) -> None:
    ca = _cert(made, "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert ca.issuer == ca.subject


def test_server_certificate(made: Path) -> None:
    server = _cert(made, "server.pem")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "localhost",
        "hello.hello.svc",
        "hello.hello.svc.cluster.local",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_client_certificate(made: Path) -> None:
    client = _cert(made, "client.pem")
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]


@pytest.mark.parametrize("name", ["server", "client"])
def test_leaf_chains_to_ca_and_matches_its_key(made: Path, name: str) -> None:
    ca, leaf = _cert(made, "ca.pem"), _cert(made, f"{name}.pem")
    leaf.verify_directly_issued_by(ca)
    key = load_pem_private_key((made / f"{name}-key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert key.public_key() == leaf.public_key()


def test_token_file_is_valid_for_the_server(made: Path) -> None:
    [(principal, token)] = parse_tokens((made / "token").read_text())
    assert principal == "dev"
    assert len(token) >= MIN_TOKEN_LENGTH


def _dns_names(directory: Path) -> list[str]:
    sans = _cert(directory, "server.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(sans.get_values_for_type(x509.DNSName))


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    hello_certs("--dir", tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in FILES}
    assert "kept  " in hello_certs("--dir", tmp_path, "--san", "localhost")
    assert {name: (tmp_path / name).read_bytes() for name in FILES} == before
    hello_certs("--dir", tmp_path, "--force", "--san", "new.example")
    after = {name: (tmp_path / name).read_bytes() for name in FILES}
    assert all(after[name] != before[name] for name in FILES)
    assert "new.example" in _dns_names(tmp_path)


def test_a_name_asked_for_reissues_only_the_server_certificate(tmp_path: Path) -> None:
    hello_certs("--dir", tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in FILES}
    said = hello_certs("--dir", tmp_path, "--san", "new.example")
    after = {name: (tmp_path / name).read_bytes() for name in FILES}
    changed = sorted(name for name in FILES if after[name] != before[name])
    assert changed == ["server-key.pem", "server.pem"]
    assert f"wrote {tmp_path / 'server.pem'}" in said
    assert "new.example" in _dns_names(tmp_path)
    _cert(tmp_path, "server.pem").verify_directly_issued_by(_cert(tmp_path, "ca.pem"))


def test_missing_leaf_is_reissued_by_the_existing_ca(tmp_path: Path) -> None:
    hello_certs("--dir", tmp_path)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    (tmp_path / "client.pem").unlink()
    hello_certs("--dir", tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    _cert(tmp_path, "client.pem").verify_directly_issued_by(_cert(tmp_path, "ca.pem"))


def test_a_new_ca_reissues_every_leaf(tmp_path: Path) -> None:
    hello_certs("--dir", tmp_path)
    (tmp_path / "ca-key.pem").unlink()
    hello_certs("--dir", tmp_path)
    for name in ("server.pem", "client.pem"):
        _cert(tmp_path, name).verify_directly_issued_by(_cert(tmp_path, "ca.pem"))
