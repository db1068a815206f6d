"""Input rules and size limits: each bad input gets the right status and a plain message; the server goes on."""

from __future__ import annotations

import grpc
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import create_channel, say_hello, say_hello_to_many
from service.generated.rpc_package import helloworld_pb2 as pb
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, running, server_settings


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name: must not be empty"),
        ("a" * 257, "name: must be at most 256 characters (got 257)"),
        ("tab\there", "name: must not contain control or format characters (U+0009 at position 3)"),
        ("zero\u200bwidth", "name: must not contain control or format characters (U+200B at position 4)"),
        ("nul\x00", "name: must not contain control or format characters (U+0000 at position 3)"),
    ],
)
async def test_invalid_names(server: BuiltServer, pki: Pki, name: str, message: str) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await say_hello(channel, name)
        assert await say_hello(channel, "after") == "Hello, after!"
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == message


async def test_max_name_length_is_a_setting(pki: Pki) -> None:
    async with running(server_settings(pki, max_name_length=3)) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            assert await say_hello(channel, "Ann") == "Hello, Ann!"
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await say_hello(channel, "Anna")
    assert error.value.details() == "name: must be at most 3 characters (got 4)"


@pytest.mark.parametrize(
    "body",
    [b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"],
    ids=["truncated", "invalid-utf8", "bad-varint"],
)
async def test_malformed_body_is_invalid_argument_and_logged(pki: Pki, body: bytes) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki)) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await channel.unary_unary("/rpc_package.HelloWorldService/SayHello")(body, timeout=5)
                assert await say_hello(channel, "after") == "Hello, after!"
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "the request is not a valid rpc_package.HelloRequest"
    assert [e["code"] for e in logs if e["event"] == "rpc"] == ["INVALID_ARGUMENT", "OK"]


async def test_malformed_message_inside_a_stream(server: BuiltServer, pki: Pki) -> None:
    async def bodies() -> object:
        yield pb.SayHelloToManyRequest(name="ok").SerializeToString()
        yield b"\x0a\x05ab"

    async with create_channel(client_settings(pki, server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.stream_unary("/rpc_package.HelloWorldService/SayHelloToMany")(bodies(), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "the request is not a valid rpc_package.SayHelloToManyRequest"


async def test_request_over_the_size_limit(pki: Pki) -> None:
    async with running(server_settings(pki, max_message_bytes=2048)) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await say_hello(channel, "x" * 3000)
            assert await say_hello(channel, "small") == "Hello, small!"
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_reply_over_the_size_limit_is_refused_and_logged(pki: Pki) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki, max_message_bytes=2048)) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await say_hello_to_many(channel, ["n" * 200] * 20)
                assert await say_hello(channel, "small") == "Hello, small!"
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 2048 (HELLO_MAX_MESSAGE_BYTES)" in (error.value.details() or "")
    assert [e["code"] for e in logs if e["event"] == "rpc"] == ["RESOURCE_EXHAUSTED", "OK"]
