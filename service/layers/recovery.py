"""Errors: an exception escaping a handler becomes INTERNAL with a generic message and one error log line.

One escaping a layer's exit hook, after the outcome is settled, is logged and changes nothing for the caller.
"""

from __future__ import annotations

import grpc
import structlog

from .hooks import Call, Refusal

log = structlog.get_logger("hello.errors")


def internal_error(call: Call) -> Refusal:
    """Log the exception being handled (with its stack) and say INTERNAL without internals.

    Called by the chain inside its ``except``: the stack goes to the log, tied to the call by its
    request id; the caller learns nothing of the internals (grpc would send "Unexpected <class ...>").
    """
    log.exception("unhandled exception in handler")
    return Refusal(grpc.StatusCode.INTERNAL, f"internal error (request id {call.request_id})")


def exit_failed(call: Call) -> None:
    """Log the exception being handled, raised by a layer's exit hook of ``call``."""
    log.exception("layer failed at the end of a call", code=call.code.name)
