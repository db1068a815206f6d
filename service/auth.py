"""Authentication functions: turn a call's metadata into a principal, or say why not."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from .tokens import TokenStore

Metadata = Sequence[tuple[str, str | bytes]]


class AuthError(Exception):
    """The call is refused; ``message`` is safe to send to the caller (it never contains a secret)."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# Returns the caller's principal (the name that appears in logs) or raises AuthError.
Authenticate = Callable[[Metadata], str]


def bearer_authenticator(tokens: TokenStore) -> Authenticate:
    """Accept ``authorization: Bearer <token>`` for any token in ``tokens``."""

    def authenticate(metadata: Metadata) -> str:
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            raise AuthError("missing credentials: send the metadata 'authorization: Bearer <token>'")
        if len(values) > 1:
            raise AuthError("more than one 'authorization' metadata entry")
        value = values[0]
        if not isinstance(value, str):
            raise AuthError("the 'authorization' metadata must be text")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("the 'authorization' metadata must use the Bearer scheme")
        token = token.strip()
        if not token:
            raise AuthError("the bearer token is empty")
        principal = tokens.principal_for(token)
        if principal is None:
            raise AuthError("the bearer token is not valid")
        return principal

    return authenticate
