"""Auth: a call to a protected service runs only for an authenticated principal its policy allows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import unquote

import grpc
import structlog

from ..identity import Caller, Proof, current_caller
from ..security.authenticators import Authenticate, AuthError
from ..status_details import NO_RETRY, error_info, retry_info
from .buckets import Buckets
from .hooks import Call, Hooks, Method, Refusal

Authorize = Callable[[str, str], bool]
# Callers remembered by principal, so a call makes none; more are forgotten all at once.
MAX_CALLERS = 4096


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.1:5000' -> '10.0.0.1'; 'ipv6:%5B::1%5D:5000' -> '[::1]' (the port varies per connection)."""
    return unquote(peer.split(":", 1)[-1].rsplit(":", 1)[0])


def service_of(method: str) -> str:
    """'/pkg.Service/Method' -> 'pkg.Service'."""
    return method.split("/", 2)[1] if method.startswith("/") else ""


class _AuthContext(Mapping[str, Sequence[bytes]]):
    """The call's TLS auth context, asked of grpc only when an authenticator looks (token auth never does)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._values: Mapping[str, Sequence[bytes]] | None = None

    def _get(self) -> Mapping[str, Sequence[bytes]]:
        if self._values is None:
            # grpc's stubs say Iterable; grpc gives a list per key.
            self._values = cast("Mapping[str, Sequence[bytes]]", self._context.auth_context())
        return self._values

    def __getitem__(self, key: str) -> Sequence[bytes]:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _allow_all(_principal: str, _method: str) -> bool:
    return True


class Auth:
    """Checks every call outside ``public_services`` before its handler runs (and before its body is decoded).

    The check runs inside the call, where the TLS auth context (the mTLS identity) is known; with
    the wire layer inside this one, a refused call's body is never parsed. Unknown methods are
    refused the same way, so anonymous callers cannot probe what exists.
    """

    def __init__(
        self,
        authenticate: Authenticate,
        public_services: Iterable[str],
        authorize: Authorize = _allow_all,
        on_refusal: Callable[[str], None] = lambda _reason: None,
        failures: Buckets | None = None,
        proven_by: Proof = "token",
    ) -> None:
        self._authenticate, self._authorize, self._on_refusal = authenticate, authorize, on_refusal
        self._proven_by, self._callers = proven_by, dict[str, Caller]()
        # Failed authentications per peer address. An address whose bucket is empty has its failed
        # calls refused as throttled; a valid credential from it is served as ever (callers behind
        # one NAT, proxy or sidecar share the address with whoever guesses). So every credential is
        # checked: 2-3 us (python -m timeit) of the 700-840 us of server CPU a refused call costs,
        # nothing a refusal unchecked would save. Strong tokens (tokens.py) make guessing pointless.
        self._failures = failures
        self._public = frozenset(public_services)

    def hooks(self, method: Method) -> Hooks | None:
        """None for public services; unknown methods are authenticated but not authorized."""
        if service_of(method.name) in self._public:
            return None
        name = method.name if method.known else None
        return Hooks(enter=lambda call: self._guard(call, name))

    def _guard(self, call: Call, method: str | None) -> None:
        try:
            principal = self._authenticate(call.metadata, _AuthContext(call.context))
        except AuthError as error:
            raise self._refusal(call, error) from None
        # Bound before the policy's answer, so that a refused call's line names who was refused.
        structlog.contextvars.bind_contextvars(principal=principal)
        current_caller.set(self._caller(principal))
        if method is not None and not self._authorize(principal, method):
            denied = AuthError(f"{principal} may not call {method}", "denied", grpc.StatusCode.PERMISSION_DENIED)
            raise self._refusal(call, denied)

    def _refusal(self, call: Call, error: AuthError) -> Refusal:
        failures = self._failures
        # Only a failed call asks for its peer; Call keeps it, so grpc is asked once.
        if (
            failures is not None
            and error.code is grpc.StatusCode.UNAUTHENTICATED
            and (wait := failures.take(peer_host(call.peer())))
        ):
            self._on_refusal("throttled")
            # No automatic retry (pushback -1): the wait is seconds long, the credentials failed,
            # and a guesser should get nothing for free; RetryInfo says when.
            return Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many failed authentications from this address; retry after {wait:.1f} s",
                details=(error_info("THROTTLED"), retry_info(wait)),
                pushback_ms=NO_RETRY,
            )
        self._on_refusal(error.reason)
        # The reason the metrics count, in google.rpc's UPPER_SNAKE_CASE; never the credentials.
        return Refusal(error.code, error.message, details=(error_info(error.reason.upper()),))

    def _caller(self, principal: str) -> Caller:
        known = self._callers.get(principal)
        if known is None:
            if len(self._callers) >= MAX_CALLERS:
                self._callers.clear()
            known = self._callers[principal] = Caller(principal, self._proven_by)
        return known
