"""Request ids: every call has one, bound to each of its log lines and returned to the caller."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import grpc
import structlog

from ._wrap import Continuation, WrappingInterceptor, wrap_handler

HEADER = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")


def request_id_from(metadata: Iterable[tuple[str, Any]]) -> str:
    """The caller's x-request-id when it is safe to log and echo, else a new one."""
    for key, value in metadata:
        if key == HEADER and isinstance(value, str) and _VALID.fullmatch(value):
            return value
    return os.urandom(16).hex()  # as unique as a UUID4, at a fraction of the cost


@asynccontextmanager
async def _unary_response(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    metadata = ((HEADER, current_request_id.get()),)
    context.set_trailing_metadata(metadata)
    yield
    # Reached only on success: the id goes out with the response's headers, in one write.
    # If the handler sent its own initial metadata, the trailers still carry the id.
    with contextlib.suppress(grpc.aio.UsageError):
        await context.send_initial_metadata(metadata)


@asynccontextmanager
async def _streaming_response(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    metadata = ((HEADER, current_request_id.get()),)
    context.set_trailing_metadata(metadata)
    # Headers go out before the first message, so they are sent now, whatever the outcome.
    await context.send_initial_metadata(metadata)
    yield


class RequestIdInterceptor(WrappingInterceptor):
    """Starts each call's log context with its method and request id; returns the id as x-request-id."""

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        request_id = request_id_from(details.invocation_metadata or ())
        current_request_id.set(request_id)
        # Each call runs in its own task; clearing makes plain that nothing of another call is here.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=details.method)
        return await super().intercept_service(continuation, details)

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, _streaming_response if handler.response_streaming else _unary_response)
