"""Development PKI: a CA, a server and a client certificate (ECDSA P-256), and a random bearer token."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
LEAF_DAYS = 365
KEY_MODE = 0o600


@dataclass(frozen=True)
class Written:
    """One file of the set and whether this run wrote it (False: an existing file was kept)."""

    path: Path
    written: bool


def _san(name: str) -> x509.GeneralName:
    # A URI (a SPIFFE ID: spiffe://trust-domain/path), an IP address, else a DNS name.
    if "://" in name:
        return x509.UniformResourceIdentifier(name)
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hello-grpc-service dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_secret(path, pem)


def _write_secret(path: Path, data: bytes) -> None:
    # Created with 0600 from the start, so the secret is never readable by others, even briefly.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_pair(cert_file: Path, key_file: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a certificate (PEM) and its key (PKCS#8 PEM, mode 0600)."""
    _write_cert(cert_file, cert)
    _write_key(key_file, key)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    days: int,
    start: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    now = start or dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little slack for clocks that run behind.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    # ECDSA keys only sign: the handshake (digital_signature) and, for a CA, certificates and CRLs.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    common_name: str = "hello-grpc-service dev CA",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign leaf certificates (and nothing below them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    sans: Iterable[str | x509.GeneralName] = (),
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    days: int = LEAF_DAYS,
    start: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by the CA for one purpose: serverAuth (with SANs) or clientAuth.

    It is valid for ``days`` from ``start`` (default: now). A SAN is a name (a URI, an IP
    address, else a DNS name) or any GeneralName as it is.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), ca_cert.subject, key, days, start)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    names = [_san(n) if isinstance(n, str) else n for n in dict.fromkeys(sans)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def new_token() -> str:
    """A random bearer token in the tokens-file format's alphabet (no whitespace, no ':')."""
    return secrets.token_urlsafe(32)


def missing_names(cert_file: Path, names: Iterable[str]) -> list[str]:
    """The ``names`` (DNS names or IP addresses) that the certificate in ``cert_file`` does not carry."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        carried = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        carried = set()
    return [name for name in names if _san(name) not in carried]


def write_dev_pki(directory: Path, *, extra_sans: Iterable[str] = (), force: bool = False) -> list[Written]:
    """Write ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem and token.

    Existing files are kept unless ``force``; a new CA always brings new certificates signed by it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    result: list[Written] = []

    def have(name: str) -> bool:
        return not force and (directory / f"{name}.pem").exists() and (directory / f"{name}-key.pem").exists()

    new_ca = not have("ca")
    if new_ca:
        ca_cert, ca_key = make_ca()
        write_pair(directory / "ca.pem", directory / "ca-key.pem", ca_cert, ca_key)
    else:
        ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        loaded = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'ca-key.pem'} is not an EC key; rerun with --force")
        ca_key = loaded
    result += [Written(directory / "ca.pem", new_ca), Written(directory / "ca-key.pem", new_ca)]

    leaves = {
        "server": ("localhost", [*DEFAULT_SANS, *extra_sans], ExtendedKeyUsageOID.SERVER_AUTH),
        "client": ("hello-client", [], ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    for name, (common_name, sans, usage) in leaves.items():
        # A kept server certificate without a name asked for would fail every client that dials
        # that name: it is re-issued by the same CA, so clients keep trusting it.
        fresh = new_ca or not have(name) or bool(missing_names(directory / f"{name}.pem", sans))
        if fresh:
            cert, key = make_leaf(ca_cert, ca_key, common_name, sans=sans, usage=usage)
            write_pair(directory / f"{name}.pem", directory / f"{name}-key.pem", cert, key)
        result += [Written(directory / f"{name}.pem", fresh), Written(directory / f"{name}-key.pem", fresh)]

    token_path = directory / "token"
    fresh_token = force or not token_path.exists()
    if fresh_token:
        _write_secret(token_path, f"# dev token written by hello-certs\ndev:{new_token()}\n".encode())
    result.append(Written(token_path, fresh_token))
    return result
