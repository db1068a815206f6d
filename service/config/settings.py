"""Settings: one typed object per program, read once at the edge from HELLO_* variables and env files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..errors import ConfigError
from .problems import RELATIVE, problems, unknown_variables

ENV_PREFIX = "HELLO_"
CLIENT_ENV_PREFIX = "HELLO_CLIENT__"

Port = Annotated[int, Field(ge=0, le=65535)]
# A listener that can be turned off: a port number (0 = any free port) or "off".
OptionalPort = Port | Literal["off"]


def env_name(*path: str, prefix: str = ENV_PREFIX) -> str:
    """The environment variable that sets the field at ``path``: env_name("tls", "cert_file")."""
    return prefix + "__".join(part.upper() for part in path)


class TlsSettings(BaseModel):
    """Server certificate and key; a client CA turns on mutual TLS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    client_ca_file: FilePath | None = None
    # How often (seconds) the files are checked for a replacement, at a new connection; 0: every time.
    reload_seconds: float = Field(default=10.0, ge=0)

    @property
    def enabled(self) -> bool:
        """Whether any TLS file is configured (then both certificate and key must be)."""
        return self.cert_file is not None or self.key_file is not None


class AuthSettings(BaseModel):
    """Who may call the application services, and what each caller may call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # token: a bearer token; mtls: a client certificate the client CA signed; token+mtls: both.
    mode: Literal["token", "mtls", "token+mtls"] = "token"
    tokens_file: FilePath | None = None
    # How often (seconds) the tokens file is checked for changes; 0 checks on every call.
    reload_seconds: float = Field(default=5.0, ge=0)
    policy_file: FilePath | None = None
    public_reflection: bool = False


class LogSettings(BaseModel):
    """How the process logs; format None means console on a terminal, JSON otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["json", "console"] | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("format", "level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class GrpcSettings(BaseModel):
    """Connection policy: keepalive, the pings the server tolerates, connection age, streams per connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The server pings a connection idle this long, and drops it if no answer comes within the timeout.
    keepalive_time_seconds: float = Field(default=60.0, gt=0)
    keepalive_timeout_seconds: float = Field(default=20.0, gt=0)
    # Clients may ping this often, even between calls, without being cut off with "too_many_pings".
    min_ping_interval_seconds: float = Field(default=10.0, gt=0)
    # Connections with no call for this long are closed (clients reconnect when needed).
    max_connection_idle_seconds: float = Field(default=300.0, gt=0)
    # Connections are closed after this age (plus the grace for in-flight calls), so clients
    # reconnect and spread over new replicas after a scale-up or a rollout.
    max_connection_age_seconds: float = Field(default=300.0, gt=0)
    max_connection_age_grace_seconds: float = Field(default=30.0, ge=0)
    max_concurrent_streams: int = Field(default=100, ge=1)
    # A connection must finish its TLS and HTTP/2 handshakes within this, or it is closed.
    handshake_timeout_seconds: float = Field(default=10.0, gt=0)


class HealthSettings(BaseModel):
    """Bounds on the health service, which answers anyone: it needs no credentials, on either port."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Open Watch streams on the whole server (both ports) and on one connection; each holds about
    # 25 KiB while open (measured), and a client that watches health holds one per connection.
    max_watch_streams: int = Field(default=1000, ge=1)
    max_watch_streams_per_connection: int = Field(default=8, ge=1)
    # Longest service name a health call may ask about, in code points; no service may be served
    # under a longer name (a start-up error), so a longer one is INVALID_ARGUMENT.
    max_service_name_length: int = Field(default=256, ge=1, le=4096)


class MetricsSettings(BaseModel):
    """Bounds on the /metrics listener, which answers anyone that reaches its port."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A scrape connection must send its request, and take the reply, within this; else it is closed.
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Connections open at once; beyond it the oldest one still sending its request is closed.
    max_connections: int = Field(default=16, ge=1, le=1024)


class RateLimitSettings(BaseModel):
    """How much each caller may ask for; RESOURCE_EXHAUSTED beyond it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Calls a second per principal (a token bucket); 0 turns the limit off.
    per_second: float = Field(default=0.0, ge=0)
    # Calls a principal may make at once after a quiet spell; default: one second's worth.
    burst: int | None = Field(default=None, ge=1)
    # Calls in flight on the whole server; beyond it new calls are refused at once.
    max_concurrent_calls: int = Field(default=1000, ge=1)
    # Failed authentications per peer address: this many at once, refilled at this rate a second.
    auth_failure_burst: int = Field(default=20, ge=1)
    auth_failures_per_second: float = Field(default=1.0, gt=0)


class LoadReportSettings(BaseModel):
    """ORCA load reports in every call's trailers, for clients that balance by load (weighted_round_robin)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    # How often (seconds) the process's CPU utilization and call rate are sampled; calls in between
    # send the last sample.
    sample_seconds: float = Field(default=1.0, gt=0)


class TracingSettings(BaseModel):
    """OpenTelemetry tracing, off unless enabled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    # OTLP/gRPC collector, e.g. http://otel-collector.monitoring:4317; unset: OTEL_EXPORTER_OTLP_ENDPOINT.
    otlp_endpoint: str | None = None
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # service.name of the spans; unset: OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES' service.name
    # (as the SDK documents), else "hello-grpc-service".
    service_name: str | None = None


# A browser origin CORS may let in: scheme://host, with a port, or ":*" for any port of that host.
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:([0-9]{1,5}|\*))?")


class EdgeSettings(BaseModel):
    """The Envoy edge in front of the server (hello-edge): JSON and gRPC-Web for browsers and REST clients."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The edge's listener: an IP address ("localhost": 127.0.0.1 and ::1) and a port.
    host: str = "::"
    port: Port = 8080
    # The browser origins CORS lets call, comma-separated: scheme://host[:port], the port may be *
    # (any port of that host). No wildcard host: each origin is named. Empty: no browser may call.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # HTTPS on the listener (certificate chain and key, PEM); unset: plain HTTP, for local development.
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    # The server behind the edge, host:port; unset: HELLO_HOST (a wildcard address: localhost) and HELLO_PORT.
    upstream: str | None = None
    # The name the server's certificate must carry; unset: the upstream's host.
    upstream_server_name: str | None = None
    # The CA that signed the server's certificate: the edge always verifies it (over HTTP/2 and TLS).
    upstream_ca_file: FilePath | None = None
    # The edge's client certificate and key, for a server that asks for one (HELLO_TLS__CLIENT_CA_FILE).
    upstream_cert_file: FilePath | None = None
    upstream_key_file: FilePath | None = None
    # Plain HTTP GET /ready for probes (200 while the edge serves); "off": none.
    health_port: OptionalPort = 8085
    # Envoy's admin interface (stats, config dump), on 127.0.0.1 only; 0: any free port.
    admin_port: Port = 9901
    # The largest request body (and each connection's buffer), in bytes; a bigger body gets 413.
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Client connections open at once on the edge; beyond it new ones are refused.
    max_connections: int = Field(default=1024, ge=1)
    # Envoy's worker threads (--concurrency); unset: one per core Envoy sees.
    concurrency: int | None = Field(default=None, ge=1, le=64)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if ("*" in origin and not origin.endswith(":*")) or origin.count("*") > 1:
                raise ValueError(
                    f"{origin!r}: a wildcard stands only for the port (http://localhost:*): name each "
                    "host, since any site a wildcard lets in can call with its visitors' tokens"
                )
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host or scheme://host:port")
        return origins

    @field_validator("upstream")
    @classmethod
    def _host_and_port(cls, upstream: str | None) -> str | None:
        if upstream is not None:
            host, _, port = upstream.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{upstream!r}: write host:port, e.g. localhost:50051")
        return upstream


class Settings(BaseSettings):
    """Everything hello-server reads from its environment (prefix HELLO_, nesting with __)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # HELLO_CLIENT__* (the client's settings) may share the environment or the env file.
        extra="ignore",
        frozen=True,
    )

    # What is served: "package.module:attribute", a function that registers the app's services.
    app: str = "service.hello:register"
    host: str = "[::]"
    port: Port = 50051
    # Plaintext, health only: for the kubelet's grpc probes, which cannot do TLS or send tokens.
    health_port: OptionalPort = 8081
    # Prometheus /metrics over plain HTTP; 8082, beside the health port (9100-9999 is all taken by exporters).
    metrics_port: OptionalPort = 8082
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    insecure: bool = False
    log: LogSettings = LogSettings()
    grpc: GrpcSettings = GrpcSettings()
    health: HealthSettings = HealthSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    load_report: LoadReportSettings = LoadReportSettings()
    # Read by hello-edge only (the Envoy edge); the server ignores it.
    edge: EdgeSettings = EdgeSettings()
    # Processes serving the same ports (SO_REUSEPORT), supervised by the first; "auto": one per core.
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = 1

    def worker_count(self, cores: int) -> int:
        """How many worker processes to run on a machine with ``cores`` cores."""
        return cores if self.workers == "auto" else self.workers

    # Threads that run sync (def) handlers, each call holding one from start to end; a call beyond
    # them waits for one. 40: Starlette's (anyio's) default for its sync endpoints.
    handler_threads: int = Field(default=40, ge=1, le=1024)

    # The event loop: uvloop (libuv, in C) serves about an eighth more calls per CPU second than
    # asyncio's own loop (make bench); "auto" takes uvloop where it is installed.
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    drain_seconds: float = Field(default=0.0, ge=0)
    max_name_length: int = Field(default=256, ge=1, le=65536)
    # Received and sent messages; grpc's own default is 4 MiB, far more than a greeting needs.
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)


class RetrySettings(BaseModel):
    """grpc's retries of a failed call, and the throttle that stops them when a service keeps failing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Attempts per call, the first included (grpc allows at most 5); 1: no retries.
    max_attempts: int = Field(default=4, ge=1, le=5)
    # grpc's retryThrottling: each failure spends a token, each success earns throttle_ratio of
    # one; at half of throttle_tokens or below no call is retried. Shared by the channels to one
    # target in a process. Half of it is the burst of failures still retried: it must cover the
    # calls in flight to one backend when that backend dies (measured: 64 callers over 3 backends,
    # kill -9 of one; with 10 tokens 3 runs in 13 failed calls, with 100 none in 9).
    throttle_tokens: int = Field(default=100, ge=1, le=1000)
    throttle_ratio: float = Field(default=0.1, gt=0, le=1)


class EjectionSettings(BaseModel):
    """grpc's outlier detection: a backend that fails most of its calls is set aside for a while."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # None: on for targets that name several backends (as watch_health).
    enabled: bool | None = None
    # How often (seconds) the last interval's calls are counted, ejections made and undone.
    interval: float = Field(default=5.0, gt=0)
    # A backend is ejected for base_time times the number of times it was ejected (that number
    # drops by one each interval it is not), at most max_time.
    base_time: float = Field(default=30.0, gt=0)
    max_time: float = Field(default=300.0, gt=0)
    # Ejected when more than this percentage of its calls failed (any code but OK) ...
    failure_percent: int = Field(default=50, ge=0, le=100)
    # ... out of at least this many calls in the interval.
    min_calls: int = Field(default=5, ge=1)


class ClientSettings(BaseSettings):
    """Everything hello-client reads from its environment (prefix HELLO_CLIENT__)."""

    model_config = SettingsConfigDict(
        env_prefix=CLIENT_ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    target: str = "localhost:50051"
    # None means the system's trusted roots.
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    token: SecretStr | None = None
    token_file: FilePath | None = None
    timeout: float = Field(default=5.0, gt=0)
    # No TLS and no token: for the plaintext health port only.
    plaintext: bool = False
    # The name the server's certificate must carry, for targets that are addresses or lists of them.
    server_name: str | None = None
    # Skip backends whose health says NOT_SERVING (draining). None: on for targets that name several
    # backends (dns:///..., or a list of addresses); off for one, where it would only fail calls.
    watch_health: bool | None = None
    # How calls are spread over several backends: round_robin, or weighted_round_robin by the load
    # each backend reports (servers with HELLO_LOAD_REPORT__ENABLED=true).
    balancing: Literal["round_robin", "weighted_round_robin"] = "round_robin"
    retry: RetrySettings = RetrySettings()
    ejection: EjectionSettings = EjectionSettings()

    @property
    def several_backends(self) -> bool:
        """Whether the target may name several backends (dns:///..., or a list of addresses)."""
        return self.target.startswith("dns:") or "," in self.target

    @field_validator("target")
    @classmethod
    def _host_and_port(cls, target: str) -> str:
        # A plain target without a port, or with a malformed one, would only fail at the first call
        # with the resolver's words; schemes (dns:///, ipv4:, unix:) are grpc's to check.
        if target.startswith(("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "xds:")):
            return target
        host, _, port = target.rpartition(":")
        bracketed = target.startswith("[")
        if not host and port.isdigit():
            raise ValueError(f"{target!r} has no host: write host:port, e.g. localhost:50051")
        if (bracketed and "]:" not in target) or (not bracketed and (not host or ":" in host)):
            raise ValueError(f"{target!r} has no port: write host:port, e.g. localhost:50051 or [::1]:50051")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{target!r}: the port must be a number from 1 to 65535")
        return target

    @property
    def balanced(self) -> bool:
        """Whether the channel watches its backends' health (see ``watch_health``)."""
        return self.several_backends if self.watch_health is None else self.watch_health

    @property
    def ejecting(self) -> bool:
        """Whether the channel ejects failing backends (see ``ejection.enabled``)."""
        return self.several_backends if self.ejection.enabled is None else self.ejection.enabled


S = TypeVar("S", bound=BaseSettings)


def load(model: type[S], env_file: Path | None = None, **overrides: Any) -> S:
    """Build ``model`` from the environment and ``env_file``; its problems become one ConfigError.

    Explicit ``overrides`` (command-line options) win over the environment, which wins over the file.
    """
    prefix = str(model.model_config.get("env_prefix", ""))
    if env_file is not None and not env_file.is_file():
        raise ConfigError("--env-file/HELLO_ENV_FILE", f"no such file: {env_file} ({RELATIVE})")
    try:
        return model(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise _config_error(exc, model, prefix) from None


def _config_error(exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
    found = problems(exc, model, lambda *path: env_name(*path, prefix=prefix))
    return ConfigError(*found[0], *found[1:])


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _variables(model: type[BaseModel], prefix: str, *path: str) -> list[str]:
    names = []
    for field, info in model.model_fields.items():
        if _is_model(info.annotation):
            names += _variables(info.annotation, prefix, *path, field)  # type: ignore[arg-type]
        else:
            names.append(env_name(*path, field, prefix=prefix))
    return names


# Every HELLO_* variable some program here reads: the two models' fields, and what the entry points read.
KNOWN_VARIABLES = (
    *_variables(Settings, ENV_PREFIX),
    *_variables(ClientSettings, CLIENT_ENV_PREFIX),
    "HELLO_ENV_FILE",
    "HELLO_WORKER_READY_FD",
)


def unknown_variable_warnings(environ: Mapping[str, str], env_file: Path | None) -> list[str]:
    """A warning per HELLO_* variable (in ``environ`` or ``env_file``) that no setting reads: likely a typo."""
    from dotenv import dotenv_values

    in_file = dotenv_values(env_file) if env_file is not None and env_file.is_file() else {}
    # The nested models refuse a misspelled field themselves (extra="forbid"), with an error.
    nested = {env_name(field) + "__" for field, info in Settings.model_fields.items() if _is_model(info.annotation)}
    return unknown_variables([*environ, *in_file], KNOWN_VARIABLES, ENV_PREFIX, refused=nested)
