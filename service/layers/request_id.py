"""Request ids: every call has one, bound to each of its log lines and returned to the caller."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Any

import structlog

from .hooks import Call, Hooks, Method

HEADER = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_from(metadata: Iterable[tuple[str, Any]]) -> str:
    """The caller's x-request-id when it is safe to log and echo, else a new one."""
    for key, value in metadata:
        if key == HEADER and isinstance(value, str) and _VALID.fullmatch(value):
            return value
    # 128 random bits, like a UUID4; ids need to be unique, not secret, so no system call for them.
    return f"{random.getrandbits(128):032x}"


def _start(call: Call) -> None:
    call.request_id = request_id = request_id_from(call.metadata)
    # Each call runs in its own task; clearing makes plain that nothing of another call is here.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, method=call.method)
    # Set now, so that an abort (which sends the status at once) carries it; the chain adds it to
    # whatever trailing metadata the handler sets.
    call.trailers = ((HEADER, request_id),)
    call.context.set_trailing_metadata(call.trailers)


def _start_stream(call: Call) -> None:
    _start(call)
    # A stream's caller may want the id while the stream lasts, so it goes out with the headers too
    # (before the first message, or with the handler's own). Not on unary replies: grpc sends
    # those headers with the reply in one write, and initial metadata of our own would cost a
    # write of its own (a sixth of the throughput, measured).
    call.headers = ((HEADER, call.request_id),)


class RequestId:
    """Starts each call's log context with its method and request id; returns the id as x-request-id.

    The id is in the trailing metadata of every call, and in the initial metadata of streaming replies.
    """

    def hooks(self, method: Method) -> Hooks:
        """The same for every method."""
        return Hooks(enter=_start_stream if method.handler.response_streaming else _start)
