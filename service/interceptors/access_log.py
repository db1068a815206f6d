"""Access log: exactly one structured line per unary call, written when it ends, never with a secret."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import grpc
import structlog

from .auth import Continuation

_CALLER_ERRORS = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.ABORTED,
    }
)


def level_for(code: grpc.StatusCode) -> str:
    """OK is info, the caller's mistakes are warnings, the server's failures are errors."""
    if code is grpc.StatusCode.OK:
        return "info"
    return "warning" if code in _CALLER_ERRORS else "error"


def _status(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return default
    return code if isinstance(code, grpc.StatusCode) else _BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)


_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class AccessLogInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Logs method, code, duration_ms, peer and the principal bound by later interceptors, per call."""

    def __init__(self, logger: Any = None) -> None:
        self._log = logger if logger is not None else structlog.get_logger("hello.access")

    def _write(self, method: str, code: grpc.StatusCode, started: float, peer: str | None) -> None:
        log = getattr(self._log, level_for(code))
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        log("rpc", method=method, code=code.name, duration_ms=duration_ms, peer=peer)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        # Each call runs in its own task, so what earlier calls bound is not here; clearing
        # makes that explicit and keeps the line's context to this call.
        structlog.contextvars.clear_contextvars()
        started = time.perf_counter()
        handler = await continuation(details)
        if handler is None:
            self._write(details.method, grpc.StatusCode.UNIMPLEMENTED, started, None)
            return None
        if handler.request_streaming or handler.response_streaming:
            return handler  # streaming calls are not logged yet
        return handler._replace(unary_unary=self._logged(handler.unary_unary, details.method, started))

    def _logged(self, behavior: Behavior, method: str, started: float) -> Behavior:
        async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(request, context)
                code = _status(context, grpc.StatusCode.OK)
                return response
            except grpc.aio.AbortError:
                code = _status(context, grpc.StatusCode.UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                # grpc percent-encodes IPv6 peers ("ipv6:%5B::1%5D:5000"); log them as people write them.
                self._write(method, code, started, unquote(context.peer()))

        return logged
