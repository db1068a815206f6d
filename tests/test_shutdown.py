"""Graceful shutdown of a real process: health flips first, in-flight calls finish, a second signal is final."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from service.client import check_health, create_channel, say_hello

from .conftest import Pki, client_settings
from .processes import BIN, ServerProcess, pki_env

StartServer = Callable[..., ServerProcess]
SLOW_SERVER = [sys.executable, str(Path(__file__).with_name("slow_server.py"))]


@pytest.fixture
def start(pki: Pki) -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def _start(command: list[str], **settings: object) -> ServerProcess:
        process = ServerProcess(command, pki_env(pki, **settings))
        started.append(process)
        return process

    yield _start
    for process in started:
        process.stop()


async def _sigterm_during_slow_call(
    server: ServerProcess, channel: grpc.aio.Channel, seconds: str
) -> asyncio.Future[str]:
    """Start a call the slow servicer holds for ``seconds``; once it is in flight, send SIGTERM."""
    call = asyncio.ensure_future(say_hello(channel, seconds))
    await server.await_event("slow call started")
    server.signal(signal.SIGTERM)
    return call


async def test_sigterm_lets_in_flight_call_finish(start: StartServer, pki: Pki) -> None:
    server = start(SLOW_SERVER, HELLO_SHUTDOWN_GRACE_SECONDS=20)
    port = server.serving_port()
    async with create_channel(client_settings(pki, port, timeout=20)) as channel:
        call = await _sigterm_during_slow_call(server, channel, "1.5")
        await server.await_event("stop signal: shutting down")
        assert await call == "Hello, 1.5!"
    assert await asyncio.to_thread(server.wait) == 0
    assert server.events[-1]["event"] == "stopped"


async def test_no_new_calls_after_sigterm(start: StartServer, pki: Pki) -> None:
    server = start(SLOW_SERVER, HELLO_SHUTDOWN_GRACE_SECONDS=20)
    port = server.serving_port()
    async with create_channel(client_settings(pki, port, timeout=20)) as channel:
        in_flight = await _sigterm_during_slow_call(server, channel, "2")
        await server.await_event("refusing new calls")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await say_hello(channel, "0")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await in_flight == "Hello, 2!"
    assert await asyncio.to_thread(server.wait) == 0


async def test_second_signal_stops_at_once(start: StartServer, pki: Pki) -> None:
    server = start(SLOW_SERVER, HELLO_SHUTDOWN_GRACE_SECONDS=60)
    port = server.serving_port()
    async with create_channel(client_settings(pki, port, timeout=60)) as channel:
        call = await _sigterm_during_slow_call(server, channel, "60")
        await server.await_event("stop signal: shutting down")
        began = time.monotonic()
        server.signal(signal.SIGINT)
        assert await asyncio.to_thread(server.wait, 20) == 1
        assert time.monotonic() - began < 20
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
    # The access line records what the caller got, not what the cancelled handler would have sent.
    [line] = [e for e in server.events if e["event"] == "rpc" and e["method"].endswith("/SayHello")]
    assert (line["code"], line["level"]) == (error.value.code().name, "error")


async def test_a_call_cut_off_by_the_grace_period_is_logged_as_its_caller_saw_it(start: StartServer, pki: Pki) -> None:
    server = start(SLOW_SERVER, HELLO_SHUTDOWN_GRACE_SECONDS=1)
    port = server.serving_port()
    async with create_channel(client_settings(pki, port, timeout=60)) as channel:
        call = await _sigterm_during_slow_call(server, channel, "60")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
    assert await asyncio.to_thread(server.wait, 20) == 0
    [line] = [e for e in server.events if e["event"] == "rpc" and e["method"].endswith("/SayHello")]
    assert line["code"] == error.value.code().name


async def test_drain_keeps_serving_while_health_says_not_serving(start: StartServer, pki: Pki) -> None:
    server = start([str(BIN / "hello-server")], HELLO_DRAIN_SECONDS=30)
    port = server.serving_port()
    async with create_channel(client_settings(pki, port)) as channel:
        assert await check_health(channel) == "SERVING"
        server.signal(signal.SIGTERM)
        await server.await_event("draining")
        assert await check_health(channel) == "NOT_SERVING"
        assert await check_health(channel, "rpc_package.HelloWorldService") == "NOT_SERVING"
        assert await say_hello(channel, "during drain") == "Hello, during drain!"
        # The drain is long; a second signal cuts it short (a SIGTERM within half a second of the
        # first would count as the same one: make forwards its process group's).
        server.signal(signal.SIGINT)
        assert await asyncio.to_thread(server.wait, 20) == 1


async def test_drain_then_grace_then_exit_0(start: StartServer, pki: Pki) -> None:
    server = start([str(BIN / "hello-server")], HELLO_DRAIN_SECONDS=1)
    port = server.serving_port()
    async with create_channel(client_settings(pki, port)) as channel:
        server.signal(signal.SIGTERM)
        began = time.monotonic()
        await server.await_event("draining")
        assert await say_hello(channel, "new call while draining") == "Hello, new call while draining!"
        assert await asyncio.to_thread(server.wait, 20) == 0
    assert time.monotonic() - began >= 1.0


@pytest.mark.parametrize(("setting", "loop"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
async def test_serves_and_stops_on_the_loop_asked_for(start: StartServer, pki: Pki, setting: str, loop: str) -> None:
    server = start([str(BIN / "hello-server")], HELLO_LOOP=setting)
    serving = await server.await_event("serving")
    assert serving["loop"] == loop
    async with create_channel(client_settings(pki, int(serving["port"]))) as channel:
        assert await say_hello(channel, "Loop") == "Hello, Loop!"
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0
    assert server.events[-1]["event"] == "stopped"
