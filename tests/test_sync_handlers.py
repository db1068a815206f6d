"""Sync handlers (grpc's sync API) run in the bounded pool, never on the loop, with grpc's sync context API;
an ``async def`` that blocks the loop is reported with where it blocks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import check_health
from service.identity import Caller, caller
from service.registry import Registry
from service.testing import Pki, serve

from .blocking_app import SERVICE
from .processes import BIN, ServerProcess, pki_env
from .test_own_service import ROOT

POOL, CALLS = 10, 50


def _app(**handlers: grpc.RpcMethodHandler[Any, Any]) -> Any:
    def app(registry: Registry) -> None:
        registry.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tests.Sync", handlers),))

    return app


async def _until(condition: Any, seconds: float = 10) -> None:
    """Poll ``condition`` every 10 ms, for at most ``seconds``."""
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


async def test_sync_calls_fill_the_pool_and_no_more_while_health_answers(pki: Pki) -> None:
    release, lock = threading.Event(), threading.Lock()
    running, most, threads = [0], [0], set()

    def block(request: bytes, context: Any) -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.get_ident())
        try:
            release.wait(10)
        finally:
            with lock:
                running[0] -= 1
        return request

    app = _app(Block=grpc.unary_unary_rpc_method_handler(block))
    async with serve(app, pki=pki, handler_threads=POOL) as stack:
        method = stack.channel.unary_unary("/tests.Sync/Block")
        calls = [asyncio.ensure_future(method(b"%d" % i, timeout=20)) for i in range(CALLS)]
        try:
            await _until(lambda: running[0] == POOL)
            # Every thread of the pool is blocked, forty calls wait for one: the loop still serves.
            assert await check_health(stack.channel, "", timeout=2) == "SERVING"
            assert running[0] == POOL
        finally:
            release.set()
        assert sorted(await asyncio.gather(*calls)) == sorted(b"%d" % i for i in range(CALLS))
    assert most[0] == POOL
    assert len(threads) == POOL
    assert threading.get_ident() not in threads  # never on the loop's thread


async def test_a_sync_handler_has_grpcs_sync_context_and_the_calls_context(pki: Pki) -> None:
    seen: dict[str, Any] = {}

    def order(request: bytes, context: Any) -> bytes:
        seen["metadata"] = dict(context.invocation_metadata())
        seen["remaining"] = context.time_remaining()
        seen["active"] = context.is_active()
        seen["peer"] = context.peer()
        seen["security"] = context.auth_context().get("transport_security_type")
        seen["caller"] = caller()
        seen["thread"] = threading.current_thread().name
        structlog.get_logger("orders").info("looking the order up")
        context.set_trailing_metadata((("orders-shard", "7"),))
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("no order 42")
        return b""

    async with serve(_app(Get=grpc.unary_unary_rpc_method_handler(order)), pki=pki) as stack:
        call = stack.channel.unary_unary("/tests.Sync/Get")(b"42", timeout=5, metadata=(("x-team", "orders"),))
        with capture_logs(processors=[merge_contextvars]) as logs, pytest.raises(grpc.aio.AioRpcError) as error:
            await call
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.NOT_FOUND, "no order 42")
    trailers = {key: value for key, value in error.value.trailing_metadata() or ()}
    assert trailers["orders-shard"] == "7"
    assert "x-request-id" in trailers
    assert seen["metadata"]["x-team"] == "orders"
    assert 0 < seen["remaining"] <= 5
    assert seen["active"] is True
    assert seen["peer"].startswith("ipv4:127.0.0.1:")
    assert seen["security"] == [b"ssl"]
    assert seen["caller"] == Caller("dev", "token")
    assert seen["thread"].startswith("hello-handler-")
    [line] = [entry for entry in logs if entry["event"] == "looking the order up"]
    assert (line["request_id"], line["principal"]) == (trailers["x-request-id"], "dev")


async def test_a_sync_generator_is_closed_when_its_caller_cancels(pki: Pki) -> None:
    closed, ended = threading.Event(), threading.Event()
    actives: list[bool] = []

    def forever(request: bytes, context: Any) -> Iterator[bytes]:
        context.add_callback(ended.set)
        try:
            while True:
                actives.append(context.is_active())
                yield b"tick"
        finally:
            closed.set()  # GeneratorExit: the stack stopped taking replies and closed the generator

    async with serve(_app(Ticks=grpc.unary_stream_rpc_method_handler(forever)), pki=pki) as stack:
        call = stack.channel.unary_stream("/tests.Sync/Ticks")(b"", timeout=10)
        assert [await call.read(), await call.read()] == [b"tick", b"tick"]
        call.cancel()
        await _until(closed.is_set)
        assert ended.is_set()
    assert all(actives)


async def test_a_sync_request_iterator_raises_an_rpc_error_when_its_caller_cancels(pki: Pki) -> None:
    raised: list[BaseException] = []

    def count(requests: Iterator[bytes], context: Any) -> bytes:
        try:
            return b"%d" % sum(1 for _ in requests)
        except grpc.RpcError as error:
            raised.append(error)
            raise

    async with serve(_app(Count=grpc.stream_unary_rpc_method_handler(count)), pki=pki) as stack:
        call = stack.channel.stream_unary("/tests.Sync/Count")(timeout=10)
        await call.write(b"one")
        await asyncio.sleep(0)
        call.cancel()
        await _until(lambda: bool(raised))
    assert "the call has ended" in str(raised[0])


@pytest.fixture
def blocking(pki: Pki) -> Iterator[ServerProcess]:
    server = ServerProcess([str(BIN / "hello-server")], pki_env(pki, HELLO_APP="tests.blocking_app:register"), ROOT)
    server.port = server.serving_port()  # type: ignore[attr-defined]
    yield server
    server.stop()


async def test_an_async_handler_that_blocks_the_loop_is_reported_with_where(blocking: ServerProcess, pki: Pki) -> None:
    from service.client import create_channel

    from .conftest import client_settings

    async with create_channel(client_settings(pki, blocking.port)) as channel:  # type: ignore[attr-defined]
        assert await channel.unary_unary(f"/{SERVICE}/Sync")(b"0.5", timeout=5) == b"slept"
        assert await channel.unary_unary(f"/{SERVICE}/Async")(b"0.5", timeout=5) == b"slept"
    warning = await blocking.await_event("event loop blocked", timeout=10)
    assert warning["level"] == "warning"
    assert warning["blocked_seconds"] >= 0.1
    assert any("blocking_app.py" in frame and "blocks_the_loop" in frame for frame in warning["where"])
    # The sync handler's 0.5 s, in its thread, blocked nothing: the one report is the async one's.
    assert [e["event"] for e in blocking.events].count("event loop blocked") == 1
