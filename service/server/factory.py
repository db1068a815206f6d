"""The server factory: Settings and the app's registry in, an unstarted grpc.aio server with every layer out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import __version__
from ..config.settings import Settings, env_name
from ..errors import ConfigError
from ..layers import Chain
from ..layers.threads import HandlerThreads
from ..layers.watches import OpenWatches
from ..observability.metrics import ServerMetrics
from ..registry import DuplicateService, Registry
from ..security.credentials import ServerTls
from ..security.guard import server_tls
from ..security.reloading import ServerCertificates
from .app import APP
from .health_port import health_server
from .health_service import Health
from .options import server_options
from .ports import bind
from .reflection import SERVICE_NAMES as REFLECTION_SERVICES
from .reflection import register_reflection
from .stack import health_port_layers, server_layers

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


log = structlog.get_logger("hello.server")


@dataclass(frozen=True)
class BuiltServer:
    """What build_server made: the unstarted servers, the ports they bound, and the health servicer to flip."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    tls: ServerTls | None
    metrics: ServerMetrics
    # What is served: the app's services, then health and reflection.
    registry: Registry
    # The layers about every call; the lifecycle tells it when the calls in flight are being cancelled.
    chain: Chain
    # The plaintext health-only listener (None when HELLO_HEALTH_PORT=off).
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    # Where spans go when tracing is on; the lifecycle flushes it at exit.
    tracer: TracerProvider | None = None

    @property
    def servers(self) -> tuple[grpc.aio.Server, ...]:
        """Every server to start and stop: the main one and, when on, the health-only one."""
        return (self.server,) if self.health_server is None else (self.server, self.health_server)


def _stack_services(registry: Registry, health_servicer: health.aio.HealthServicer, max_name_length: int) -> None:
    """Health and reflection, registered after the app's services (and so covering them)."""
    app_services = registry.services
    for service in app_services:
        if len(service) > max_name_length:
            # Health refuses to look up a longer name, so this service's health could not be asked.
            setting = env_name("health", "max_service_name_length")
            raise ConfigError(
                setting, f"{max_name_length} is shorter than {service} ({len(service)}), which {APP} serves"
            )
    try:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry.as_server)
        register_reflection(registry, (*app_services, health.SERVICE_NAME))
    except DuplicateService as exc:
        raise ConfigError(APP, f"{exc.service} is served by the stack itself: do not register it") from None


def _tracer_provider(settings: Settings) -> TracerProvider:
    """The OTLP tracer provider; a start-up error naming the extra when the tracing packages are missing."""
    try:
        # Imported only when tracing is on: the SDK and the OTLP exporter weigh ~15 MiB of memory.
        from ..observability.tracing import tracer_provider
    except ImportError as exc:
        raise ConfigError(
            env_name("tracing", "enabled"),
            f"tracing needs the [tracing] extra (pip install 'hello-grpc-service[tracing]'): {exc}",
        ) from None
    return tracer_provider(settings.tracing)


async def build_server(
    settings: Settings,
    registry: Registry,
    *,
    tracer: TracerProvider | None = None,
    shared_port: bool = False,
) -> BuiltServer:
    """Check the settings and build the server for what ``registry`` holds; raises a one-line StartupError.

    ``registry`` is filled by the app (service.server.app.started). ``shared_port`` lets the
    workers of one supervisor listen on the same ports (SO_REUSEPORT). With HELLO_TRACING__ENABLED,
    spans go to ``tracer``, else to an OTLP exporter built from the settings.
    """
    tls = server_tls(settings)
    metrics = ServerMetrics(__version__)
    if tls is not None:
        metrics.certificate_expires(tls.not_after)
    if settings.tracing.enabled and tracer is None:
        tracer = _tracer_provider(settings)
    tracer = tracer if settings.tracing.enabled else None

    app_services = registry.services
    health_servicer = Health(settings.health.max_service_name_length)
    _stack_services(registry, health_servicer, settings.health.max_service_name_length)
    metrics.precreate(registry)
    # Health answers probes and load balancers that hold no credentials.
    public = (health.SERVICE_NAME, *(REFLECTION_SERVICES if settings.auth.public_reflection else ()))
    # Health's Watch streams are capped on the whole server: both ports count against one limit.
    watches = OpenWatches(settings.health.max_watch_streams)
    layers = server_layers(
        settings,
        tls,
        metrics,
        tracer,
        methods=registry.methods(),
        public_services=public,
        watches=watches,
        own=registry.layers,
    )
    # No grpc interceptors: the chain wraps each handler once, here, as it is registered.
    server = grpc.aio.server(options=server_options(settings, shared_port))
    chain = Chain(layers, HandlerThreads(settings.handler_threads))
    chain.serve(server, registry)
    for service in ("", *app_services):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    credentials = None
    if tls is None:
        log.warning("serving without TLS: HELLO_INSECURE=true is for local experiments only")
    else:
        # Rotated certificate files reach new connections without a restart.
        certificates = ServerCertificates(
            settings.tls,
            tls,
            settings.tls.reload_seconds,
            log,
            on_reload=lambda t: metrics.certificate_expires(t.not_after),
        )
        credentials = certificates.credentials()
    port = bind(server, "port", settings.host, settings.port, credentials)
    health_layers = health_port_layers(settings, watches, metrics)
    health_server_, health_port = health_server(settings, health_servicer, health_layers, shared_port) or (None, None)
    return BuiltServer(
        server=server,
        port=port,
        health=health_servicer,
        tls=tls,
        metrics=metrics,
        registry=registry,
        chain=chain,
        health_server=health_server_,
        health_port=health_port,
        tracer=tracer,
    )
