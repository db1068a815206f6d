"""Metrics: every call of every kind counted, timed and labelled as go-grpc-prometheus does."""

from __future__ import annotations

import time

import grpc

from ..metrics import ServerMetrics, grpc_type
from ._layer import Call, Hooks, Method


class Metrics:
    """Counts started, handled (by code) and message totals, and observes handling time, per method.

    Methods nobody registered share one label set (the chain names them all alike), so callers
    cannot create series by inventing method names.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def hooks(self, method: Method) -> Hooks:
        """Series bound once per method; streams count each message as it passes."""
        series = self._metrics.for_method(method.label, grpc_type(method.handler))
        in_flight = self._metrics.in_flight
        unary = not method.streaming

        def start(_call: Call) -> None:
            series.started.inc()
            in_flight.inc()
            if unary:
                series.received.inc()

        def finish(call: Call) -> None:
            series.seconds.observe(time.perf_counter() - call.started)
            series.handled(call.code).inc()
            if unary and call.code is grpc.StatusCode.OK:
                series.sent.inc()
            in_flight.dec()

        if unary:
            return Hooks(enter=start, exit=finish)
        received, sent = series.received, series.sent
        return Hooks(enter=start, exit=finish, received=lambda _call: received.inc(), sent=lambda _call: sent.inc())
