"""Auth: a call to a protected service runs only for an authenticated principal its policy allows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
import structlog

from ..auth import Authenticate, AuthError
from ._wrap import Continuation, wrap_handler

Authorize = Callable[[str, str], bool]


def service_of(method: str) -> str:
    """'/pkg.Service/Method' -> 'pkg.Service'."""
    return method.split("/", 2)[1] if method.startswith("/") else ""


async def _unimplemented(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method")


_UNKNOWN_METHOD = grpc.unary_unary_rpc_method_handler(_unimplemented)


def _allow_all(_principal: str, _method: str) -> bool:
    return True


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks every call outside ``public_services`` before its handler runs (and before its body is decoded).

    The check runs inside the wrapped handler, where the TLS auth context (the mTLS identity) is
    known; with the wire interceptor inside this one, a refused call's body is never parsed.
    Unknown methods are refused the same way, so anonymous callers cannot probe what exists.
    """

    def __init__(
        self,
        authenticate: Authenticate,
        public_services: Iterable[str],
        authorize: Authorize = _allow_all,
        on_refusal: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        self._authenticate, self._authorize, self._on_refusal = authenticate, authorize, on_refusal
        self._public = frozenset(public_services)
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._unknown = wrap_handler(_UNKNOWN_METHOD, self._guard(None))

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if service_of(details.method) in self._public:
            return handler
        if handler is None:
            return self._unknown
        # Registered methods are few and fixed, so this stays small whatever callers send.
        entry = self._guarded.get(details.method)
        if entry is None or entry[0] is not handler:
            entry = (handler, wrap_handler(handler, self._guard(details.method)))
            self._guarded[details.method] = entry
        return entry[1]

    def _guard(self, method: str | None) -> Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]:
        @asynccontextmanager
        async def guard(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            try:
                principal = self._authenticate(context.invocation_metadata() or (), context.auth_context())
                if method is not None and not self._authorize(principal, method):
                    raise AuthError(f"{principal} may not call {method}", "denied", grpc.StatusCode.PERMISSION_DENIED)
            except AuthError as error:
                self._on_refusal(error.reason)
                await context.abort(error.code, error.message)
            structlog.contextvars.bind_contextvars(principal=principal)
            yield

        return guard
