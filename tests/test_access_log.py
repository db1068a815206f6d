"""The access log, request ids and error mapping, asserted field by field for every RPC kind."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import (
    check_health,
    create_channel,
    say_hello,
    say_hello_chat,
    say_hello_repeated,
    say_hello_to_many,
)
from service.generated.rpc_package import helloworld_pb2 as pb
from service.generated.rpc_package import helloworld_pb2_grpc

from .conftest import Pki, client_settings, running, server_settings
from .spy import FailingServicer

HEX32 = re.compile(r"[0-9a-f]{32}")


def rpc_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "rpc"]


async def test_one_line_per_call_of_each_kind(pki: Pki) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki)) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                await say_hello(channel, "a", request_id="req-unary")
                _ = [m async for m in say_hello_repeated(channel, "b", 3, request_id="req-server-stream")]
                await say_hello_to_many(channel, ["c", "d"], request_id="req-client-stream")
                _ = [m async for m in say_hello_chat(channel, ["e", "f", "g"], request_id="req-bidi")]
    lines = rpc_lines(logs)
    expected = [
        ("SayHello", "req-unary", None),
        ("SayHelloRepeated", "req-server-stream", (1, 3)),
        ("SayHelloToMany", "req-client-stream", (2, 1)),
        ("SayHelloChat", "req-bidi", (3, 3)),
    ]
    assert len(lines) == len(expected)
    for line, (method, request_id, counts) in zip(lines, expected, strict=True):
        assert line["method"] == f"/rpc_package.HelloWorldService/{method}"
        assert line["request_id"] == request_id
        assert line["code"] == "OK"
        assert line["log_level"] == "info"
        assert line["principal"] == "dev"
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert line["user_agent"].startswith("grpc-python-asyncio/")
        assert isinstance(line["duration_ms"], float)
        assert 0 <= line["duration_ms"] < 5000
        if counts is None:
            assert "received" not in line
        else:
            assert (line["received"], line["sent"]) == counts
    assert pki.token not in repr(logs)


@pytest.mark.parametrize(
    ("call", "code", "level"),
    [
        ("bad-name", "INVALID_ARGUMENT", "warning"),
        ("no-token", "UNAUTHENTICATED", "warning"),
        ("unknown-method", "UNIMPLEMENTED", "warning"),
        ("boom", "INTERNAL", "error"),
    ],
)
async def test_level_follows_the_status_code(pki: Pki, call: str, code: str, level: str) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki), FailingServicer()) as built:
            token = None if call == "no-token" else pki.token
            async with create_channel(client_settings(pki, built.port, token=token)) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    if call == "unknown-method":
                        await channel.unary_unary("/rpc_package.HelloWorldService/Nope")(b"", timeout=5)
                    else:
                        await say_hello(channel, "" if call == "bad-name" else "boom")
    [line] = rpc_lines(logs)
    assert (line["code"], line["log_level"]) == (code, level)


async def test_successful_health_checks_log_at_debug(pki: Pki) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki)) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                assert await check_health(channel) == "SERVING"
                with pytest.raises(grpc.aio.AioRpcError):
                    await check_health(channel, "no.Such")
    ok, missing = rpc_lines(logs)
    assert (ok["code"], ok["log_level"]) == ("OK", "debug")
    assert (missing["code"], missing["log_level"]) == ("NOT_FOUND", "warning")


async def test_exception_becomes_internal_without_internals(pki: Pki) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki), FailingServicer()) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await say_hello(channel, "boom", request_id="req-boom")
                # The server keeps serving.
                assert await say_hello(channel, "fine") == "Hello, fine!"
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error (request id req-boom)"
    [failure] = [e for e in logs if e["event"] == "unhandled exception in handler"]
    assert failure["log_level"] == "error"
    assert failure["request_id"] == "req-boom"
    assert failure["exc_info"] is True


async def _call_with_request_id(pki: Pki, port: int, request_id: str | None, name: str) -> tuple[Any, Any, Any]:
    async with create_channel(client_settings(pki, port)) as channel:
        metadata = (("x-request-id", request_id),) if request_id is not None else ()
        call = helloworld_pb2_grpc.HelloWorldServiceStub(channel).SayHello(
            pb.HelloRequest(name=name), metadata=metadata, timeout=5
        )
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return error.code(), error.initial_metadata(), error.trailing_metadata()
        return await call.code(), await call.initial_metadata(), await call.trailing_metadata()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123_X.y", True), ("a" * 128, True), ("a" * 129, False), ("has space", False), ("", False), (None, False)],
)
@pytest.mark.parametrize("name", ["ok", ""])
async def test_request_id_round_trip(pki: Pki, sent: str | None, kept: bool, name: str) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(server_settings(pki)) as built:
            code, initial, trailing = await _call_with_request_id(pki, built.port, sent, name)
    returned = dict(list(trailing))["x-request-id"]
    assert returned == sent if kept else HEX32.fullmatch(returned)
    assert code == (grpc.StatusCode.OK if name else grpc.StatusCode.INVALID_ARGUMENT)
    # Unary replies carry it in the trailers only: headers of our own would cost a write per call.
    assert "x-request-id" not in dict(list(initial))
    [line] = rpc_lines(logs)
    assert line["request_id"] == returned


async def test_streaming_replies_send_the_request_id_with_their_headers(pki: Pki) -> None:
    async with running(server_settings(pki)) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            call = helloworld_pb2_grpc.HelloWorldServiceStub(channel).SayHelloRepeated(
                pb.SayHelloRepeatedRequest(name="Ann", count=2), metadata=(("x-request-id", "stream-1"),), timeout=5
            )
            initial = await call.initial_metadata()
            replies = [reply.index async for reply in call]
            trailing = await call.trailing_metadata()
    # Before the first reply, so a client can log the id while the stream lasts.
    assert dict(list(initial))["x-request-id"] == "stream-1"
    assert dict(list(trailing))["x-request-id"] == "stream-1"
    assert replies == [1, 2]
