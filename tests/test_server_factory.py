"""build_server: what it builds from Settings, and what it refuses to build."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from service.client import create_channel, say_hello
from service.config.settings import TlsSettings
from service.errors import StartupError
from service.generated.rpc_package import helloworld_pb2, helloworld_pb2_grpc
from service.security.dev_pki import make_ca, make_leaf
from service.server.factory import BuiltServer

from .conftest import Pki, build_hello, client_settings, running, server_settings


async def test_port_zero_binds_a_free_port(pki: Pki) -> None:
    built = await build_hello(server_settings(pki))
    try:
        assert built.port > 0
        assert built.tls is not None
        assert not built.tls.mutual
    finally:
        for server in built.servers:
            await server.stop(None)


async def test_second_server_on_a_busy_port_is_refused(server: BuiltServer, pki: Pki) -> None:
    # grpc's default SO_REUSEPORT would let this bind succeed and split traffic silently.
    with pytest.raises(
        StartupError, match=f"HELLO_PORT: cannot listen on 127.0.0.1:{server.port}: Address already in use"
    ):
        await build_hello(server_settings(pki, port=server.port))


async def test_insecure_mode_serves_plaintext_with_token_auth(pki: Pki) -> None:
    settings = server_settings(pki, tls=TlsSettings(), insecure=True)
    with capture_logs() as logs:
        async with running(settings) as built, grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            stub = helloworld_pb2_grpc.HelloWorldServiceStub(channel)
            request = helloworld_pb2.HelloRequest(name="plain")
            reply = await stub.SayHello(request, metadata=(("authorization", f"Bearer {pki.token}"),), timeout=5)
            assert reply.message == "Hello, plain!"
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.SayHello(request, timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert any(e["log_level"] == "warning" and "without TLS" in e["event"] for e in logs)


async def test_certificate_expiring_soon_warns_but_serves(pki: Pki, tmp_path: Path) -> None:
    ca, ca_key = make_ca()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert, key = make_leaf(ca, ca_key, "localhost", sans=["localhost", "127.0.0.1"], days=11, start=start)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    settings = server_settings(pki, tls={"cert_file": tmp_path / "cert.pem", "key_file": tmp_path / "key.pem"})
    with capture_logs() as logs:
        async with (
            running(settings) as built,
            create_channel(client_settings(pki, built.port, ca_file=tmp_path / "ca.pem")) as channel,
        ):
            assert await say_hello(channel, "soon") == "Hello, soon!"
    [warning] = [e for e in logs if e["event"] == "certificate expires soon"]
    assert warning["log_level"] == "warning"
    assert warning["setting"] == "HELLO_TLS__CERT_FILE"
