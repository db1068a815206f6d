"""Prometheus metrics under go-grpc-prometheus's names and labels, so standard dashboards and alerts work."""

from __future__ import annotations

import bisect
import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from .borrowed import histogram_values

if TYPE_CHECKING:
    from ..registry import Registry

# grpc_code as Go spells the codes (codes.Code.String()).
GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# How often the lifecycle hands the counts to prometheus-client besides at every scrape (ServerMetrics.push).
PUSH_SECONDS = 0.5


# grpc_type by (requests stream, responses stream), as go-grpc-prometheus names the kinds.
_KINDS = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    """unary, client_stream, server_stream or bidi_stream, as go-grpc-prometheus names them."""
    return _KINDS[(bool(handler.request_streaming), bool(handler.response_streaming))]


def _method_kind(registry: Registry, method: str) -> str | None:
    """The grpc_type of ``method`` ("pkg.Service/Method"): from its handler, else its descriptor, else None."""
    handler = registry.handlers.get(f"/{method}")
    if handler is not None:
        return grpc_type(handler)
    service, _, name = method.partition("/")
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    except KeyError:
        return None
    return _KINDS[(descriptor.client_streaming, descriptor.server_streaming)]


def _add_since_last_push(totals: Sequence[float], series: Sequence[Any], pushed: list[float]) -> None:
    """Add to each prometheus ``series`` how much its total grew since ``pushed``, then note the totals."""
    for index, total in enumerate(totals):
        if total != pushed[index]:
            series[index].inc(total - pushed[index])
            pushed[index] = total


class MethodMetrics:
    """One method's counts as plain numbers, bumped on the serving thread, handed to its series by push().

    A prometheus-client update takes a lock and a few Python calls; the seven a call made were about
    7 % of the server's instructions per call (callgrind, make bench), and a histogram observation
    walks its buckets in Python. Only the serving thread adds to these totals and push() only reads
    them, so no update is lost and none needs a lock.
    """

    def __init__(self, family: _Families, labels: tuple[str, str, str]) -> None:
        self.started = self.received = self.sent = 0
        # OK apart from the other codes: a StatusCode is an Enum, whose hash is a Python call.
        self.ok = 0
        self.handled: dict[grpc.StatusCode, int] = {}
        self._series = (family.started.labels(*labels), family.received.labels(*labels), family.sent.labels(*labels))
        # Every code's series exists from the start, at 0, as go-grpc-prometheus's InitializeMetrics
        # makes them: rate() needs a sample before the first increase, or a pod's first errors are lost.
        self._handled_series = {code: family.handled.labels(*labels, name) for code, name in GO_CODE_NAMES.items()}
        self._pushed: list[float] = [0, 0, 0]
        self._handled_pushed: dict[grpc.StatusCode, int] = {}
        # Handling seconds: a count per bucket (the last one is +Inf) and their sum.
        self._bounds, self._bucket_values, self._sum_value = histogram_values(family.seconds.labels(*labels))
        self._buckets = [0] * len(self._bounds)
        self._seconds = 0.0
        self._buckets_pushed: list[float] = [0] * len(self._bounds)
        self._seconds_pushed = [0.0]  # a list of one, as _add_since_last_push takes

    def observe(self, seconds: float) -> None:
        """Count one call that took ``seconds`` in the handling-time histogram."""
        self._buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self._seconds += seconds

    def push(self) -> None:
        """Add what was counted since the last push to the prometheus series (callers hold ServerMetrics' lock)."""
        _add_since_last_push((self.started, self.received, self.sent), self._series, self._pushed)
        handled = dict(self.handled)  # a snapshot: the serving thread may add a code
        handled[grpc.StatusCode.OK] = self.ok
        for code, total in handled.items():
            pushed = self._handled_pushed.get(code, 0)
            if total != pushed:
                self._handled_series[code].inc(total - pushed)
                self._handled_pushed[code] = total
        self._push_histogram()

    def _push_histogram(self) -> None:
        # Into the histogram's own values (service/observability/borrowed.py): in memory or in the workers'
        # multiprocess files alike. test_metrics holds these series to the calls made.
        _add_since_last_push(self._buckets, self._bucket_values, self._buckets_pushed)
        _add_since_last_push((self._seconds,), (self._sum_value,), self._seconds_pushed)


@dataclass(frozen=True)
class _Families:
    started: Counter
    received: Counter
    sent: Counter
    handled: Counter
    seconds: Histogram


class _PushFirst:
    """Registered first in the registry, so every collection (a scrape) starts with the latest counts."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._metrics.push()
        return []


class ServerMetrics:
    """The server's metrics in a registry of its own (so several servers can live in one process)."""

    def __init__(self, version: str) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        registry.register(_PushFirst(self))
        # The standard process_* and python_* series every Python exporter has (prometheus-client's
        # default registry has them; a registry of our own gets them only when asked).
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._methods: dict[tuple[str, str], MethodMetrics] = {}
        self._push_lock = threading.Lock()
        # Calls being handled now, as a plain integer the serving thread keeps (see MethodMetrics).
        self.in_flight = 0
        self._started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", METHOD_LABELS, registry=registry
        )
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            (*METHOD_LABELS, "grpc_code"),
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Response latency (seconds) of gRPC that had been application-level handled by the server.",
            METHOD_LABELS,
            registry=registry,
        )
        self._received = Counter(
            "grpc_server_msg_received_total",
            "RPC stream messages received on the server.",
            METHOD_LABELS,
            registry=registry,
        )
        self._sent = Counter(
            "grpc_server_msg_sent_total", "gRPC stream messages sent by the server.", METHOD_LABELS, registry=registry
        )
        self._families = _Families(self._started, self._received, self._sent, self._handled, self._seconds)
        # multiprocess_mode says how workers' values add up (prometheus-client's multiprocess mode).
        self._in_flight = Gauge(
            "hello_server_calls_in_flight", "Calls being handled now.", registry=registry, multiprocess_mode="livesum"
        )
        self._auth_failures = Counter(
            "hello_auth_failures_total", "Calls refused by auth, by reason.", ("reason",), registry=registry
        )
        self._limited = Counter(
            "hello_rate_limited_total",
            "Calls refused by a limit: rate, concurrency, watch (health Watch streams).",
            ("limit",),
            registry=registry,
        )
        self.certificate_expiry = Gauge(
            "hello_server_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate expires (seconds since the epoch).",
            registry=registry,
            multiprocess_mode="min",
        )
        build_info = Gauge(
            "hello_build_info",
            "Version of the service and of grpcio.",
            ("version", "grpcio_version"),
            registry=registry,
            # One series for all workers (they run the same build), not one per worker's pid.
            multiprocess_mode="max",
        )
        build_info.labels(version, grpc.__version__).set(1)

    def for_method(self, method: str, kind: str) -> MethodMetrics:
        """The counts of ``method`` ("/pkg.Service/Method") of RPC kind ``kind``: one set per method and kind."""
        key = (method, kind)
        counts = self._methods.get(key)
        if counts is None:
            service, _, name = method.lstrip("/").partition("/")
            with self._push_lock:
                counts = self._methods[key] = MethodMetrics(self._families, (kind, service, name))
        return counts

    def precreate(self, registry: Registry) -> None:
        """Create the series of every method ``registry`` serves, every code included, at 0, before any call.

        As go-grpc-prometheus's InitializeMetrics does: an error ratio's rate() then sees a pod's
        first errors, which a series born at its first increase hides.
        """
        for method in registry.methods():
            kind = _method_kind(registry, method)
            if kind is not None:
                self.for_method(f"/{method}", kind)

    def push(self) -> None:
        """Hand every method's counts and the calls in flight to prometheus-client.

        A scrape of this process's registry pushes first; the lifecycle also pushes every
        PUSH_SECONDS (for a worker, whose supervisor reads the workers' files, and for scrapes
        filtered by name) and when it stops.
        """
        with self._push_lock:
            for counts in list(self._methods.values()):
                counts.push()
            self._in_flight.set(self.in_flight)

    def auth_failure(self, reason: str) -> None:
        """Count a call auth refused, by reason."""
        self._auth_failures.labels(reason).inc()

    def limited(self, limit: str) -> None:
        """Count a call a limit refused: rate, concurrency or watch."""
        self._limited.labels(limit).inc()

    def certificate_expires(self, not_after: dt.datetime) -> None:
        """Record when the certificate in use expires."""
        self.certificate_expiry.set(not_after.timestamp())
