"""Access log: exactly one structured line per call of every kind, written when it ends, never with a secret."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
import structlog

from ._outcome import Outcome, outcome
from ._wrap import Continuation, WrappingInterceptor, wrap_handler

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


@dataclass(slots=True)
class _Call:
    method: str
    started: float
    user_agent: str | None
    streaming: bool = False
    received: int = 0
    sent: int = 0


_current: ContextVar[_Call] = ContextVar("access_log_call")


async def _received(message: Any, _context: grpc.aio.ServicerContext) -> Any:
    _current.get().received += 1
    return message


async def _sent(message: Any, _context: grpc.aio.ServicerContext) -> Any:
    _current.get().sent += 1
    return message


class AccessLogInterceptor(WrappingInterceptor):
    """Logs code, duration_ms, peer, user_agent (and message counts for streams) with the call's context.

    The call's context (method, request_id, principal) comes from structlog's contextvars, bound
    by the request-id and auth interceptors. Calls to ``quiet_services`` that succeed log at debug,
    so probes every few seconds do not flood the log.
    """

    def __init__(self, logger: Any = None, quiet_services: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._log = logger if logger is not None else structlog.get_logger("hello.access")
        self._quiet = tuple(f"/{service}/" for service in quiet_services)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        user_agent = next((v for k, v in details.invocation_metadata or () if k == "user-agent"), None)
        _current.set(_Call(details.method, time.perf_counter(), user_agent))
        handler = await super().intercept_service(continuation, details)
        if handler is None:  # grpc answers UNIMPLEMENTED itself; no Python code runs for the call
            self._write(_current.get(), grpc.StatusCode.UNIMPLEMENTED, None)
        return handler

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not (handler.request_streaming or handler.response_streaming):
            return wrap_handler(handler, self._logged)
        return wrap_handler(handler, self._logged_stream, inbound=_received, outbound=_sent)

    @asynccontextmanager
    async def _logged_stream(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        _current.get().streaming = True  # the line then carries the message counts
        async with self._logged(context):
            yield

    @asynccontextmanager
    async def _logged(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        result = Outcome()
        try:
            async with outcome(context, result):
                yield
        finally:
            # grpc percent-encodes IPv6 peers ("ipv6:%5B::1%5D:5000"); log them as people write them.
            self._write(_current.get(), result.code, unquote(context.peer()))

    def _write(self, call: _Call, code: grpc.StatusCode, peer: str | None) -> None:
        level = level_for(code)
        if code is grpc.StatusCode.OK and call.method.startswith(self._quiet):
            level = "debug"
        fields: dict[str, Any] = {
            "method": call.method,
            "code": code.name,
            "duration_ms": round((time.perf_counter() - call.started) * 1000, 3),
            "peer": peer,
            "user_agent": call.user_agent,
        }
        if call.streaming:
            fields.update(received=call.received, sent=call.sent)
        getattr(self._log, level)("rpc", **fields)
