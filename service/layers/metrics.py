"""Metrics: every call of every kind counted, timed and labelled as go-grpc-prometheus does."""

from __future__ import annotations

import time

from ..observability.metrics import ServerMetrics, grpc_type
from .hooks import OK, Call, Hooks, Method


class Metrics:
    """Counts started, handled (by code) and message totals, and observes handling time, per method.

    Methods nobody registered share one label set (the chain names them all alike), so callers
    cannot create series by inventing method names.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def hooks(self, method: Method) -> Hooks:
        """Counts kept once per method; streams count each message as it passes."""
        metrics = self._metrics
        counts = metrics.for_method(method.label, grpc_type(method.handler))
        observe, handled = counts.observe, counts.handled
        unary = not method.streaming

        def start(_call: Call) -> None:
            counts.started += 1
            metrics.in_flight += 1
            if unary:
                counts.received += 1

        def finish(call: Call) -> None:
            observe(time.perf_counter() - call.started)
            code = call.code
            if code is OK:
                counts.ok += 1
                if unary:
                    counts.sent += 1
            else:
                handled[code] = handled.get(code, 0) + 1
            metrics.in_flight -= 1

        if unary:
            return Hooks(enter=start, exit=finish)

        def received(_call: Call) -> None:
            counts.received += 1

        def sent(_call: Call) -> None:
            counts.sent += 1

        return Hooks(enter=start, exit=finish, received=received, sent=sent)
