"""The client library: a secure channel carrying the bearer token, and one function per method."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2

from ..config.settings import ClientSettings
from ..security.credentials import channel_credentials

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ..generated.rpc_package import helloworld_pb2 as pb
    from ..generated.rpc_package import helloworld_pb2_grpc

DEFAULT_TIMEOUT = ClientSettings.model_fields["timeout"].default
REQUEST_ID = "x-request-id"


def new_request_id() -> str:
    """A fresh id to send as x-request-id; the server logs it and sends it back."""
    return uuid.uuid4().hex


def _metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID, request_id or new_request_id()),)


# No more than a third of the backends ejected at once: grpc ejects while fewer than this
# percentage are out, so with 2 to 5 backends that is at most half of them (1 of 2 or 3, 2 of 4 or
# 5), and one backend is never ejected (minimumHosts 2). Calls keep a place to go.
MAX_EJECTION_PERCENT = 33


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def service_config(settings: ClientSettings, *, watch_health: bool = True) -> dict[str, object]:
    """grpc's service config for the channel: balancing, ejection, retries and their throttle, health.

    Calls are balanced round_robin (or weighted_round_robin, by the load each backend reports) over
    every address the target resolves to (a headless Service's pods, or a list of addresses). With
    several backends, one that fails most of its calls is ejected for a while (outlier detection),
    and, with ``watch_health``, one that reports NOT_SERVING (draining) gets no new calls. A call
    that fails UNAVAILABLE (it never reached a handler, or its server went away before answering)
    or RESOURCE_EXHAUSTED (grpc waits what the server's pushback says; our server sends -1 where a
    retry cannot help) is retried, all attempts within the call's one deadline; when the service
    keeps failing, the throttle stops retries.

    The policy names no service: any stub on the channel (a team's, through HELLO_APP) gets it.
    grpc retries only before a response began, so a retry runs a handler twice only when a
    backend died mid-call; a service whose methods must never run twice sets retry.max_attempts=1.
    """
    balancing: dict[str, object] = {"round_robin": {}}
    if settings.balancing == "weighted_round_robin":
        # A backend's reports count after 2 s of them (grpc's default 10 s guards against churn of
        # addresses; ours report on every call, so 2 s holds many), weights renewed every second.
        balancing = {"weighted_round_robin": {"blackoutPeriod": "2s", "weightUpdatePeriod": "1s"}}
    if settings.ejecting:
        ejection = settings.ejection
        balancing = {
            "outlier_detection_experimental": {
                "interval": _seconds(ejection.interval),
                "baseEjectionTime": _seconds(ejection.base_time),
                "maxEjectionTime": _seconds(ejection.max_time),
                "maxEjectionPercent": MAX_EJECTION_PERCENT,
                "failurePercentageEjection": {
                    "threshold": ejection.failure_percent,
                    "enforcementPercentage": 100,
                    "minimumHosts": 2,
                    "requestVolume": ejection.min_calls,
                },
                "childPolicy": [balancing],
            }
        }
    retry = settings.retry
    method: dict[str, object] = {"name": [{}]}
    if retry.max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": retry.max_attempts,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
        }
    config: dict[str, object] = {
        "loadBalancingConfig": [balancing],
        "methodConfig": [method],
        "retryThrottling": {"maxTokens": retry.throttle_tokens, "tokenRatio": retry.throttle_ratio},
    }
    if watch_health and settings.balanced:
        # Client-side health checking: a backend whose health turns NOT_SERVING (draining before
        # a stop) gets no new calls from the channel, so a rolling update fails none.
        config["healthCheckConfig"] = {"serviceName": ""}
    return config


def channel_options(settings: ClientSettings, *, watch_health: bool = True) -> list[tuple[str, str | int]]:
    """Options for balancing, retries and keepalive (within the server's ping policy), and the TLS name."""
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", json.dumps(service_config(settings, watch_health=watch_health))),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    if settings.server_name:
        # Verify the certificate against this name, whatever address the target names.
        options += [
            ("grpc.ssl_target_name_override", settings.server_name),
            ("grpc.default_authority", settings.server_name),
        ]
    return options


@asynccontextmanager
async def create_channel(
    settings: ClientSettings, *, watch_health: bool = True, tracer: TracerProvider | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    """A TLS channel to ``settings.target`` (mTLS with a client certificate) sending the token on each call.

    ``target`` may be ``host:port``, ``dns:///host:port`` (every address it resolves to, e.g. a
    headless Service) or ``ipv4:a:p,b:q``. With ``plaintext``, no TLS and no token: the health port.
    ``watch_health=False`` turns off client-side health checking, which would hide a backend's
    NOT_SERVING status from a health check of that very backend. With ``tracer``, each call is a
    CLIENT span whose context travels to the server in the call's metadata.
    """
    options = channel_options(settings, watch_health=watch_health)
    interceptors = None
    if tracer is not None:
        # Imported only when tracing: the instrumentation package weighs several MiB.
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        interceptors = aio_client_interceptors(tracer_provider=tracer)  # type: ignore[no-untyped-call]
    if settings.plaintext:
        async with grpc.aio.insecure_channel(settings.target, options=options, interceptors=interceptors) as channel:
            yield channel
        return
    credentials = channel_credentials(settings)
    async with grpc.aio.secure_channel(settings.target, credentials, options, interceptors=interceptors) as channel:
        yield channel


def _stub(channel: grpc.aio.Channel) -> helloworld_pb2_grpc.HelloWorldServiceAsyncStub:
    # Hello's generated code is imported at its first call, here and in each function below: a
    # team's client (and service.testing) then loads none of it, whose descriptors would clash
    # with the team's own copy of the seed's proto (rpc_package.HelloRequest).
    from ..generated.rpc_package import helloworld_pb2_grpc

    # Given an aio channel, the stub's methods are grpc.aio's (the stubs' overload says so).
    return helloworld_pb2_grpc.HelloWorldServiceStub(channel)


async def say_hello(
    channel: grpc.aio.Channel, name: str, *, timeout: float = DEFAULT_TIMEOUT, request_id: str | None = None
) -> str:
    """Call SayHello and return the greeting; raises grpc.aio.AioRpcError on failure.

    ``timeout`` bounds the whole call, grpc's retries included.
    """
    from ..generated.rpc_package import helloworld_pb2 as pb

    reply = await _stub(channel).SayHello(pb.HelloRequest(name=name), timeout=timeout, metadata=_metadata(request_id))
    return str(reply.message)


async def say_hello_repeated(
    channel: grpc.aio.Channel,
    name: str,
    count: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    request_id: str | None = None,
) -> AsyncIterator[str]:
    """SayHelloRepeated: yields ``count`` greetings as the server streams them."""
    from ..generated.rpc_package import helloworld_pb2 as pb

    call = _stub(channel).SayHelloRepeated(
        pb.SayHelloRepeatedRequest(name=name, count=count), timeout=timeout, metadata=_metadata(request_id)
    )
    async for reply in call:
        yield str(reply.message)


async def say_hello_to_many(
    channel: grpc.aio.Channel,
    names: Iterable[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    request_id: str | None = None,
) -> str:
    """SayHelloToMany: streams the names and returns the one greeting for all of them."""
    from ..generated.rpc_package import helloworld_pb2 as pb

    requests = (pb.SayHelloToManyRequest(name=name) for name in names)
    reply = await _stub(channel).SayHelloToMany(requests, timeout=timeout, metadata=_metadata(request_id))
    return str(reply.message)


async def say_hello_chat(
    channel: grpc.aio.Channel,
    names: AsyncIterable[str] | Iterable[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    request_id: str | None = None,
) -> AsyncIterator[str]:
    """SayHelloChat: yields a greeting for each name as the server answers it."""
    from ..generated.rpc_package import helloworld_pb2 as pb

    async def requests() -> AsyncIterator[pb.SayHelloChatRequest]:
        if isinstance(names, AsyncIterable):
            async for name in names:
                yield pb.SayHelloChatRequest(name=name)
        else:
            for name in names:
                yield pb.SayHelloChatRequest(name=name)

    call = _stub(channel).SayHelloChat(requests(), timeout=timeout, metadata=_metadata(request_id))
    async for reply in call:
        yield str(reply.message)


async def check_health(
    channel: grpc.aio.Channel, service: str = "", *, timeout: float = DEFAULT_TIMEOUT, request_id: str | None = None
) -> str:
    """The serving status of ``service`` ("" is the whole server) by name, e.g. "SERVING"."""
    # types-grpcio-health-checking's HealthStub declares no methods: the same call, typed.
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    request = health_pb2.HealthCheckRequest(service=service)
    response = await check(request, timeout=timeout, metadata=_metadata(request_id))
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
