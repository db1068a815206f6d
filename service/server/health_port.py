"""The plaintext health-only listener: for the kubelet's grpc probes, which cannot do TLS or send tokens."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from ..config.settings import Settings
from ..layers import Chain, Layer
from ..registry import Registry
from .options import health_port_options
from .ports import bind


def health_server(
    settings: Settings, servicer: health.aio.HealthServicer, layers: list[Layer], shared_port: bool
) -> tuple[grpc.aio.Server, int] | None:
    """A server for ``servicer`` alone (shared with the main server, and so its statuses), or None when off.

    ``layers`` are the port's own (service.server.stack.health_port_layers).
    """
    if settings.health_port == "off":
        return None
    server = grpc.aio.server(options=health_port_options(settings, shared_port))
    registry = Registry(settings)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, registry.as_server)
    Chain(layers).serve(server, registry)
    return server, bind(server, "health_port", settings.host, settings.health_port, None)
