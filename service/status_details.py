"""Why a call was refused, in the standard form: google.rpc.Status details and grpc's retry pushback.

Any gRPC client decodes ``grpc-status-details-bin`` (grpcio-status, grpc-go's ``status.FromError``,
grpcurl) and grpc's own retry obeys ``grpc-retry-pushback-ms`` in every language. Everything here
runs only on a refusal's path; a call that is served builds none of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# grpc's retry waits this many milliseconds before its next attempt; "-1" means do not retry.
PUSHBACK = "grpc-retry-pushback-ms"
NO_RETRY = -1
# ErrorInfo.domain: the service that names the reasons (google.rpc asks for a stable name).
DOMAIN = "hello-grpc-service"

Trailers = tuple[tuple[str, str | bytes], ...]


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    """RetryInfo: retry after ``seconds`` (rounded up to the millisecond)."""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(math.ceil(seconds * 1000))
    return info


def quota_failure(subject: str, description: str) -> error_details_pb2.QuotaFailure:
    """QuotaFailure with one violation: whose quota (``subject``) and which limit."""
    return error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)]
    )


def bad_request(field: str, description: str) -> error_details_pb2.BadRequest:
    """BadRequest with one field violation: the field's path and the rule it broke."""
    return error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    )


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    """ErrorInfo in this service's domain; ``reason`` is UPPER_SNAKE_CASE, as google.rpc asks."""
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)


def pushback_within(seconds: float, context: grpc.aio.ServicerContext[Any, Any]) -> int:
    """The pushback for a wait of ``seconds``: that many ms, or NO_RETRY when the caller's deadline ends first.

    grpc waits out a pushback even past the deadline: the caller would get DEADLINE_EXCEEDED instead
    of this refusal and its details.
    """
    milliseconds = math.ceil(seconds * 1000)
    remaining = context.time_remaining()
    return milliseconds if remaining is None or milliseconds < remaining * 1000 else NO_RETRY


def status_trailers(
    code: grpc.StatusCode, message: str, details: Iterable[Message], pushback_ms: int | None = None
) -> Trailers:
    """The trailing metadata that carries ``details`` (and the pushback) for a status of ``code`` and ``message``."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    trailers: Trailers = tuple(rpc_status.to_status(status).trailing_metadata)
    if pushback_ms is not None:
        trailers += ((PUSHBACK, str(pushback_ms)),)
    return trailers


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    *details: Message,
    pushback_ms: int | None = None,
) -> NoReturn:
    """End the call with ``code``, ``message`` (free text, for grpcurl users) and ``details``, keeping earlier trailers.

    grpc's abort replaces the trailing metadata when given some, so the ones already set (the
    request id) are sent along.
    """
    if details or pushback_ms is not None:
        extra = status_trailers(code, message, details, pushback_ms)
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), *extra))
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this tells mypy so


def decode(error: grpc.aio.AioRpcError) -> list[Message]:
    """The google.rpc details a failed call carries that this module knows, decoded; [] when none."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # The details' code or message disagree with the call's: not to be trusted.
        return []
    if status is None:
        return []
    known: list[Message] = []
    for packed in status.details:
        for kind in (
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                known.append(detail)
    return known
