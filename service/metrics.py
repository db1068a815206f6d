"""Prometheus metrics under go-grpc-prometheus's names and labels, so standard dashboards and alerts work."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

# Exposing a *_created series per counter doubles the output for no dashboard's benefit.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    """unary, client_stream, server_stream or bidi_stream, as go-grpc-prometheus names them."""
    return {
        (False, False): "unary",
        (True, False): "client_stream",
        (False, True): "server_stream",
        (True, True): "bidi_stream",
    }[(handler.request_streaming, handler.response_streaming)]


@dataclass
class MethodMetrics:
    """The label-bound series of one method, looked up once per method rather than once per call."""

    started: Counter
    received: Counter
    sent: Counter
    seconds: Histogram
    _handled: Counter
    _labels: tuple[str, str, str]
    _by_code: dict[grpc.StatusCode, Counter] = field(default_factory=dict)

    def handled(self, code: grpc.StatusCode) -> Counter:
        """The grpc_server_handled_total series of this method for ``code``."""
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = self._handled.labels(*self._labels, GO_CODE_NAMES[code])
        return counter


class ServerMetrics:
    """The server's metrics in a registry of its own (so several servers can live in one process)."""

    def __init__(self, version: str) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
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
        # multiprocess_mode says how workers' values add up (prometheus-client's multiprocess mode).
        self.in_flight = Gauge(
            "hello_server_calls_in_flight", "Calls being handled now.", registry=registry, multiprocess_mode="livesum"
        )
        self._auth_failures = Counter(
            "hello_auth_failures_total", "Calls refused by auth, by reason.", ("reason",), registry=registry
        )
        self._limited = Counter(
            "hello_rate_limited_total", "Calls refused by a limit: rate, concurrency.", ("limit",), registry=registry
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
        )
        build_info.labels(version, grpc.__version__).set(1)

    def for_method(self, method: str, kind: str) -> MethodMetrics:
        """The series of ``method`` ("/pkg.Service/Method") of RPC kind ``kind``, bound once."""
        service, _, name = method.lstrip("/").partition("/")
        labels = (kind, service, name)
        return MethodMetrics(
            started=self._started.labels(*labels),
            received=self._received.labels(*labels),
            sent=self._sent.labels(*labels),
            seconds=self._seconds.labels(*labels),
            _handled=self._handled,
            _labels=labels,
        )

    def auth_failure(self, reason: str) -> None:
        """Count a call auth refused, by reason."""
        self._auth_failures.labels(reason).inc()

    def limited(self, limit: str) -> None:
        """Count a call a limit refused: rate or concurrency."""
        self._limited.labels(limit).inc()

    def certificate_expires(self, not_after: dt.datetime) -> None:
        """Record when the certificate in use expires."""
        self.certificate_expiry.set(not_after.timestamp())
