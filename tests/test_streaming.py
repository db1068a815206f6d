"""The streaming methods: each RPC kind through the client library, hello-client and grpcurl."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from service.client import create_channel, say_hello_chat, say_hello_repeated, say_hello_to_many
from service.hello.servicer import MAX_NAMES_PER_STREAM, MAX_REPEAT
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings
from .processes import BIN, clean_env, run


async def test_repeated_streams_count_greetings(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        replies = [m async for m in say_hello_repeated(channel, "Ann", 3)]
    assert replies == ["Hello, Ann!"] * 3


@pytest.mark.parametrize("count", [0, MAX_REPEAT + 1])
async def test_repeated_count_out_of_range(server: BuiltServer, pki: Pki, count: int) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            _ = [m async for m in say_hello_repeated(channel, "Ann", count)]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == f"count: must be 1 to {MAX_REPEAT}"


@pytest.mark.parametrize(
    ("names", "reply"),
    [
        (["Ann"], "Hello, Ann!"),
        (["Ann", "Bob"], "Hello, Ann and Bob!"),
        (["Ann", "Bob", "Cy"], "Hello, Ann, Bob and Cy!"),
    ],
)
async def test_to_many_greets_all_names_at_once(server: BuiltServer, pki: Pki, names: list[str], reply: str) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        assert await say_hello_to_many(channel, names) == reply


@pytest.mark.parametrize(
    ("count", "message"),
    [(0, "send at least one name"), (MAX_NAMES_PER_STREAM + 1, f"at most {MAX_NAMES_PER_STREAM} names per stream")],
)
async def test_to_many_name_count_limits(server: BuiltServer, pki: Pki, count: int, message: str) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await say_hello_to_many(channel, [f"n{i}" for i in range(count)])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == message


async def test_to_many_accepts_exactly_the_cap(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        reply = await say_hello_to_many(channel, [f"n{i}" for i in range(MAX_NAMES_PER_STREAM)])
    assert reply.endswith(f"n{MAX_NAMES_PER_STREAM - 2} and n{MAX_NAMES_PER_STREAM - 1}!")


async def test_chat_answers_each_name_as_it_arrives(server: BuiltServer, pki: Pki) -> None:
    names: asyncio.Queue[str | None] = asyncio.Queue()

    async def feed() -> object:
        while (name := await names.get()) is not None:
            yield name

    async with create_channel(client_settings(pki, server.port)) as channel:
        replies = say_hello_chat(channel, feed())
        for name in ["Ann", "Bob"]:
            await names.put(name)
            # The reply to each name arrives before the next name is sent: a real conversation.
            assert await anext(replies) == f"Hello, {name}!"
        await names.put(None)
        assert [r async for r in replies] == []


async def test_chat_invalid_name_ends_the_stream_after_earlier_replies(server: BuiltServer, pki: Pki) -> None:
    got: list[str] = []
    async with create_channel(client_settings(pki, server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for reply in say_hello_chat(channel, ["Ann", "", "Cy"]):
                got.append(reply)
    assert got == ["Hello, Ann!"]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "name: must not be empty"


async def _cli(pki: Pki, port: int, *args: str, stdin: str | None = None) -> tuple[int, str]:
    command = [str(BIN / "hello-client"), "--target", f"localhost:{port}", "--ca", str(pki.ca)]
    command += ["--token-file", str(pki.token_file), *args]
    result = await asyncio.to_thread(run, command, clean_env(), 30, None, stdin)
    return result.returncode, result.stdout


async def test_cli_say_repeated(server: BuiltServer, pki: Pki) -> None:
    assert await _cli(pki, server.port, "say-repeated", "Ann", "--count", "2") == (0, "Hello, Ann!\nHello, Ann!\n")


async def test_cli_say_many(server: BuiltServer, pki: Pki) -> None:
    assert await _cli(pki, server.port, "say-many", "Ann", "Bob") == (0, "Hello, Ann and Bob!\n")


async def test_cli_chat_from_arguments_and_from_stdin(server: BuiltServer, pki: Pki) -> None:
    assert await _cli(pki, server.port, "chat", "Ann", "Bob") == (0, "Hello, Ann!\nHello, Bob!\n")
    assert await _cli(pki, server.port, "chat", stdin="Cy\n\nDee\n") == (0, "Hello, Cy!\nHello, Dee!\n")


@pytest.mark.parametrize(
    ("method", "data", "expected"),
    [
        (
            "SayHelloRepeated",
            '{"name": "Ann", "count": 2}',
            [{"message": "Hello, Ann!", "index": 1}, {"message": "Hello, Ann!", "index": 2}],
        ),
        ("SayHelloToMany", '{"name": "Ann"} {"name": "Bob"}', [{"message": "Hello, Ann and Bob!", "count": 2}]),
        ("SayHelloChat", '{"name": "Ann"} {"name": "Bob"}', [{"message": "Hello, Ann!"}, {"message": "Hello, Bob!"}]),
    ],
)
async def test_grpcurl_calls_streaming_methods_from_stdin(
    server: BuiltServer, pki: Pki, method: str, data: str, expected: list[dict[str, object]]
) -> None:
    command = [
        str(BIN / "grpcurl"),
        "-cacert",
        str(pki.ca),
        "-H",
        f"authorization: Bearer {pki.token}",
        "-d",
        "@",
        f"127.0.0.1:{server.port}",
        f"rpc_package.HelloWorldService/{method}",
    ]
    result = await asyncio.to_thread(run, command, clean_env(), 15, None, data)
    assert result.returncode == 0, result.stderr
    decoder, text, replies = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        reply, end = decoder.raw_decode(text)
        replies.append(reply)
        text = text[end:].strip()
    assert replies == expected
