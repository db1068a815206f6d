"""The client library: a secure channel carrying the bearer token, and one function per method."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from .credentials import channel_credentials
from .generated.rpc_package import helloworld_pb2 as pb
from .generated.rpc_package import helloworld_pb2_grpc
from .settings import ClientSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

DEFAULT_TIMEOUT = ClientSettings.model_fields["timeout"].default
REQUEST_ID = "x-request-id"


def new_request_id() -> str:
    """A fresh id to send as x-request-id; the server logs it and sends it back."""
    return uuid.uuid4().hex


def _metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID, request_id or new_request_id()),)


# Balance calls over every address the target resolves to (a headless Service's pods, or a list
# of addresses), skip backends that report NOT_SERVING, and retry calls that never reached a
# server or hit one that was going away.
# Every method here is idempotent, so a retry cannot do anything twice that matters.
SERVICE_CONFIG: dict[str, object] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "rpc_package.HelloWorldService"}, {"service": "grpc.health.v1.Health"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


# Client-side health checking: a backend whose health turns NOT_SERVING (draining before a stop)
# gets no new calls from the channel, so a rolling update fails none.
WATCH_HEALTH = {"healthCheckConfig": {"serviceName": ""}}


def channel_options(settings: ClientSettings, *, watch_health: bool = True) -> list[tuple[str, str | int]]:
    """Options for balancing, retries and keepalive (within the server's ping policy), and the TLS name."""
    service_config = {**SERVICE_CONFIG, **WATCH_HEALTH} if watch_health and settings.balanced else SERVICE_CONFIG
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", json.dumps(service_config)),
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
    # Given an aio channel, the stub's methods are grpc.aio's (the stubs' overload says so).
    return helloworld_pb2_grpc.HelloWorldServiceStub(channel)


T = TypeVar("T")
# grpc retries a call only while no response has begun. A backend that dies after it began the
# response fails the call with UNAVAILABLE; an idempotent unary call can simply be made again.
AGAIN_ATTEMPTS = 3


async def _again_if_unavailable(call: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(AGAIN_ATTEMPTS):
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == AGAIN_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def say_hello(
    channel: grpc.aio.Channel, name: str, *, timeout: float = DEFAULT_TIMEOUT, request_id: str | None = None
) -> str:
    """Call SayHello and return the greeting; raises grpc.aio.AioRpcError on failure.

    ``timeout`` bounds each attempt; a call that fails UNAVAILABLE is made again (it is idempotent).
    """
    metadata = _metadata(request_id)
    request = pb.HelloRequest(name=name)
    reply = await _again_if_unavailable(lambda: _stub(channel).SayHello(request, timeout=timeout, metadata=metadata))
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
    """SayHelloToMany: streams the names and returns the one greeting for all of them (made again if UNAVAILABLE)."""
    metadata, names = _metadata(request_id), list(names)

    def call() -> Awaitable[pb.SayHelloToManyResponse]:
        requests = (pb.SayHelloToManyRequest(name=name) for name in names)
        return _stub(channel).SayHelloToMany(requests, timeout=timeout, metadata=metadata)

    reply = await _again_if_unavailable(call)
    return str(reply.message)


async def say_hello_chat(
    channel: grpc.aio.Channel,
    names: AsyncIterable[str] | Iterable[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    request_id: str | None = None,
) -> AsyncIterator[str]:
    """SayHelloChat: yields a greeting for each name as the server answers it."""

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
