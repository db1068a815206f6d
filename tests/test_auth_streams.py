"""Auth holds for every RPC kind, before the handler runs and before the body is decoded; auth modes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import create_channel, say_hello, say_hello_repeated
from service.errors import ConfigError
from service.generated.rpc_package import helloworld_pb2 as pb

from .conftest import Pki, build_hello, client_settings, running, server_settings, tokenless_channel
from .spy import SpyServicer

METHOD = "/rpc_package.HelloWorldService/"
# A length-delimited field that claims 5 bytes and has 2: not a valid message.
MALFORMED = b"\x0a\x05ab"


async def _requests(*bodies: bytes) -> AsyncIterator[bytes]:
    for body in bodies:
        yield body


async def _call_raw(
    channel: grpc.aio.Channel, kind: str, body: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    """Call one method of each RPC kind with raw bytes, so that bodies need not be valid."""
    if kind == "unary_unary":
        await channel.unary_unary(METHOD + "SayHello")(body, metadata=metadata, timeout=5)
    elif kind == "unary_stream":
        async for _ in channel.unary_stream(METHOD + "SayHelloRepeated")(body, metadata=metadata, timeout=5):
            pass
    elif kind == "stream_unary":
        await channel.stream_unary(METHOD + "SayHelloToMany")(_requests(body), metadata=metadata, timeout=5)
    else:
        async for _ in channel.stream_stream(METHOD + "SayHelloChat")(_requests(body), metadata=metadata, timeout=5):
            pass


KINDS = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
VALID_BODY = {
    "unary_unary": pb.HelloRequest(name="x").SerializeToString(),
    "unary_stream": pb.SayHelloRepeatedRequest(name="x", count=2).SerializeToString(),
    "stream_unary": pb.SayHelloToManyRequest(name="x").SerializeToString(),
    "stream_stream": pb.SayHelloChatRequest(name="x").SerializeToString(),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body", ["valid", "malformed"])
async def test_unauthenticated_call_never_enters_the_handler(pki: Pki, kind: str, body: str) -> None:
    spy = SpyServicer()
    async with running(server_settings(pki), spy) as built, tokenless_channel(pki, built.port) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _call_raw(channel, kind, VALID_BODY[kind] if body == "valid" else MALFORMED)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert spy.entered == []


@pytest.mark.parametrize("kind", KINDS)
async def test_authenticated_call_of_each_kind_runs(pki: Pki, kind: str) -> None:
    spy = SpyServicer()
    async with running(server_settings(pki), spy) as built, tokenless_channel(pki, built.port) as channel:
        await _call_raw(channel, kind, VALID_BODY[kind], (("authorization", f"Bearer {pki.token}"),))
    assert len(spy.entered) == 1


async def test_context_write_handler_streams_through_the_interceptors(pki: Pki) -> None:
    async with running(server_settings(pki), SpyServicer()) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            assert [m async for m in say_hello_repeated(channel, "w", 2)] == ["Hello, w!"] * 2


async def test_mtls_mode_accepts_a_client_certificate_alone(pki: Pki) -> None:
    settings = server_settings(pki, mtls=True, auth={"mode": "mtls"})
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with running(settings) as built:
            client = client_settings(pki, built.port, cert_file=pki.client, key_file=pki.client_key, token=None)
            async with create_channel(client) as channel:
                assert await say_hello(channel, "cert") == "Hello, cert!"
    [line] = [e for e in logs if e["event"] == "rpc"]
    assert line["principal"] == "cn:hello-client"  # the certificate's CN: it has no SAN (test_mtls_identity.py)


async def test_token_and_mtls_mode_needs_both(pki: Pki) -> None:
    settings = server_settings(pki, mtls=True, auth={"mode": "token+mtls", "tokens_file": pki.token_file})
    async with running(settings) as built:
        cert = {"cert_file": pki.client, "key_file": pki.client_key}
        async with create_channel(client_settings(pki, built.port, token=None, **cert)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await say_hello(channel, "x")
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with create_channel(client_settings(pki, built.port, **cert)) as channel:
            assert await say_hello(channel, "both") == "Hello, both!"


@pytest.mark.parametrize("mode", ["mtls", "token+mtls"])
async def test_certificate_modes_need_a_client_ca(pki: Pki, mode: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"HELLO_AUTH__MODE: {mode} needs HELLO_TLS__CLIENT_CA_FILE")):
        await build_hello(server_settings(pki, auth={"mode": mode, "tokens_file": pki.token_file}))


async def test_public_reflection_needs_no_token(pki: Pki) -> None:
    settings = server_settings(pki, auth={"tokens_file": pki.token_file, "public_reflection": True})
    async with running(settings) as built, tokenless_channel(pki, built.port) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        from grpc_reflection.v1alpha import reflection_pb2

        request = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
        replies = [r async for r in call(_requests(request), timeout=5)]
    services = reflection_pb2.ServerReflectionResponse.FromString(replies[0]).list_services_response.service
    assert "rpc_package.HelloWorldService" in {s.name for s in services}
