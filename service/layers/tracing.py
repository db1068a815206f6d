"""Tracing: a server span per call of every kind, joined to the caller's trace, current while the call runs.

Spans follow the gRPC semantic conventions of the opentelemetry-semantic-conventions release locked
(rpc.system.name, rpc.method, rpc.response.status_code, error.type, network.peer.*).
opentelemetry-instrumentation-grpc's aio server interceptor iterates every streaming handler as an
async generator, which breaks handlers that stream with context.write (grpc's own health Watch);
this layer runs inside the chain, which keeps either style.
"""

from __future__ import annotations

from urllib.parse import unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_METHOD,
    RPC_METHOD_ORIGINAL,
    RPC_RESPONSE_STATUS_CODE,
    RPC_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .hooks import Call, Hooks, Method

# The codes that are the server's fault: the gRPC conventions mark a server span ERROR for these
# only. A caller's mistake (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, ...) leaves it unset.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# What rpc.method is for a method the server does not have; the span is then named after the system.
OTHER = "_OTHER"


def peer_attributes(peer: str) -> dict[str, AttributeValue]:
    """network.peer.address and .port from grpc's peer string ("ipv4:10.0.0.1:5000", "ipv6:%5B::1%5D:5000")."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {NETWORK_PEER_ADDRESS: rest} if rest else {}
    host, _, port = unquote(rest).rpartition(":")
    return {NETWORK_PEER_ADDRESS: host.strip("[]"), NETWORK_PEER_PORT: int(port)}


class Tracing:
    """Starts a SERVER span named "package.Service/Method" with the call's attributes and status."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def hooks(self, method: Method) -> Hooks:
        """Span name and attributes fixed per method (methods the server does not have share one name)."""
        name = method.name.lstrip("/")
        attributes: dict[str, AttributeValue] = {RPC_SYSTEM_NAME: "grpc"}
        if method.known and method.declared:
            attributes[RPC_METHOD] = span_name = name
        else:
            attributes |= {RPC_METHOD: OTHER, RPC_METHOD_ORIGINAL: name}
            span_name = "grpc"
        tracer = self._tracer

        def start(call: Call) -> None:
            carrier = {k: v for k, v in call.metadata if isinstance(v, str)}
            span = tracer.start_span(
                span_name,
                context=propagate.extract(carrier),
                kind=SpanKind.SERVER,
                attributes=attributes | peer_attributes(call.peer()),
            )
            # Current while the call runs, so log lines and client calls made inside it join the trace.
            call.notes[self] = (span, otel_context.attach(trace.set_span_in_context(span)))

        def end(call: Call) -> None:
            span, token = call.notes.pop(self)
            code = call.code.name
            span.set_attribute(RPC_RESPONSE_STATUS_CODE, code)
            if call.code in SERVER_FAULTS:
                span.set_attribute(ERROR_TYPE, code)
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()
            otel_context.detach(token)

        return Hooks(enter=start, exit=end)
