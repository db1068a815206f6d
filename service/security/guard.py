"""What guards the server, from the settings: its TLS material, how callers authenticate, what each may call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import structlog

from ..config.files import load_setting_file
from ..config.settings import AuthSettings, Settings, env_name
from ..errors import ConfigError
from .authenticators import Authenticate, all_of, bearer_authenticator, mtls_authenticator
from .credentials import CERT_FILE, CLIENT_CA_FILE, ServerTls, load_server_tls
from .policy import Policy, PolicyError
from .tokens import TokenFile, TokenFileError

EXPIRY_WARNING = dt.timedelta(days=30)

log = structlog.get_logger("hello.server")


def server_tls(settings: Settings) -> ServerTls | None:
    """The checked TLS material, or None for HELLO_INSECURE; a certificate close to expiry is a warning."""
    if settings.tls.enabled:
        tls = load_server_tls(settings.tls)
        if tls.not_after - dt.datetime.now(dt.UTC) < EXPIRY_WARNING:
            log.warning("certificate expires soon", setting=CERT_FILE, not_after=tls.not_after.isoformat())
        return tls
    if settings.tls.client_ca_file is not None:
        raise ConfigError(CLIENT_CA_FILE, f"mutual TLS needs {CERT_FILE} and its key too")
    if not settings.insecure:
        raise ConfigError(
            CERT_FILE,
            "TLS is required: set it and HELLO_TLS__KEY_FILE (or HELLO_INSECURE=true for plaintext experiments)",
        )
    return None


def _token_file(auth: AuthSettings) -> TokenFile:
    setting = env_name("auth", "tokens_file")
    if auth.tokens_file is None:
        raise ConfigError(setting, "is required: a file of accepted bearer tokens (make certs writes certs/token)")
    return load_setting_file(
        setting, auth.tokens_file, lambda path: TokenFile(path, auth.reload_seconds, log), TokenFileError
    )


def authenticator(auth: AuthSettings, tls: ServerTls | None) -> Authenticate:
    """The authentication function HELLO_AUTH__MODE asks for (token, mtls, or both)."""
    if auth.mode != "token" and not (tls and tls.mutual):
        raise ConfigError(env_name("auth", "mode"), f"{auth.mode} needs {CLIENT_CA_FILE} (mutual TLS)")
    if auth.mode == "mtls":
        return mtls_authenticator()
    tokens = bearer_authenticator(_token_file(auth).current)
    return tokens if auth.mode == "token" else all_of(tokens, mtls_authenticator())


def policy(auth: AuthSettings, methods: Sequence[str]) -> Policy | None:
    """The policy file's rules over ``methods`` (every method served), or None without one."""
    if auth.policy_file is None:
        return None
    setting = env_name("auth", "policy_file")
    return load_setting_file(setting, auth.policy_file, lambda path: Policy.from_file(path, methods), PolicyError)
