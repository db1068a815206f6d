"""Wire: bodies are decoded only once the outer layers let a call in; bad bodies and big replies get clear codes."""

from __future__ import annotations

import contextlib
from typing import Any

import grpc

from ._wrap import WrappingInterceptor, wrap_handler


def _message_name(codec: Any, fallback: str) -> str:
    # Generated handlers use the message classes' FromString / SerializeToString.
    message_class = getattr(codec, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", fallback))


class WireInterceptor(WrappingInterceptor):
    """Decodes requests lazily (INVALID_ARGUMENT when not a valid message) and caps encoded replies.

    grpc would answer an undecodable body with UNKNOWN and the parser's internals, before any
    interceptor could log it; a reply over the limit would fail inside grpc while the handler's
    side saw success. Doing both here keeps the status, the message and the access log right.
    """

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__()
        self._max = max_message_bytes

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decode, encode = handler.request_deserializer, handler.response_serializer
        request_name = _message_name(decode, "request")
        limit = self._max

        async def inbound(data: Any, context: grpc.aio.ServicerContext) -> Any:
            if decode is None:
                return data
            try:
                return decode(data)
            except Exception:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {request_name}")

        async def outbound(message: Any, context: grpc.aio.ServicerContext) -> Any:
            data = encode(message) if encode is not None else message
            if len(data) > limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the response is {len(data)} bytes, over the limit of {limit} (HELLO_MAX_MESSAGE_BYTES)",
                )
            return data

        return wrap_handler(handler, contextlib.nullcontext, inbound=inbound, outbound=outbound, codec=True)
