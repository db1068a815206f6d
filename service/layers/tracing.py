"""Tracing: a server span per call of every kind, joined to the caller's trace, current while the call runs.

opentelemetry-instrumentation-grpc's aio server interceptor iterates every streaming handler as an
async generator, which breaks handlers that stream with context.write (grpc's own health Watch);
this layer runs inside the chain, which keeps either style.
"""

from __future__ import annotations

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .hooks import Call, Hooks, Method


class Tracing:
    """Starts a SERVER span named "package.Service/Method" with the rpc.* attributes and the call's status."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def hooks(self, method: Method) -> Hooks:
        """Span name and attributes fixed per method (unknown methods share one name)."""
        service, _, name = method.label.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        tracer, span_name = self._tracer, f"{service}/{name}"

        def start(call: Call) -> None:
            carrier = {k: v for k, v in call.metadata if isinstance(v, str)}
            span = tracer.start_span(
                span_name, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
            )
            # Current while the call runs, so log lines and client calls made inside it join the trace.
            call.notes[self] = (span, otel_context.attach(trace.set_span_in_context(span)))

        def end(call: Call) -> None:
            span, token = call.notes.pop(self)
            span.set_attribute("rpc.grpc.status_code", call.code.value[0])
            if call.code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, call.code.name))
            span.end()
            otel_context.detach(token)

        return Hooks(enter=start, exit=end)
