"""The edge's configuration as files: Envoy's bootstrap, the descriptor set and the certificates' SDS files.

``hello-edge config --out DIR`` writes them (Kubernetes: an init container from the server's own
image, so the edge transcodes exactly what that image serves); ``hello-edge run`` writes them into a
temporary folder before it starts Envoy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..config.settings import Settings, env_name
from ..errors import ConfigError
from ..registry import Registry
from .descriptors import descriptor_set, service_descriptors
from .envoy_config import Served, Upstream, bootstrap, secrets
from .json_schema import guard

log = structlog.get_logger("hello.edge")
BOOTSTRAP = "envoy.json"
DESCRIPTORS = "descriptors.pb"
SECRETS = "sds"
# Served by the stack, never by the edge (the registry holds only the app's services; these are refused anyway).
NOT_ON_THE_EDGE = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
WILDCARDS = ("", "::", "0.0.0.0")  # noqa: S104 - read, not bound


@dataclass(frozen=True)
class EdgeConfig:
    """What was written: the bootstrap's path, and what the edge serves."""

    bootstrap: Path
    services: tuple[str, ...]
    transcoded: tuple[str, ...]
    upstream: Upstream


def upstream(settings: Settings) -> Upstream:
    """The server behind the edge: HELLO_EDGE__UPSTREAM, else the server's own host and port."""
    edge = settings.edge
    if edge.upstream is not None:
        host, _, port = edge.upstream.rpartition(":")
    else:
        host, port = settings.host, str(settings.port)
    host = host.strip("[]")
    host = "localhost" if host in WILDCARDS else host
    if edge.upstream_ca_file is None:
        if not settings.insecure:
            raise ConfigError(
                env_name("edge", "upstream_ca_file"),
                "required: the CA that signed the server's certificate, which the edge verifies (e.g. certs/ca.pem)",
            )
        return Upstream(host, int(port), None)
    return Upstream(host, int(port), edge.upstream_server_name or host)


def _pairs(settings: Settings) -> None:
    edge = settings.edge
    for cert, key in (("cert_file", "key_file"), ("upstream_cert_file", "upstream_key_file")):
        if (getattr(edge, cert) is None) != (getattr(edge, key) is None):
            given, missing = (cert, key) if getattr(edge, key) is None else (key, cert)
            raise ConfigError(env_name("edge", missing), f"required with {env_name('edge', given)}")


def write(settings: Settings, registry: Registry, out: Path) -> EdgeConfig:
    """Write the edge's files for what ``registry`` holds into ``out``; a ConfigError names what is missing."""
    _pairs(settings)
    server = upstream(settings)
    services = tuple(s for s in registry.services if s not in NOT_ON_THE_EDGE)
    found, without = service_descriptors(services)
    for name in without:
        log.warning("no descriptor: JSON cannot reach this service, gRPC-Web can", service=name)
    out.mkdir(parents=True, exist_ok=True)
    (out / DESCRIPTORS).write_bytes(descriptor_set(found).SerializeToString())
    served = Served(
        services=services,
        transcoded=tuple(service.full_name for service in found),
        descriptor_file=(out / DESCRIPTORS).absolute(),
        guard=guard(found),
    )
    secret_dir = (out / SECRETS).absolute()
    secret_dir.mkdir(exist_ok=True)
    for name, content in secrets(settings.edge, server).items():
        (secret_dir / f"{name}.json").write_text(json.dumps(content, indent=2))
    config = bootstrap(served, settings.edge, server, secret_dir)
    (out / BOOTSTRAP).write_text(json.dumps(config, indent=2))
    return EdgeConfig(out / BOOTSTRAP, served.services, served.transcoded, server)
