"""Wire: bodies are decoded only once the outer layers let a call in; bad bodies and big replies get clear codes."""

from __future__ import annotations

from typing import Any

import grpc

from ..status_details import NO_RETRY, bad_request, quota_failure
from .hooks import Hooks, Method, Refusal


def _message_name(codec: Any, fallback: str) -> str:
    # Generated handlers use the message classes' FromString / SerializeToString.
    message_class = getattr(codec, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", fallback))


class Wire:
    """Decodes requests lazily (INVALID_ARGUMENT when not a valid message) and caps encoded replies.

    grpc would answer an undecodable body with UNKNOWN and the parser's internals, before any
    layer could log it; a reply over the limit would fail inside grpc while the handler's side
    saw success. Doing both here keeps the status, the message and the access log right.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes

    def hooks(self, method: Method) -> Hooks | None:
        """The handler's own (de)serializers, checked; None when it has none."""
        decode, encode = method.handler.request_deserializer, method.handler.response_serializer
        if decode is None or encode is None:
            return None
        invalid = f"the request is not a valid {_message_name(decode, 'request')}"
        limit = self._max
        # Made once per method, raised as is: refusals may share it, nothing changes it.
        malformed = bad_request("", invalid)

        def checked_decode(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception:
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, invalid, details=(malformed,)) from None

        def checked_encode(message: Any) -> bytes:
            data: bytes = encode(message)
            if len(data) > limit:
                # The same request gets the same reply: pushback -1, no retry.
                raise Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the response is {len(data)} bytes, over the limit of {limit} (HELLO_MAX_MESSAGE_BYTES)",
                    details=(quota_failure("response", f"at most {limit} bytes"),),
                    pushback_ms=NO_RETRY,
                )
            return data

        return Hooks(decode=checked_decode, encode=checked_encode)
