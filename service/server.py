"""The server factory: Settings in, an unstarted grpc.aio server with every service and layer out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import structlog
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from . import __version__, hello
from .auth import Authenticate, all_of, bearer_authenticator, mtls_authenticator
from .credentials import CERT_FILE, CLIENT_CA_FILE, ServerTls, load_server_tls
from .errors import ConfigError
from .generated.rpc_package import helloworld_pb2, helloworld_pb2_grpc
from .interceptors import (
    AccessLog,
    Auth,
    Chain,
    ConcurrencyLimit,
    Layer,
    Metrics,
    RateLimit,
    RequestId,
    Tracing,
    Wire,
)
from .limits import Buckets
from .metrics import ServerMetrics
from .policy import Policy, PolicyError
from .ports import bind_problem, cannot_listen
from .reloading import ServerCertificates
from .settings import AuthSettings, Settings, env_name
from .tokens import TokenFile, TokenFileError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

EXPIRY_WARNING = dt.timedelta(days=30)
SERVICE_FILES: tuple[FileDescriptor, ...] = (
    helloworld_pb2.DESCRIPTOR,
    health_pb2.DESCRIPTOR,
    reflection_pb2.DESCRIPTOR,
)

log = structlog.get_logger("hello.server")
T = TypeVar("T")


@dataclass(frozen=True)
class BuiltServer:
    """What build_server made: the unstarted servers, the ports they bound, and the health servicer to flip."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    tls: ServerTls | None
    metrics: ServerMetrics
    # The plaintext health-only listener (None when HELLO_HEALTH_PORT=off).
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    # Where spans go when tracing is on; the runner flushes it at exit.
    tracer: TracerProvider | None = None

    @property
    def servers(self) -> tuple[grpc.aio.Server, ...]:
        """Every server to start and stop: the main one and, when on, the health-only one."""
        return (self.server,) if self.health_server is None else (self.server, self.health_server)


def _known_methods(files: Iterable[FileDescriptor]) -> list[str]:
    return [f"{s.full_name}/{m.name}" for f in files for s in f.services_by_name.values() for m in s.methods]


def _from_file(setting: str, path: Path, load: Callable[[Path], T], malformed: type[Exception]) -> T:
    """``load(path)``; a file that cannot be read or parsed is the start-up error naming ``setting``."""
    try:
        return load(path)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
    except (malformed, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"{path}: {exc}") from None


def _token_file(auth: AuthSettings) -> TokenFile:
    setting = env_name("auth", "tokens_file")
    if auth.tokens_file is None:
        raise ConfigError(setting, "is required: a file of accepted bearer tokens (make certs writes certs/token)")
    return _from_file(setting, auth.tokens_file, lambda path: TokenFile(path, auth.reload_seconds, log), TokenFileError)


def _authenticator(auth: AuthSettings, tls: ServerTls | None) -> Authenticate:
    if auth.mode != "token" and not (tls and tls.mutual):
        raise ConfigError(env_name("auth", "mode"), f"{auth.mode} needs {CLIENT_CA_FILE} (mutual TLS)")
    if auth.mode == "mtls":
        return mtls_authenticator()
    tokens = bearer_authenticator(_token_file(auth).current)
    return tokens if auth.mode == "token" else all_of(tokens, mtls_authenticator())


def _policy(auth: AuthSettings) -> Policy | None:
    if auth.policy_file is None:
        return None
    methods = _known_methods(SERVICE_FILES)
    setting = env_name("auth", "policy_file")
    return _from_file(setting, auth.policy_file, lambda path: Policy.from_file(path, methods), PolicyError)


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


def _options(settings: Settings, shared_port: bool) -> list[tuple[str, int]]:
    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    policy = settings.grpc
    return [
        # grpc turns SO_REUSEPORT on, which lets a second server silently share a busy port; only
        # the workers of one supervisor share theirs (the supervisor checked the port was free).
        ("grpc.so_reuseport", int(shared_port)),
        # grpc refuses bigger requests itself (RESOURCE_EXHAUSTED, before any Python code runs);
        # the wire layer checks replies first, so they fail with a clear message.
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", ms(policy.keepalive_time_seconds)),
        ("grpc.keepalive_timeout_ms", ms(policy.keepalive_timeout_seconds)),
        # Let clients keep idle connections warm with pings no more often than the interval.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(policy.min_ping_interval_seconds)),
        ("grpc.max_connection_idle_ms", ms(policy.max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", ms(policy.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", ms(policy.max_connection_age_grace_seconds)),
        ("grpc.max_concurrent_streams", policy.max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", ms(policy.handshake_timeout_seconds)),
    ]


def _bind(server: grpc.aio.Server, field: str, host: str, port: int, credentials: grpc.ServerCredentials | None) -> int:
    address = f"{host}:{port}"
    try:
        if credentials is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, credentials))
    except RuntimeError:
        # grpc only says it could not bind; ask the OS why, with a socket of our own.
        problem = bind_problem(host, port) or "grpc could not bind it"
        raise cannot_listen(field, host, port, problem) from None


def _health_server(
    settings: Settings, servicer: health.aio.HealthServicer, shared_port: bool
) -> tuple[grpc.aio.Server, int] | None:
    """A plaintext listener serving only health, sharing the main server's servicer (and so its statuses)."""
    if settings.health_port == "off":
        return None
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", int(shared_port)),
            ("grpc.max_receive_message_length", 4096),
            ("grpc.server_handshake_timeout_ms", int(settings.grpc.handshake_timeout_seconds * 1000)),
        ],
    )
    chain = Chain([RequestId(), AccessLog(quiet_services=(health.SERVICE_NAME,))])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, chain.register(server))
    return server, _bind(server, "health_port", settings.host, settings.health_port, None)


def _layers(
    settings: Settings, tls: ServerTls | None, metrics: ServerMetrics, tracer: TracerProvider | None
) -> list[Layer]:
    # Health answers probes and load balancers that hold no credentials.
    public = [health.SERVICE_NAME] + ([reflection.SERVICE_NAME] if settings.auth.public_reflection else [])
    policy = _policy(settings.auth)
    authenticate = _authenticator(settings.auth, tls)
    allows = policy.allows if policy else (lambda _principal, _method: True)
    limits = settings.rate_limit
    failures = Buckets(limits.auth_failures_per_second, limits.auth_failure_burst)
    auth = Auth(authenticate, public, allows, on_refusal=metrics.auth_failure, failures=failures)
    # Outermost first. The span (when tracing) covers everything, so log lines carry its trace id;
    # each call gets its request id before anything logs; the access log and metrics see every
    # outcome, including refusals (the chain turns an exception from any layer into INTERNAL);
    # the concurrency cap refuses before any work; the rate limit needs the principal auth names;
    # the wire layer is innermost so that a refused call's body is never decoded.
    tracing: list[Layer] = [Tracing(tracer.get_tracer("hello-grpc-service"))] if tracer else []
    rate: list[Layer] = []
    if limits.per_second:
        burst = limits.burst or max(1, int(limits.per_second))
        rate = [RateLimit(limits.per_second, burst, on_limited=metrics.limited)]
    return [
        *tracing,
        RequestId(),
        AccessLog(quiet_services=(health.SERVICE_NAME,)),
        Metrics(metrics),
        ConcurrencyLimit(limits.max_concurrent_calls, (health.SERVICE_NAME,), on_limited=metrics.limited),
        auth,
        *rate,
        Wire(settings.max_message_bytes),
    ]


async def build_server(
    settings: Settings,
    *,
    servicer: helloworld_pb2_grpc.HelloWorldServiceServicer | None = None,
    tracer: TracerProvider | None = None,
    shared_port: bool = False,
) -> BuiltServer:
    """Check the settings and build the server; raises ConfigError or StartupError with one clear line.

    ``servicer`` replaces the Hello servicer (a team that copies this service plugs its own in).
    ``shared_port`` lets the workers of one supervisor listen on the same ports (SO_REUSEPORT).
    With HELLO_TRACING__ENABLED, spans go to ``tracer``, else to an OTLP exporter built from the settings.
    """
    tls = _tls(settings)
    metrics = ServerMetrics(__version__)
    if tls is not None:
        metrics.certificate_expires(tls.not_after)
    if settings.tracing.enabled and tracer is None:
        # Imported only when tracing is on: the SDK and the OTLP exporter weigh ~15 MiB of memory.
        from .tracing import tracer_provider

        tracer = tracer_provider(settings.tracing)
    tracer = tracer if settings.tracing.enabled else None
    # No grpc interceptors: the chain wraps each handler once, here, as it is registered.
    server = grpc.aio.server(options=_options(settings, shared_port))
    services = Chain(_layers(settings, tls, metrics, tracer)).register(server)
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(
        servicer or hello.HelloServicer(max_name_length=settings.max_name_length), services
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    for service in ("", hello.SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    # What reflection.enable_server_reflection does for a grpc.aio.Server, registered through the chain.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer((hello.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)),
        services,
    )

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
    port = _bind(server, "port", settings.host, settings.port, credentials)
    health_server, health_port = _health_server(settings, health_servicer, shared_port) or (None, None)
    return BuiltServer(
        server=server,
        port=port,
        health=health_servicer,
        tls=tls,
        metrics=metrics,
        health_server=health_server,
        health_port=health_port,
        tracer=tracer,
    )
