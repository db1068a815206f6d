"""The /metrics endpoint, for one server or a supervisor's workers (no grpc imported here).

The supervisor serves its workers' metrics and must not import grpc: every worker it starts is
a fresh interpreter, and a supervisor without grpc state has none to hand on.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, PlatformCollector

from ..config.settings import Settings
from .bounded_http import BoundedHttpServer
from .ports import cannot_listen


def no_created_series() -> None:
    """Serve no *_created series: one per counter doubles the output for no dashboard's benefit.

    prometheus-client's switch is process-wide, so only the program's entry point turns it.
    """
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def serve_metrics(registry: CollectorRegistry, settings: Settings) -> BoundedHttpServer | None:
    """Serve ``registry`` on HELLO_METRICS_PORT on a background thread (None when "off").

    prometheus-client's app answers (its formats, gzip, ``name[]``) from a server whose connections
    are bounded in number and time (HELLO_METRICS__*). A port that cannot be bound is the start-up
    error that names the setting.
    """
    port = settings.metrics_port
    if port == "off":
        return None
    app = prometheus_client.make_wsgi_app(registry)
    bounds = settings.metrics
    try:
        return BoundedHttpServer(
            app, settings.host.strip("[]"), port, timeout=bounds.timeout_seconds, max_connections=bounds.max_connections
        )
    except OSError as exc:
        raise cannot_listen("metrics_port", settings.host, port, str(exc.strerror)) from None


def workers_registry(directory: str) -> CollectorRegistry:
    """A registry adding up the metrics that workers write to ``directory`` (their PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    # python_info is the same for every worker (the supervisor starts them with its own interpreter).
    # process_* and python_gc_* are per process, which multiprocess mode cannot add up
    # (prometheus-client's docs); the supervisor's own would pass for the workers', so none is served.
    PlatformCollector(registry=registry)
    return registry
