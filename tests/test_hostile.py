"""Hostile input: each gets the right status or a closed connection, while a well-behaved client, calling
all along, sees no error."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.client import create_channel, say_hello
from service.hello.validation import name_rule
from service.security.dev_pki import make_ca, make_leaf
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, running, server_settings

SAY_HELLO = "/rpc_package.HelloWorldService/SayHello"


@dataclass
class Bystander:
    """A well-behaved mTLS client calling in a loop (bounded) while a test attacks the server."""

    calls: int = 0
    errors: list[str] = field(default_factory=list)


@pytest.fixture
async def target(pki: Pki) -> AsyncIterator[BuiltServer]:
    settings = server_settings(pki, mtls=True, grpc={"handshake_timeout_seconds": 1})
    async with running(settings) as built:
        yield built


@pytest.fixture
async def bystander(target: BuiltServer, pki: Pki) -> AsyncIterator[Bystander]:
    record, stop = Bystander(), asyncio.Event()
    settings = client_settings(pki, target.port, cert_file=pki.client, key_file=pki.client_key)

    async def loop() -> None:
        async with create_channel(settings) as channel:
            for i in range(100_000):  # bounded; the test's end stops it long before
                if stop.is_set():
                    return
                try:
                    assert await say_hello(channel, f"by{i}") == f"Hello, by{i}!"
                    record.calls += 1
                except grpc.aio.AioRpcError as error:
                    record.errors.append(f"{error.code()}: {error.details()}")
                await asyncio.sleep(0.002)

    task = asyncio.ensure_future(loop())
    yield record
    stop.set()
    await asyncio.wait_for(task, 30)
    assert record.errors == []
    assert record.calls > 0


def _mtls(pki: Pki, port: int, **overrides: object) -> object:
    return client_settings(pki, port, cert_file=pki.client, key_file=pki.client_key, **overrides)


async def _status(settings: object, method: str = SAY_HELLO, body: bytes = b"\n\x01x", metadata: tuple = ()) -> object:
    async with create_channel(settings) as channel:  # type: ignore[arg-type]
        try:
            await channel.unary_unary(method)(body, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_unknown_service(target: BuiltServer, pki: Pki, bystander: Bystander) -> None:
    assert await _status(_mtls(pki, target.port), "/no.such.Service/Call") == grpc.StatusCode.UNIMPLEMENTED
    no_token = _mtls(pki, target.port, token=None)
    assert await _status(no_token, "/no.such.Service/Call") == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "metadata",
    [(("x-padding", "a" * 20_000),), (("authorization", "Bearer " + "a" * 1_000_000),)],
    ids=["metadata-over-header-limit", "1-MB-token"],
)
async def test_oversized_metadata(target: BuiltServer, pki: Pki, bystander: Bystander, metadata: tuple) -> None:
    settings = _mtls(pki, target.port, token=None)
    assert await _status(settings, metadata=metadata) == grpc.StatusCode.RESOURCE_EXHAUSTED


def _tls_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.set_alpn_protocols(["h2"])
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def _closed_after(port: int, payload: bytes, context: ssl.SSLContext | None = None) -> bool:
    """Send ``payload`` (inside TLS when a context is given); True when the server closes or resets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
            sock.sendall(payload)
            while sock.recv(65536):
                pass
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True
        return True  # recv returned b"": closed


HTTP1 = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize(
    ("port_kind", "payload", "inside_tls"),
    [
        ("main", HTTP1, False),
        ("main", HTTP1, True),
        ("main", os.urandom(4096), False),
        ("main", os.urandom(4096), True),
        ("health", HTTP1, False),
        ("health", os.urandom(4096), False),
    ],
    ids=[
        "http1-plain-to-tls",
        "http1-inside-tls",
        "random-bytes-plain",
        "random-bytes-inside-tls",
        "http1-to-health",
        "random-to-health",
    ],
)
async def test_garbage_is_met_with_a_closed_connection(
    target: BuiltServer, pki: Pki, bystander: Bystander, port_kind: str, payload: bytes, inside_tls: bool
) -> None:
    port = target.port if port_kind == "main" else target.health_port
    assert port
    context = _tls_context(pki, pki.client, pki.client_key) if inside_tls else None
    assert await asyncio.to_thread(_closed_after, port, payload, context)


def _write_pair(directory: Path, name: str, cert: x509.Certificate, key: object) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())  # type: ignore[attr-defined]
    )
    return cert_path, key_path


def _bad_client_certificate(pki: Pki, directory: Path, kind: str) -> tuple[Path, Path]:
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((pki.dir / "ca-key.pem").read_bytes(), password=None)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH
    if kind == "expired":
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        cert, key = make_leaf(ca, ca_key, "expired", usage=usage, days=10, start=start)  # type: ignore[arg-type]
    elif kind == "self-signed":
        cert, key = make_ca("self-signed client")
    else:  # a certificate our CA issued, but for servers only
        cert, key = make_leaf(ca, ca_key, "server-only", usage=ExtendedKeyUsageOID.SERVER_AUTH)  # type: ignore[arg-type]
    return _write_pair(directory, kind, cert, key)


@pytest.mark.parametrize("kind", ["expired", "self-signed", "server-auth-only"])
async def test_bad_client_certificates_fail_the_handshake(
    target: BuiltServer, pki: Pki, bystander: Bystander, tmp_path: Path, kind: str
) -> None:
    cert, key = _bad_client_certificate(pki, tmp_path, kind)
    settings = client_settings(pki, target.port, cert_file=cert, key_file=key)
    assert await _status(settings) == grpc.StatusCode.UNAVAILABLE


def _hold_idle_tls(port: int, pki: Pki, count: int) -> list[ssl.SSLSocket]:
    context = _tls_context(pki, pki.client, pki.client_key)
    sockets = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(context.wrap_socket(raw, server_hostname="localhost"))
    return sockets


async def test_500_idle_tls_connections(target: BuiltServer, pki: Pki, bystander: Bystander) -> None:
    held = await asyncio.to_thread(_hold_idle_tls, target.port, pki, 500)
    try:
        assert await _status(_mtls(pki, target.port)) == grpc.StatusCode.OK
    finally:
        for sock in held:
            sock.close()


def _silent_connection_is_closed(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            return sock.recv(1) == b""  # the server gives up on the handshake and closes
        except ConnectionResetError:
            return True


async def test_silent_connection_is_closed_by_the_handshake_timeout(target: BuiltServer, bystander: Bystander) -> None:
    assert await asyncio.to_thread(_silent_connection_is_closed, target.port)


def _flood(port: int, count: int) -> int:
    opened = 0
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            opened += 1
    return opened


async def test_flood_of_new_connections(target: BuiltServer, pki: Pki, bystander: Bystander) -> None:
    assert await asyncio.to_thread(_flood, target.port, 1000) == 1000
    assert await _status(_mtls(pki, target.port)) == grpc.StatusCode.OK


NAMES = st.text(min_size=0, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
async def test_any_name_is_greeted_or_refused_exactly(server: BuiltServer, pki: Pki, name: str) -> None:
    rule = name_rule(name)
    problem = None if rule is None else f"name: {rule}"  # as Hello's servicer words it
    async with create_channel(client_settings(pki, server.port)) as channel:
        if problem is None:
            assert await say_hello(channel, name) == f"Hello, {name}!"
        else:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await say_hello(channel, name)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details() == problem
