"""Errors: an exception escaping a handler becomes INTERNAL with a generic message and one error log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import structlog

from ._wrap import WrappingInterceptor, wrap_handler
from .request_id import current_request_id

log = structlog.get_logger("hello.errors")


@asynccontextmanager
async def _recover(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    try:
        yield
    except grpc.aio.AbortError:
        raise  # the handler's own status and message pass through
    except Exception:
        # The stack goes to the log, tied to the call by its request id; the caller learns nothing
        # of the internals (grpc would send "Unexpected <class ...>: <message>").
        log.exception("unhandled exception in handler")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {current_request_id.get()})")


class ErrorInterceptor(WrappingInterceptor):
    """Turns unhandled exceptions into INTERNAL; aborts and cancellations pass through unchanged."""

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, _recover)
