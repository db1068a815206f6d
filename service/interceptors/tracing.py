"""Tracing: a server span per call of every kind, joined to the caller's trace, current while the call runs.

opentelemetry-instrumentation-grpc's aio server interceptor iterates every streaming handler as an
async generator, which breaks handlers that stream with context.write (grpc's own health Watch);
this one wraps handlers through _wrap.wrap_handler, which keeps either style.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._outcome import Outcome, outcome
from ._wrap import PerMethodInterceptor, wrap_handler


class TracingInterceptor(PerMethodInterceptor):
    """Starts a SERVER span named "package.Service/Method" with the rpc.* attributes and the call's status."""

    def __init__(self, tracer: trace.Tracer, known_methods: Iterable[str]) -> None:
        super().__init__(known_methods)
        self._tracer = tracer

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, self._span(method))

    def _span(self, method: str) -> Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]:
        service, _, name = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        tracer = self._tracer

        @asynccontextmanager
        async def span(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            with tracer.start_as_current_span(
                f"{service}/{name}", context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
            ) as current:
                result = Outcome()
                try:
                    async with outcome(context, result):
                        yield
                finally:
                    current.set_attribute("rpc.grpc.status_code", result.code.value[0])
                    if result.code is not grpc.StatusCode.OK:
                        current.set_status(Status(StatusCode.ERROR, result.code.name))

        return span
