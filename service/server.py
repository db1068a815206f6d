"""The server factory: Settings and the app's registry in, an unstarted grpc.aio server with every layer out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import __version__
from .app import APP
from .credentials import ServerTls
from .errors import ConfigError
from .health_port import health_server
from .layers import Chain
from .layers.stack import server_layers
from .layers.threads import HandlerThreads
from .ports import bind
from .reflection import SERVICE_NAMES as REFLECTION_SERVICES
from .reflection import register_reflection
from .registry import DuplicateService, Registry
from .reloading import ServerCertificates
from .security import server_tls
from .server_metrics import ServerMetrics
from .server_options import server_options
from .settings import Settings, env_name

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .generated.rpc_package import helloworld_pb2_grpc

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
    # The layers about every call; the runner tells it when the calls in flight are being cancelled.
    chain: Chain
    # The plaintext health-only listener (None when HELLO_HEALTH_PORT=off).
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    # Where spans go when tracing is on; the runner flushes it at exit.
    tracer: TracerProvider | None = None

    @property
    def servers(self) -> tuple[grpc.aio.Server, ...]:
        """Every server to start and stop: the main one and, when on, the health-only one."""
        return (self.server,) if self.health_server is None else (self.server, self.health_server)


def _stack_services(registry: Registry, health_servicer: health.aio.HealthServicer) -> None:
    """Health and reflection, registered after the app's services (and so covering them)."""
    app_services = registry.services
    try:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry.as_server)
        register_reflection(registry, (*app_services, health.SERVICE_NAME))
    except DuplicateService as exc:
        raise ConfigError(APP, f"{exc.service} is served by the stack itself: do not register it") from None


def _tracer_provider(settings: Settings) -> TracerProvider:
    """The OTLP tracer provider; a start-up error naming the extra when the tracing packages are missing."""
    try:
        # Imported only when tracing is on: the SDK and the OTLP exporter weigh ~15 MiB of memory.
        from .tracer_provider import tracer_provider
    except ImportError as exc:
        raise ConfigError(
            env_name("tracing", "enabled"),
            f"tracing needs the [tracing] extra (pip install 'hello-grpc-service[tracing]'): {exc}",
        ) from None
    return tracer_provider(settings.tracing)


def hello_registry(
    settings: Settings, servicer: helloworld_pb2_grpc.HelloWorldServiceServicer | None = None
) -> Registry:
    """The default app's registry: the Hello servicer (or ``servicer`` in its place)."""
    # Imported here: a server of another app loads none of Hello's generated code, whose
    # descriptors would clash with a team's own copy of the seed's proto (rpc_package.HelloRequest).
    from . import hello
    from .generated.rpc_package import helloworld_pb2_grpc

    registry = Registry(settings)
    if servicer is None:
        hello.register(registry)
    else:
        helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(servicer, registry.as_server)
    return registry


async def build_server(
    settings: Settings,
    registry: Registry | None = None,
    *,
    servicer: helloworld_pb2_grpc.HelloWorldServiceServicer | None = None,
    tracer: TracerProvider | None = None,
    shared_port: bool = False,
) -> BuiltServer:
    """Check the settings and build the server for what ``registry`` holds; raises a one-line StartupError.

    ``registry`` is filled by the app (service.app.started); without one, the Hello app is served
    (or ``servicer`` as Hello's, the spelling of earlier releases). ``shared_port`` lets the
    workers of one supervisor listen on the same ports (SO_REUSEPORT). With HELLO_TRACING__ENABLED,
    spans go to ``tracer``, else to an OTLP exporter built from the settings.
    """
    registry = registry if registry is not None else hello_registry(settings, servicer)
    tls = server_tls(settings)
    metrics = ServerMetrics(__version__)
    if tls is not None:
        metrics.certificate_expires(tls.not_after)
    if settings.tracing.enabled and tracer is None:
        tracer = _tracer_provider(settings)
    tracer = tracer if settings.tracing.enabled else None

    app_services = registry.services
    health_servicer = health.aio.HealthServicer()
    _stack_services(registry, health_servicer)
    metrics.precreate(registry)
    # Health answers probes and load balancers that hold no credentials.
    public = (health.SERVICE_NAME, *(REFLECTION_SERVICES if settings.auth.public_reflection else ()))
    layers = server_layers(
        settings, tls, metrics, tracer, methods=registry.methods(), public_services=public, own=registry.layers
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
    health_server_, health_port = health_server(settings, health_servicer, shared_port) or (None, None)
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
