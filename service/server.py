"""The server factory: Settings in, an unstarted grpc.aio server with every service and interceptor out."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import hello
from .auth import bearer_authenticator
from .credentials import CERT_FILE, CLIENT_CA_FILE, ServerTls, load_server_tls, server_credentials
from .errors import ConfigError, StartupError
from .generated.rpc_package import helloworld_pb2_grpc
from .interceptors import AccessLogInterceptor, AuthInterceptor
from .settings import AuthSettings, Settings, env_name
from .tokens import TokenFileError, TokenStore

EXPIRY_WARNING = dt.timedelta(days=30)
# Health must answer probes and load balancers that hold no token.
PUBLIC_SERVICES = (health.SERVICE_NAME,)

log = structlog.get_logger("hello.server")


@dataclass(frozen=True)
class BuiltServer:
    """What build_server made: the unstarted server, the port it bound, and the health servicer to flip."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    tls: ServerTls | None


def _tokens(auth: AuthSettings) -> TokenStore:
    setting = env_name("auth", "tokens_file")
    if auth.tokens_file is None:
        raise ConfigError(setting, "is required: a file of accepted bearer tokens (make certs writes certs/token)")
    try:
        return TokenStore.from_file(auth.tokens_file)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {auth.tokens_file}: {exc.strerror}") from None
    except (TokenFileError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"{auth.tokens_file}: {exc}") from None


def _tls(settings: Settings) -> ServerTls | None:
    if settings.tls.enabled:
        tls = load_server_tls(settings.tls)
        if tls.not_after - dt.datetime.now(dt.UTC) < EXPIRY_WARNING:
            log.warning("certificate expires soon", setting=CERT_FILE, not_after=tls.not_after.isoformat())
        return tls
    if settings.tls.client_ca_file is not None:
        raise ConfigError(CLIENT_CA_FILE, f"mutual TLS needs {CERT_FILE} and its key too")
    if not settings.insecure:
        raise ConfigError(
            CERT_FILE,
            "TLS is required: set it and HELLO_TLS__KEY_FILE (or HELLO_INSECURE=true for plaintext experiments)",
        )
    return None


def _bind_problem(host: str, port: int) -> str:
    """grpc only says it could not bind; ask the OS why, with a socket of our own."""
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "grpc could not bind it"


async def build_server(
    settings: Settings, *, servicer: helloworld_pb2_grpc.HelloWorldServiceServicer | None = None
) -> BuiltServer:
    """Check the settings and build the server; raises ConfigError or StartupError with one clear line.

    ``servicer`` replaces the Hello servicer (a team that copies this service plugs its own in).
    """
    tls = _tls(settings)
    tokens = _tokens(settings.auth)
    server = grpc.aio.server(
        # The access log is outermost, so it also records calls that auth refuses.
        interceptors=[
            AccessLogInterceptor(),
            AuthInterceptor(bearer_authenticator(tokens), public_services=PUBLIC_SERVICES),
        ],
        # grpc turns SO_REUSEPORT on, which lets a second server silently share a busy port.
        options=[("grpc.so_reuseport", 0)],
    )
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(servicer or hello.HelloServicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", hello.SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((hello.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    address = f"{settings.host}:{settings.port}"
    try:
        if tls is None:
            log.warning("serving without TLS: HELLO_INSECURE=true is for local experiments only")
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError:
        raise StartupError(
            f"{env_name('port')}: cannot listen on {address}: {_bind_problem(settings.host, settings.port)}"
        ) from None
    return BuiltServer(server=server, port=port, health=health_servicer, tls=tls)
