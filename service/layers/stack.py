"""The layers every served call passes through, in their order, built from the settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grpc_health.v1 import health

from ..buckets import Buckets
from ..credentials import ServerTls
from ..identity import PROVEN_BY
from ..security import authenticator, policy
from ..server_metrics import ServerMetrics
from ..settings import Settings
from .access_log import AccessLog
from .auth import Auth
from .hooks import Layer
from .limits import ConcurrencyLimit, RateLimit
from .load_report import LoadReport
from .metrics import Metrics
from .request_id import RequestId
from .wire import Wire

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
    own: Sequence[Layer] = (),
) -> list[Layer]:
    """Outermost first; ``methods`` are all the server serves (the policy names only those),
    ``public_services`` those callers reach without credentials, ``own`` the app's layers (add_layer)."""
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
    # the concurrency cap refuses before any work; the rate limit needs the principal auth names;
    # the app's own layers come next, where the caller is known and before any body is decoded;
    # the wire layer is innermost so that a refused call's body is never decoded.
    tracing: list[Layer] = []
    if tracer is not None:
        from .tracing import Tracing  # the [tracing] extra: imported only when tracing is on

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
        auth,
        *rate,
        *own,
        Wire(settings.max_message_bytes),
    ]


def health_port_layers() -> list[Layer]:
    """The plaintext health port's: a request id and the (quiet) access log, nothing that needs credentials."""
    return [RequestId(), AccessLog(quiet_services=(health.SERVICE_NAME,))]
