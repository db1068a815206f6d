"""Transport security: only clients that trust our CA get in; with mTLS, only clients our CA signed."""

from __future__ import annotations

import grpc
import pytest

from service.client import create_channel, say_hello
from service.generated.rpc_package import helloworld_pb2, helloworld_pb2_grpc
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings


async def _unavailable(settings_call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await settings_call  # type: ignore[misc]
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    return error.value


async def test_client_with_another_ca_is_refused(server: BuiltServer, pki: Pki, other_pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port, ca_file=other_pki.ca)) as channel:
        error = await _unavailable(say_hello(channel, "x"))
    assert "CERTIFICATE_VERIFY_FAILED" in (error.details() or "")


async def test_plaintext_client_against_tls_port_fails(server: BuiltServer, pki: Pki) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = helloworld_pb2_grpc.HelloWorldServiceStub(channel)
        await _unavailable(
            stub.SayHello(
                helloworld_pb2.HelloRequest(name="x"),
                metadata=(("authorization", f"Bearer {pki.token}"),),
                timeout=5,
            )
        )


async def test_server_keeps_serving_after_bad_handshakes(server: BuiltServer, pki: Pki, other_pki: Pki) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        await _unavailable(channel.unary_unary("/rpc_package.HelloWorldService/SayHello")(b"", timeout=5))
    async with create_channel(client_settings(pki, server.port, ca_file=other_pki.ca)) as channel:
        await _unavailable(say_hello(channel, "x"))
    async with create_channel(client_settings(pki, server.port)) as channel:
        assert await say_hello(channel, "still here") == "Hello, still here!"


async def test_mtls_with_the_right_client_certificate(mtls_server: BuiltServer, pki: Pki) -> None:
    settings = client_settings(pki, mtls_server.port, cert_file=pki.client, key_file=pki.client_key)
    async with create_channel(settings) as channel:
        assert await say_hello(channel, "mtls") == "Hello, mtls!"


async def test_mtls_without_client_certificate_is_refused(mtls_server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, mtls_server.port)) as channel:
        await _unavailable(say_hello(channel, "x"))


async def test_mtls_with_certificate_from_another_ca_is_refused(
    mtls_server: BuiltServer, pki: Pki, other_pki: Pki
) -> None:
    settings = client_settings(pki, mtls_server.port, cert_file=other_pki.client, key_file=other_pki.client_key)
    async with create_channel(settings) as channel:
        await _unavailable(say_hello(channel, "x"))


async def test_mtls_still_requires_the_token(mtls_server: BuiltServer, pki: Pki) -> None:
    settings = client_settings(pki, mtls_server.port, cert_file=pki.client, key_file=pki.client_key, token=None)
    async with create_channel(settings) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await say_hello(channel, "x")
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
