"""The client library: a secure channel carrying the bearer token, and one function per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .credentials import channel_credentials
from .generated.rpc_package import helloworld_pb2, helloworld_pb2_grpc
from .settings import ClientSettings

DEFAULT_TIMEOUT = ClientSettings.model_fields["timeout"].default


@asynccontextmanager
async def create_channel(settings: ClientSettings) -> AsyncIterator[grpc.aio.Channel]:
    """A TLS channel to ``settings.target`` (mTLS with a client certificate) sending the token on each call."""
    async with grpc.aio.secure_channel(settings.target, channel_credentials(settings)) as channel:
        yield channel


async def say_hello(channel: grpc.aio.Channel, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Call SayHello and return the greeting; raises grpc.aio.AioRpcError on failure."""
    stub = helloworld_pb2_grpc.HelloWorldServiceStub(channel)
    reply = await stub.SayHello(helloworld_pb2.HelloRequest(name=name), timeout=timeout)
    return str(reply.message)


async def check_health(channel: grpc.aio.Channel, service: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The serving status of ``service`` ("" is the whole server) by name, e.g. "SERVING"."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
