"""Authentication functions: turn a call's metadata and TLS identity into a principal, or say why not."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import grpc

from .tokens import TokenStore

Metadata = Sequence[tuple[str, str | bytes]]
AuthContext = Mapping[str, Sequence[bytes]]


class AuthError(Exception):
    """The call is refused; ``message`` is safe to send to the caller (it never contains a secret).

    ``reason`` is a short fixed word for metrics: missing, malformed, invalid, no_certificate, denied
    (and the auth layer's own "throttled").
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


def certificate_principal(auth_context: AuthContext) -> str | None:
    """The verified client certificate's identity: its SPIFFE ID, else its first DNS SAN, else its CN; None without one.

    RFC 6125 and SPIFFE put the SAN first and the CN last, so policies and logs name the caller as
    a mesh does. An X509-SVID carries exactly one URI SAN; a certificate with several URIs is no
    SVID, and neither it nor IP, email or other URI SANs name the caller here.
    """
    uris = auth_context.get("peer_uri") or ()
    if len(uris) == 1 and uris[0].startswith(b"spiffe://"):
        return uris[0].decode("utf-8", "replace")
    for key in ("peer_dns", "x509_common_name"):
        values = auth_context.get(key)
        if values:
            return values[0].decode("utf-8", "replace")
    return None


def mtls_authenticator() -> Authenticate:
    """Accept any client certificate the TLS handshake verified against the configured client CA."""

    def authenticate(_metadata: Metadata, auth_context: AuthContext) -> str:
        principal = certificate_principal(auth_context)
        if principal is None:
            raise AuthError("a client certificate is required", "no_certificate")
        return principal

    return authenticate


def all_of(token: Authenticate, certificate: Authenticate) -> Authenticate:
    """Both a client certificate and a bearer token; the token names the principal."""

    def authenticate(metadata: Metadata, auth_context: AuthContext) -> str:
        certificate(metadata, auth_context)
        return token(metadata, auth_context)

    return authenticate
