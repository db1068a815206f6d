"""Auth: a call to a protected service runs only for an authenticated principal; others get its error first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import structlog

from ..auth import Authenticate, AuthError

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def service_of(method: str) -> str:
    """'/pkg.Service/Method' -> 'pkg.Service'."""
    return method.split("/", 2)[1] if method.startswith("/") else ""


def _rejection(handler: grpc.RpcMethodHandler | None, error: AuthError) -> grpc.RpcMethodHandler:
    """A handler of the same RPC kind that answers with ``error`` and never reads the request."""

    async def reject(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(error.code, error.message)

    request_streaming = bool(handler and handler.request_streaming)
    response_streaming = bool(handler and handler.response_streaming)
    # No deserializer: the body of a refused call is never parsed.
    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(reject)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(reject)
    return grpc.unary_unary_rpc_method_handler(reject)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Asks ``authenticate`` for every call outside ``public_services`` and binds the principal to the log context."""

    def __init__(self, authenticate: Authenticate, public_services: Iterable[str]) -> None:
        self._authenticate = authenticate
        self._public = frozenset(public_services)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if service_of(details.method) in self._public:
            return await continuation(details)
        try:
            principal = self._authenticate(details.invocation_metadata or ())
        except AuthError as error:
            # Unknown methods are refused the same way, so an anonymous caller learns nothing.
            return _rejection(await continuation(details), error)
        structlog.contextvars.bind_contextvars(principal=principal)
        return await continuation(details)
