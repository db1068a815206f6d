"""Authentication functions: turn a call's metadata and TLS identity into a principal, or say why not."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import grpc

from .tokens import TokenStore

Metadata = Sequence[tuple[str, str | bytes]]
AuthContext = Mapping[str, Sequence[bytes]]


class AuthError(Exception):
    """The call is refused; ``message`` is safe to send to the caller (it never contains a secret).

    ``reason`` is a short fixed word for metrics: missing, malformed, invalid, no_certificate,
    bad_identity, denied (and the auth layer's own "throttled").
    """

    def __init__(self, message: str, reason: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED) -> None:
        super().__init__(message)
        self.message, self.reason, self.code = message, reason, code


# Returns the caller's principal (the name that appears in logs and policies) or raises AuthError.
Authenticate = Callable[[Metadata, AuthContext], str]


def bearer_authenticator(tokens: Callable[[], TokenStore]) -> Authenticate:
    """Accept ``authorization: Bearer <token>`` for any token in the current ``tokens()`` set."""

    def authenticate(metadata: Metadata, _auth_context: AuthContext) -> str:
        value: str | bytes | None = None
        for key, each in metadata:
            if key == "authorization":
                if value is not None:
                    raise AuthError("more than one 'authorization' metadata entry", "malformed")
                value = each
        if value is None:
            raise AuthError("missing credentials: send the metadata 'authorization: Bearer <token>'", "missing")
        if not isinstance(value, str):
            raise AuthError("the 'authorization' metadata must be text", "malformed")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("the 'authorization' metadata must use the Bearer scheme", "malformed")
        token = token.strip()
        if not token:
            raise AuthError("the bearer token is empty", "malformed")
        principal = tokens().principal_for(token)
        if principal is None:
            raise AuthError("the bearer token is not valid", "invalid")
        return principal

    return authenticate


# How logs and policies name a certificate's holder, by the field the name comes from. No two
# kinds can share a name: a SPIFFE ID keeps its scheme, the other kinds get a prefix, a DNS name
# has no ':' and a token's name (the bearer principal) has none either.
DNS_PREFIX, CN_PREFIX = "dns:", "cn:"
# SPIFFE IDs as go-spiffe parses them, with the X.509-SVID rule for a leaf: a path, of segments
# other than "." and ".."; at most 2048 bytes (SPIFFE-ID.md 2.3).
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(?:/[A-Za-z0-9._-]+)+")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
SPIFFE_ID_FORM = "spiffe://trust-domain/path"


def is_spiffe_id(uri: str) -> bool:
    """Whether ``uri`` is a SPIFFE ID a leaf certificate may carry."""
    return len(uri) <= 2048 and _SPIFFE_ID.fullmatch(uri) is not None and not {".", ".."} & set(uri.split("/")[3:])


def is_host_name(name: str) -> bool:
    """Whether ``name`` is a lower-case DNS name (letters, digits, '-' and '_' in dot-separated labels)."""
    return len(name) <= 253 and _HOST_NAME.fullmatch(name) is not None


def certificate_principal(auth_context: AuthContext) -> str | None:
    """The verified client certificate's principal: its SPIFFE ID, else ``dns:`` its first DNS SAN, else ``cn:`` its CN.

    RFC 6125 and SPIFFE put the SAN first and the CN last, so policies and logs name the caller as
    a mesh does. A certificate with a URI SAN claims a SPIFFE ID: unless it has exactly one URI
    SAN and that is a SPIFFE ID, it is no X.509-SVID and is refused (AuthError), never named by
    its DNS SAN or CN instead. IP and email SANs do not name the caller. None: no name at all.
    """
    uris = auth_context.get("peer_uri") or ()
    if len(uris) > 1:
        raise AuthError(
            f"the client certificate has {len(uris)} URI SANs: an X.509-SVID has exactly one, its SPIFFE ID",
            "bad_identity",
        )
    if uris:
        uri = uris[0].decode("utf-8", "replace")
        if not is_spiffe_id(uri):
            raise AuthError(f"the client certificate's URI SAN is not a SPIFFE ID ({SPIFFE_ID_FORM})", "bad_identity")
        return uri
    dns = auth_context.get("peer_dns")
    if dns:
        # DNS names compare case-insensitively (RFC 4343): one spelling, whatever the CA wrote.
        name = dns[0].decode("utf-8", "replace").lower()
        if not is_host_name(name):
            raise AuthError("the client certificate's first DNS SAN is not a DNS name", "bad_identity")
        return DNS_PREFIX + name
    common_name = auth_context.get("x509_common_name")
    if common_name:
        return CN_PREFIX + common_name[0].decode("utf-8", "replace")
    return None


def principal_problem(principal: str) -> str | None:
    """Why no caller can have ``principal`` (a policy's key), or None: a token's name has no ':'."""
    if ":" not in principal:
        return None
    if principal.startswith("spiffe:"):
        return None if is_spiffe_id(principal) else f"not a SPIFFE ID ({SPIFFE_ID_FORM}, a lower-case trust domain)"
    if principal.startswith(DNS_PREFIX):
        return None if is_host_name(principal[len(DNS_PREFIX) :]) else "dns: needs a lower-case DNS name"
    if principal.startswith(CN_PREFIX) and len(principal) > len(CN_PREFIX):
        return None
    return "a principal is a token's name (no ':'), a SPIFFE ID (spiffe://...), dns:NAME or cn:NAME"


def mtls_authenticator() -> Authenticate:
    """Accept any client certificate the TLS handshake verified against the configured client CA."""

    def authenticate(_metadata: Metadata, auth_context: AuthContext) -> str:
        principal = certificate_principal(auth_context)
        if principal is None:
            raise AuthError(
                "a client certificate that names its holder (a SPIFFE ID, a DNS SAN or a subject CN) is required",
                "no_certificate",
            )
        return principal

    return authenticate


def all_of(token: Authenticate, certificate: Authenticate) -> Authenticate:
    """Both a client certificate and a bearer token; the token names the principal."""

    def authenticate(metadata: Metadata, auth_context: AuthContext) -> str:
        certificate(metadata, auth_context)
        return token(metadata, auth_context)

    return authenticate
