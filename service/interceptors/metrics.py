"""Metrics: every call of every kind counted, timed and labelled as go-grpc-prometheus does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc

from ..metrics import UNKNOWN_METHOD, MethodMetrics, ServerMetrics, grpc_type
from ._outcome import Outcome, outcome
from ._wrap import PerMethodInterceptor, wrap_handler


class MetricsInterceptor(PerMethodInterceptor):
    """Counts started, handled (by code) and message totals, and observes handling time, per method.

    Methods outside ``known_methods`` ("/pkg.Service/Method") share one label set, so callers
    cannot create series by inventing method names.
    """

    def __init__(self, metrics: ServerMetrics, known_methods: Iterable[str]) -> None:
        super().__init__(known_methods, UNKNOWN_METHOD)
        self._metrics = metrics

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        series = self._metrics.for_method(method, grpc_type(handler))
        if handler.request_streaming or handler.response_streaming:

            async def received(message: Any, _context: grpc.aio.ServicerContext) -> Any:
                series.received.inc()
                return message

            async def sent(message: Any, _context: grpc.aio.ServicerContext) -> Any:
                series.sent.inc()
                return message

            return wrap_handler(handler, self._measure(series, unary=False), inbound=received, outbound=sent)
        return wrap_handler(handler, self._measure(series, unary=True))

    def _measure(
        self, series: MethodMetrics, *, unary: bool
    ) -> Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]:
        in_flight = self._metrics.in_flight

        @asynccontextmanager
        async def measure(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            series.started.inc()
            in_flight.inc()
            started, result = time.perf_counter(), Outcome()
            if unary:
                series.received.inc()
            try:
                async with outcome(context, result):
                    yield
            finally:
                series.seconds.observe(time.perf_counter() - started)
                series.handled(result.code).inc()
                if unary and result.code is grpc.StatusCode.OK:
                    series.sent.inc()
                in_flight.dec()

        return measure
