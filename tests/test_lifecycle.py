"""The lifecycle object started and stopped in-process, without signals: what a test or an embedder does."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from service import (
    Lifecycle,
    Settings,
    build_server,
    capture_signals,
    check_health,
    create_channel,
    say_hello,
)

from .conftest import Pki, client_settings, hello_registry, server_settings


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Lifecycle]:
    """A Lifecycle of the Hello app, past startup(); shut down on the way out if the test did not stop it."""
    lifecycle = Lifecycle(settings, await build_server(settings, hello_registry(settings)))
    await lifecycle.startup()
    try:
        yield lifecycle
    finally:
        if not lifecycle.stopping.is_set():  # the test failed before it stopped the server
            await lifecycle.shutdown(force=True)


async def _until_health_is(channel: grpc.aio.Channel, status: str) -> None:
    """Poll health, 500 times at most, until it answers ``status``."""
    for _ in range(500):
        if await check_health(channel) == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"health never said {status}")


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_drain_serves_calls_with_health_not_serving_until_stopped_for_good(pki: Pki) -> None:
    async with started(server_settings(pki, drain_seconds=60)) as lifecycle:
        port = lifecycle.built.port
        async with create_channel(client_settings(pki, port)) as channel:
            assert await say_hello(channel, "Life") == "Hello, Life!"
            lifecycle.stop()
            await lifecycle.main_loop()  # returns at once: stop() was called
            shutdown = asyncio.ensure_future(lifecycle.shutdown())
            await _until_health_is(channel, "NOT_SERVING")
            assert await check_health(channel, "rpc_package.HelloWorldService") == "NOT_SERVING"
            assert await say_hello(channel, "during drain") == "Hello, during drain!"
            assert not shutdown.done()  # the drain goes on: 60 s
            lifecycle.stop(force=True)
            assert await asyncio.wait_for(shutdown, 10) == 1
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await say_hello(channel, "after")
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_graceful_stop_ends_with_0_and_releases_its_ports(pki: Pki) -> None:
    async with started(server_settings(pki)) as lifecycle:
        ports = (lifecycle.built.port, lifecycle.built.health_port, lifecycle.metrics_port)
        assert None not in ports
        async with create_channel(client_settings(pki, lifecycle.built.port)) as channel:
            assert await say_hello(channel, "Life") == "Hello, Life!"
        lifecycle.stop()
        await lifecycle.main_loop()
        assert await lifecycle.shutdown() == 0
        assert all(_refused(port) for port in ports if port is not None)


async def test_capture_signals_stops_on_sigterm_and_puts_the_old_handler_back(pki: Pki) -> None:
    seen: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        async with started(server_settings(pki)) as lifecycle:
            with capture_signals(lifecycle):
                signal.raise_signal(signal.SIGTERM)
                await asyncio.wait_for(lifecycle.main_loop(), 5)
            assert not lifecycle.forced.is_set()  # one signal: a graceful stop
            assert await lifecycle.shutdown() == 0
        signal.raise_signal(signal.SIGTERM)  # the handler of before, not the lifecycle's
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
