"""grpc's interop TestService, written with grpc's sync API, through every layer: its cases, as grpc describes them.

The service (tests/interop_app) is served only through HELLO_APP by the real hello-server. Its
protos are services-only files (test.proto beside messages.proto, and a clock whose method takes
and returns well-known types): grpcurl and a v1 reflection client describe and call both, and the
policy names their methods. The cases follow doc/interop-test-descriptions.md in grpc/grpc.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from service.client import create_channel

from .conftest import Pki, client_settings
from .processes import BIN, ServerProcess, pki_env, run
from .test_own_service import _files, _grpcurl, _reflect, _scrape

ROOT = Path(__file__).resolve().parent.parent
INTEROP_APP = Path(__file__).resolve().parent / "interop_app"
TEST_SERVICE, CLOCK = "grpc.testing.TestService", "clock.v1.ClockService"
REFLECTION = ("grpc.reflection.v1.ServerReflection/*", "grpc.reflection.v1alpha.ServerReflection/*")


@dataclass(frozen=True)
class Interop:
    """The generated modules of the interop app, in a package ``interop`` under ``root``."""

    root: Path
    messages: ModuleType
    empty: ModuleType
    test: ModuleType
    clock: ModuleType


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    root = tmp_path_factory.mktemp("interop-outside")
    package = root / "interop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(INTEROP_APP / "app.py", package / "app.py")
    generate = [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--protos", str(INTEROP_APP / "protos")]
    result = run([*generate, "--out", str(package / "generated")], {}, timeout=60)
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(root))
    try:
        from interop.generated.clock.v1 import clock_pb2_grpc  # type: ignore[import-not-found]
        from interop.generated.grpc.testing import (  # type: ignore[import-not-found]
            empty_pb2,
            messages_pb2,
            test_pb2_grpc,
        )

        yield Interop(root, messages_pb2, empty_pb2, test_pb2_grpc, clock_pb2_grpc)
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def server(pki: Pki, interop: Interop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """hello-server serving the interop app, with a policy for its methods (and reflection) and 1 MiB messages."""
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    allowed = [f"{TEST_SERVICE}/*", f"{CLOCK}/Now", *REFLECTION]
    policy.write_text(f"[allow]\ndev = {json.dumps(allowed)}\n")
    env = pki_env(
        pki,
        HELLO_APP="interop.app:register",
        PYTHONPATH=interop.root,
        HELLO_MAX_MESSAGE_BYTES=1 << 20,
        HELLO_AUTH__POLICY_FILE=policy,
    )
    process = ServerProcess([str(BIN / "hello-server")], env)
    process.port = process.serving_port()  # type: ignore[attr-defined]
    yield process
    process.stop()


@pytest.fixture
async def channel(server: ServerProcess, pki: Pki) -> AsyncIterator[grpc.aio.Channel]:
    async with create_channel(client_settings(pki, server.port)) as opened:  # type: ignore[attr-defined]
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel, interop: Interop) -> Any:
    return interop.test.TestServiceStub(channel)


def _params(m: ModuleType, *sizes: int, interval_us: int = 0) -> list[Any]:
    return [m.ResponseParameters(size=size, interval_us=interval_us) for size in sizes]


async def _requests(messages: list[Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield message


async def test_empty_unary(stub: Any, interop: Interop) -> None:
    assert await stub.EmptyCall(interop.empty.Empty(), timeout=5) == interop.empty.Empty()


async def test_large_unary(stub: Any, interop: Interop) -> None:
    m = interop.messages
    request = m.SimpleRequest(response_size=314159, payload=m.Payload(body=b"\0" * 271828))
    reply = await stub.UnaryCall(request, timeout=5)
    assert reply.payload.body == b"\0" * 314159


async def test_client_streaming(stub: Any, interop: Interop) -> None:
    m = interop.messages
    requests = [m.StreamingInputCallRequest(payload=m.Payload(body=b"\0" * n)) for n in (27182, 8, 1828, 45904)]
    reply = await stub.StreamingInputCall(_requests(requests), timeout=5)
    assert reply.aggregated_payload_size == 74922


async def test_server_streaming(stub: Any, interop: Interop) -> None:
    m = interop.messages
    call = stub.StreamingOutputCall(
        m.StreamingOutputCallRequest(response_parameters=_params(m, 31415, 9, 2653, 58979)), timeout=5
    )
    assert [len(reply.payload.body) async for reply in call] == [31415, 9, 2653, 58979]


async def test_ping_pong(stub: Any, interop: Interop) -> None:
    m = interop.messages
    call = stub.FullDuplexCall(timeout=10)
    for request_size, reply_size in ((27182, 31415), (8, 9), (1828, 2653), (45904, 58979)):
        await call.write(
            m.StreamingOutputCallRequest(
                response_parameters=_params(m, reply_size), payload=m.Payload(body=b"\0" * request_size)
            )
        )
        reply = await call.read()  # each reply before the next request: one thread serves the whole call
        assert len(reply.payload.body) == reply_size
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK


async def test_empty_stream(stub: Any) -> None:
    call = stub.FullDuplexCall(_requests([]), timeout=5)
    assert [reply async for reply in call] == []


async def test_half_duplex(stub: Any, interop: Interop) -> None:
    m = interop.messages
    requests = [m.StreamingOutputCallRequest(response_parameters=_params(m, n)) for n in (3, 1, 4)]
    call = stub.HalfDuplexCall(_requests(requests), timeout=5)
    assert [len(reply.payload.body) async for reply in call] == [3, 1, 4]


@pytest.mark.parametrize(
    "message", ["test status message", "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"]
)
async def test_status_code_and_message(stub: Any, interop: Interop, message: str) -> None:
    m = interop.messages
    status = m.EchoStatus(code=grpc.StatusCode.UNKNOWN.value[0], message=message)
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.UnaryCall(m.SimpleRequest(response_status=status), timeout=5)
    assert (unary.value.code(), unary.value.details()) == (grpc.StatusCode.UNKNOWN, message)
    call = stub.FullDuplexCall(_requests([m.StreamingOutputCallRequest(response_status=status)]), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        _ = [reply async for reply in call]
    assert (streamed.value.code(), streamed.value.details()) == (grpc.StatusCode.UNKNOWN, message)


async def test_custom_metadata(stub: Any, interop: Interop) -> None:
    m = interop.messages
    metadata = (("x-grpc-test-echo-initial", "test_initial_metadata_value"), ("x-grpc-test-echo-trailing-bin", b"\xab"))
    call = stub.UnaryCall(m.SimpleRequest(response_size=314159), metadata=metadata, timeout=5)
    await call
    assert ("x-grpc-test-echo-initial", "test_initial_metadata_value") in list(await call.initial_metadata())
    assert ("x-grpc-test-echo-trailing-bin", b"\xab") in list(await call.trailing_metadata())
    duplex = stub.FullDuplexCall(
        _requests([m.StreamingOutputCallRequest(response_parameters=_params(m, 314159))]), metadata=metadata, timeout=5
    )
    assert [len(reply.payload.body) async for reply in duplex] == [314159]
    assert ("x-grpc-test-echo-initial", "test_initial_metadata_value") in list(await duplex.initial_metadata())
    assert ("x-grpc-test-echo-trailing-bin", b"\xab") in list(await duplex.trailing_metadata())


async def test_unimplemented_method_and_service(stub: Any, channel: grpc.aio.Channel, interop: Interop) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as method:
        await stub.UnimplementedCall(interop.empty.Empty(), timeout=5)
    assert method.value.code() is grpc.StatusCode.UNIMPLEMENTED
    unregistered = interop.test.UnimplementedServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as service:
        await unregistered.UnimplementedCall(interop.empty.Empty(), timeout=5)
    assert service.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_cancel_after_begin(stub: Any) -> None:
    call = stub.StreamingInputCall(timeout=5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await call.code() is grpc.StatusCode.CANCELLED


async def test_cancel_after_first_response(stub: Any, interop: Interop) -> None:
    m = interop.messages
    call = stub.FullDuplexCall(timeout=10)
    await call.write(
        m.StreamingOutputCallRequest(response_parameters=_params(m, 31415), payload=m.Payload(body=b"\0" * 27182))
    )
    assert len((await call.read()).payload.body) == 31415
    call.cancel()
    assert await call.code() is grpc.StatusCode.CANCELLED


async def test_timeout_on_sleeping_server(stub: Any, interop: Interop, server: ServerProcess) -> None:
    m = interop.messages
    # The sync handler sleeps 2 s in its thread; the caller's deadline ends the call long before.
    request = m.StreamingOutputCallRequest(response_parameters=_params(m, 1, interval_us=2_000_000))
    started = time.monotonic()
    call = stub.FullDuplexCall(_requests([request]), timeout=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        _ = [reply async for reply in call]
    assert error.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    while True:
        line = await server.await_event("rpc", timeout=10)
        if line["method"] == f"/{TEST_SERVICE}/FullDuplexCall" and line["code"] == "DEADLINE_EXCEEDED":
            break


async def test_every_call_passes_the_layers(stub: Any, interop: Interop, server: ServerProcess, pki: Pki) -> None:
    await stub.EmptyCall(interop.empty.Empty(), timeout=5, metadata=(("x-request-id", "interop-layers"),))
    while (line := await server.await_event("rpc", timeout=10))["request_id"] != "interop-layers":
        pass
    assert (line["method"], line["code"], line["principal"]) == (f"/{TEST_SERVICE}/EmptyCall", "OK", "dev")
    async with create_channel(client_settings(pki, server.port, token=None)) as anonymous:  # type: ignore[attr-defined]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await interop.test.TestServiceStub(anonymous).EmptyCall(interop.empty.Empty(), timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    metrics_port = next(e for e in server.events if e.get("event") == "serving")["metrics_port"]
    text = await asyncio.to_thread(_scrape, metrics_port)
    assert f'grpc_server_handled_total{{grpc_code="OK",grpc_method="EmptyCall",grpc_service="{TEST_SERVICE}"' in text
    # The clock's methods are known at start-up, as every registered service's: their series exist before any call.
    assert f'grpc_server_started_total{{grpc_method="Now",grpc_service="{CLOCK}",grpc_type="unary"}}' in text


async def test_grpcurl_describes_and_calls_services_only_protos(server: ServerProcess, pki: Pki) -> None:
    port = server.port  # type: ignore[attr-defined]
    listed = (await _grpcurl(pki, port, "list")).split()
    assert {TEST_SERVICE, CLOCK} <= set(listed)
    assert "grpc.testing.UnimplementedService" not in listed
    described = await _grpcurl(pki, port, "describe", TEST_SERVICE)
    assert "rpc UnaryCall ( .grpc.testing.SimpleRequest ) returns ( .grpc.testing.SimpleResponse );" in described
    assert "rpc Now ( .google.protobuf.Empty ) returns ( .google.protobuf.Timestamp );" in await _grpcurl(
        pki, port, "describe", CLOCK
    )
    assert "int32 response_size = 2;" in await _grpcurl(pki, port, "describe", "grpc.testing.SimpleRequest")
    reply = json.loads(await _grpcurl(pki, port, f"{TEST_SERVICE}/UnaryCall", flags=("-d", '{"responseSize": 3}')))
    assert reply == {"payload": {"body": "AAAA"}}
    now = json.loads(await _grpcurl(pki, port, f"{CLOCK}/Now"))
    assert now.endswith("Z")


async def test_a_v1_reflection_client_resolves_services_only_files(channel: grpc.aio.Channel) -> None:
    test_file, *imported = _files(await _reflect(channel, file_containing_symbol=TEST_SERVICE))
    assert (test_file.name, test_file.message_type) == ("grpc/testing/test.proto", [])
    assert set(test_file.dependency) == {"grpc/testing/empty.proto", "grpc/testing/messages.proto"}
    assert {f.name for f in imported} == set(test_file.dependency)
    clock_file, *_ = _files(await _reflect(channel, file_containing_symbol=CLOCK))
    assert clock_file.name == "clock/v1/clock.proto"
    assert set(clock_file.dependency) == {"google/protobuf/empty.proto", "google/protobuf/timestamp.proto"}
