"""The contract: SayHello over TLS with a token answers exactly "Hello, <name>!"."""

from __future__ import annotations

import grpc
import pytest

from service.client import check_health, create_channel, say_hello
from service.generated.rpc_package import helloworld_pb2, helloworld_pb2_grpc
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings


@pytest.mark.parametrize("name", ["eric", "世界", "Zoë 👋", "a" * 256, 'O\'Brien "quoted"', " spaced  out "])
async def test_say_hello_greets_any_name(server: BuiltServer, pki: Pki, name: str) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        assert await say_hello(channel, name) == f"Hello, {name}!"


async def test_generated_stub_works_with_raw_channel(server: BuiltServer, pki: Pki) -> None:
    # The generated stub with grpc's own credentials, no client library in between.
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(pki.ca.read_bytes()), grpc.access_token_call_credentials(pki.token)
    )
    async with grpc.aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = helloworld_pb2_grpc.HelloWorldServiceStub(channel)
        reply = await stub.SayHello(helloworld_pb2.HelloRequest(name="raw"), timeout=5)
    assert reply.message == "Hello, raw!"


@pytest.mark.parametrize("service", ["", "rpc_package.HelloWorldService"])
async def test_health_serving(server: BuiltServer, pki: Pki, service: str) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        assert await check_health(channel, service) == "SERVING"


async def test_health_unknown_service_is_not_found(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await check_health(channel, "no.such.Service")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_method_is_unimplemented_for_an_authenticated_caller(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        call = channel.unary_unary("/rpc_package.HelloWorldService/SayGoodbye")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(b"", timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
