"""TLS material: read and check it once at start-up, then build grpc server and channel credentials."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..config.settings import CLIENT_ENV_PREFIX, ClientSettings, TlsSettings, env_name
from ..errors import ConfigError
from .tokens import TokenFileError, parse_tokens

CERT_FILE = env_name("tls", "cert_file")
KEY_FILE = env_name("tls", "key_file")
CLIENT_CA_FILE = env_name("tls", "client_ca_file")


@dataclass(frozen=True)
class ServerTls:
    """The server's checked TLS material, as PEM bytes for grpc."""

    chain: bytes
    key: bytes
    client_ca: bytes | None
    not_after: dt.datetime

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate (a client CA is configured)."""
        return self.client_ca is not None


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None


def _certificates(pem: bytes, path: Path, setting: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(setting, f"{path} holds no PEM certificate") from None


def _public_key_bytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_server_tls(tls: TlsSettings, *, now: dt.datetime | None = None) -> ServerTls:
    """Read the server's certificate chain, key and optional client CA, and check they can work.

    Raises ConfigError for a missing half of the pair, unparsable PEM, a key that does not match
    the certificate, or a certificate outside its validity period.
    """
    if tls.cert_file is None or tls.key_file is None:
        missing = CERT_FILE if tls.cert_file is None else KEY_FILE
        raise ConfigError(missing, f"is required with {CERT_FILE if missing == KEY_FILE else KEY_FILE}")
    chain_pem = _read(tls.cert_file, CERT_FILE)
    leaf = _certificates(chain_pem, tls.cert_file, CERT_FILE)[0]
    key_pem = _read(tls.key_file, KEY_FILE)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(KEY_FILE, f"{tls.key_file} holds no unencrypted PEM private key") from None
    if _public_key_bytes(key.public_key()) != _public_key_bytes(leaf.public_key()):
        raise ConfigError(KEY_FILE, f"{tls.key_file} does not match the certificate in {CERT_FILE}")
    now = now or dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(CERT_FILE, f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(CERT_FILE, f"the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d} UTC")
    client_ca = None
    if tls.client_ca_file is not None:
        client_ca = _read(tls.client_ca_file, CLIENT_CA_FILE)
        _certificates(client_ca, tls.client_ca_file, CLIENT_CA_FILE)
    return ServerTls(chain=chain_pem, key=key_pem, client_ca=client_ca, not_after=leaf.not_valid_after_utc)


def bearer_token(client: ClientSettings) -> str | None:
    """The token the client sends: HELLO_CLIENT__TOKEN, else the first token in the token file."""
    if client.token is not None:
        return client.token.get_secret_value()
    if client.token_file is None:
        return None
    setting = env_name("token_file", prefix=CLIENT_ENV_PREFIX)
    try:
        return parse_tokens(_read(client.token_file, setting).decode())[0][1]
    except (TokenFileError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"{client.token_file}: {exc}") from None


def _client_file(path: Path | None, field: str) -> bytes | None:
    return _read(path, env_name(field, prefix=CLIENT_ENV_PREFIX)) if path else None


def channel_credentials(client: ClientSettings) -> grpc.ChannelCredentials:
    """TLS channel credentials (with a client certificate for mTLS) carrying the bearer token per call."""
    if (client.cert_file is None) != (client.key_file is None):
        raise ConfigError(env_name("cert_file", prefix=CLIENT_ENV_PREFIX), "the client certificate needs its key")
    root = _client_file(client.ca_file, "ca_file")
    chain = _client_file(client.cert_file, "cert_file")
    key = _client_file(client.key_file, "key_file")
    credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    token = bearer_token(client)
    if token is None:
        return credentials
    # access_token_call_credentials sends "authorization: Bearer <token>" and, being call
    # credentials, is only ever sent over a secure channel.
    return grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
