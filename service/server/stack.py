"""The layers every served call passes through, in their order, built from the settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grpc_health.v1 import health

from ..config.settings import Settings
from ..identity import PROVEN_BY
from ..layers.access_log import AccessLog
from ..layers.auth import Auth
from ..layers.buckets import Buckets
from ..layers.hooks import Layer
from ..layers.limits import ConcurrencyLimit, RateLimit
from ..layers.load_report import LoadReport
from ..layers.metrics import Metrics
from ..layers.request_id import RequestId
from ..layers.watches import OpenWatches, WatchLimit
from ..layers.wire import Wire
from ..observability.metrics import ServerMetrics
from ..security.credentials import ServerTls
from ..security.guard import authenticator, policy

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def server_layers(
    settings: Settings,
    tls: ServerTls | None,
    metrics: ServerMetrics,
    tracer: TracerProvider | None,
    *,
    methods: Sequence[str],
    public_services: Sequence[str],
    watches: OpenWatches,
    own: Sequence[Layer] = (),
) -> list[Layer]:
    """Outermost first; ``methods`` are all the server serves (the policy names only those),
    ``public_services`` those callers reach without credentials, ``watches`` the health Watch
    streams open on every port, ``own`` the app's layers (add_layer)."""
    rules = policy(settings.auth, methods)
    allows = rules.allows if rules else (lambda _principal, _method: True)
    limits = settings.rate_limit
    failures = Buckets(limits.auth_failures_per_second, limits.auth_failure_burst)
    auth = Auth(
        authenticator(settings.auth, tls),
        public_services,
        allows,
        on_refusal=metrics.auth_failure,
        failures=failures,
        proven_by=PROVEN_BY[settings.auth.mode],
    )
    # Outermost first. The span (when tracing) covers everything, so log lines carry its trace id;
    # each call gets its request id before anything logs; the access log and metrics see every
    # outcome, including refusals (the chain turns an exception from any layer into INTERNAL);
    # the concurrency cap (and health's own, on Watch) refuses before any work; the rate limit
    # needs the principal auth names; the app's own layers come next, where the caller is known
    # and before any body is decoded; the wire layer is innermost so that a refused call's body
    # is never decoded.
    tracing: list[Layer] = []
    if tracer is not None:
        from ..layers.tracing import Tracing  # the [tracing] extra: imported only when tracing is on

        tracing = [Tracing(tracer.get_tracer("hello-grpc-service"))]
    rate: list[Layer] = []
    if limits.per_second:
        burst = limits.burst or max(1, int(limits.per_second))
        rate = [RateLimit(limits.per_second, burst, on_limited=metrics.limited)]
    # Each call's load report is added as it ends, to whatever trailers the call has by then.
    load: list[Layer] = [LoadReport(settings.load_report.sample_seconds)] if settings.load_report.enabled else []
    return [
        *tracing,
        *load,
        RequestId(),
        AccessLog(quiet_services=(health.SERVICE_NAME,)),
        Metrics(metrics),
        ConcurrencyLimit(limits.max_concurrent_calls, (health.SERVICE_NAME,), on_limited=metrics.limited),
        _watch_limit(settings, watches, metrics),
        auth,
        *rate,
        *own,
        Wire(settings.max_message_bytes),
    ]


def _watch_limit(settings: Settings, watches: OpenWatches, metrics: ServerMetrics) -> WatchLimit:
    return WatchLimit(watches, settings.health.max_watch_streams_per_connection, on_limited=metrics.limited)


def health_port_layers(settings: Settings, watches: OpenWatches, metrics: ServerMetrics) -> list[Layer]:
    """The plaintext health port's: a request id, the (quiet) access log and the Watch limit; no credentials."""
    return [RequestId(), AccessLog(quiet_services=(health.SERVICE_NAME,)), _watch_limit(settings, watches, metrics)]
