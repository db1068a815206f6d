"""grpc's interop TestService, written with grpc's sync API, and a clock: served only through HELLO_APP.

The behaviour is that of grpc's interop test descriptions (doc/interop-test-descriptions.md):
replies of the sizes asked, the status asked (response_status), and the metadata a caller asks
to be echoed. Both protos are services-only files: test.proto takes the messages of two other
files, clock.proto only well-known types. The tests copy this folder beside its generated code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from .generated.clock.v1 import clock_pb2_grpc
from .generated.grpc.testing import empty_pb2 as empty
from .generated.grpc.testing import messages_pb2 as messages
from .generated.grpc.testing import test_pb2_grpc

ECHO_INITIAL, ECHO_TRAILING = "x-grpc-test-echo-initial", "x-grpc-test-echo-trailing-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}


def _payload(size: int) -> messages.Payload:
    return messages.Payload(type=messages.COMPRESSABLE, body=b"\0" * size)


def _echo_metadata(context: Any) -> None:
    metadata = dict(context.invocation_metadata())
    if ECHO_INITIAL in metadata:
        context.send_initial_metadata(((ECHO_INITIAL, metadata[ECHO_INITIAL]),))
    if ECHO_TRAILING in metadata:
        context.set_trailing_metadata(((ECHO_TRAILING, metadata[ECHO_TRAILING]),))


def _status(request: Any, context: Any) -> None:
    if request.response_status.code:
        context.abort(CODES[request.response_status.code], request.response_status.message)


def _replies(request: messages.StreamingOutputCallRequest) -> Iterator[messages.StreamingOutputCallResponse]:
    for parameters in request.response_parameters:
        if parameters.interval_us:
            time.sleep(parameters.interval_us / 1e6)  # a sync handler may block: it has a thread of its own
        yield messages.StreamingOutputCallResponse(payload=_payload(parameters.size))


class TestService(test_pb2_grpc.TestServiceServicer):
    """The interop server's behaviour; UnimplementedCall is left to the generated base class."""

    def EmptyCall(self, request: empty.Empty, context: Any) -> empty.Empty:
        _echo_metadata(context)
        return empty.Empty()

    def UnaryCall(self, request: messages.SimpleRequest, context: Any) -> messages.SimpleResponse:
        _echo_metadata(context)
        _status(request, context)
        return messages.SimpleResponse(payload=_payload(request.response_size))

    def StreamingOutputCall(
        self, request: messages.StreamingOutputCallRequest, context: Any
    ) -> Iterator[messages.StreamingOutputCallResponse]:
        _status(request, context)
        yield from _replies(request)

    def StreamingInputCall(
        self, request_iterator: Iterator[messages.StreamingInputCallRequest], context: Any
    ) -> messages.StreamingInputCallResponse:
        size = sum(len(request.payload.body) for request in request_iterator)
        return messages.StreamingInputCallResponse(aggregated_payload_size=size)

    def FullDuplexCall(
        self, request_iterator: Iterator[messages.StreamingOutputCallRequest], context: Any
    ) -> Iterator[messages.StreamingOutputCallResponse]:
        _echo_metadata(context)
        for request in request_iterator:
            _status(request, context)
            yield from _replies(request)

    def HalfDuplexCall(
        self, request_iterator: Iterator[messages.StreamingOutputCallRequest], context: Any
    ) -> Iterator[messages.StreamingOutputCallResponse]:
        for request in list(request_iterator):
            yield from _replies(request)


class Clock(clock_pb2_grpc.ClockServiceServicer):
    """The server's time."""

    def Now(self, request: empty_pb2.Empty, context: Any) -> timestamp_pb2.Timestamp:
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return now


def register(server: Any) -> None:
    """Both services, registered as their generated code says."""
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    clock_pb2_grpc.add_ClockServiceServicer_to_server(Clock(), server)
