"""Token auth: no or wrong credentials are UNAUTHENTICATED with a clear message that never echoes the token."""

from __future__ import annotations

import grpc
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import check_health, create_channel, say_hello
from service.generated.rpc_package import helloworld_pb2
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, secret, tokenless_channel
from .recorded import recorded

WRONG_TOKEN = secret("not-the-right-token-0123456789")


async def _say_hello_with(pki: Pki, port: int, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    async with tokenless_channel(pki, port) as channel:
        call = channel.unary_unary(
            "/rpc_package.HelloWorldService/SayHello",
            request_serializer=helloworld_pb2.HelloRequest.SerializeToString,
            response_deserializer=helloworld_pb2.HelloReply.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(helloworld_pb2.HelloRequest(name="x"), metadata=metadata, timeout=5)
    return error.value


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing credentials: send the metadata 'authorization: Bearer <token>'"),
        ((("authorization", f"Bearer {WRONG_TOKEN}"),), "the bearer token is not valid"),
        (
            (("authorization", f"Basic {WRONG_TOKEN}"),),
            "the 'authorization' metadata must use the Bearer scheme",
        ),
        ((("authorization", "Bearer "),), "the bearer token is empty"),
        (
            (("authorization", "Bearer a"), ("authorization", "Bearer b")),
            "more than one 'authorization' metadata entry",
        ),
    ],
    ids=["missing", "wrong", "wrong-scheme", "empty", "two-headers"],
)
async def test_bad_credentials_are_unauthenticated(
    server: BuiltServer, pki: Pki, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    error = await _say_hello_with(pki, server.port, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == message
    assert WRONG_TOKEN not in (error.details() or "")


async def test_wrong_token_through_the_client_library(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port, token=WRONG_TOKEN)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await say_hello(channel, "x")
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_scheme_is_case_insensitive(server: BuiltServer, pki: Pki) -> None:
    async with tokenless_channel(pki, server.port) as channel:
        call = channel.unary_unary(
            "/rpc_package.HelloWorldService/SayHello",
            request_serializer=helloworld_pb2.HelloRequest.SerializeToString,
            response_deserializer=helloworld_pb2.HelloReply.FromString,
        )
        reply = await call(
            helloworld_pb2.HelloRequest(name="x"),
            metadata=(("authorization", f"bearer {pki.token}"),),
            timeout=5,
        )
    assert reply.message == "Hello, x!"


async def test_health_needs_no_token(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port, token=None)) as channel:
        assert await check_health(channel) == "SERVING"


async def test_reflection_needs_a_token(server: BuiltServer, pki: Pki) -> None:
    async with tokenless_channel(pki, server.port) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in call(iter([b""]), timeout=5):
                pass
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_method_without_token_is_unauthenticated(server: BuiltServer, pki: Pki) -> None:
    # An anonymous caller cannot probe which methods exist.
    async with tokenless_channel(pki, server.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.unary_unary("/rpc_package.HelloWorldService/Nope")(b"", timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_access_log_has_one_line_per_call_without_secrets(server: BuiltServer, pki: Pki) -> None:
    # merge_contextvars, as in production: the principal reaches the line through structlog's contextvars.
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with create_channel(client_settings(pki, server.port)) as channel:
            await say_hello(channel, "logged")
        await _say_hello_with(pki, server.port, (("authorization", f"Bearer {WRONG_TOKEN}"),))
        # The refused call's line comes after its caller has the status; the server is still running.
        lines = await recorded(lambda: [entry for entry in logs if entry["event"] == "rpc"], lambda got: len(got) >= 2)
    assert [(line["code"], line["log_level"]) for line in lines] == [
        ("OK", "info"),
        ("UNAUTHENTICATED", "warning"),
    ]
    ok, refused = lines
    assert ok["method"] == "/rpc_package.HelloWorldService/SayHello"
    assert ok["principal"] == "dev"
    assert "principal" not in refused
    for line in lines:
        assert line["peer"].startswith("ipv4:127.0.0.1:")
        assert 0 <= line["duration_ms"] < 5000
    assert pki.token not in repr(logs)
    assert WRONG_TOKEN not in repr(logs)
