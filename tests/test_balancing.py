"""Client-side balancing and retries: calls spread over every backend and survive one going away."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from service.client import create_channel, say_hello
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, running, server_settings
from .spy import SpyServicer

CALLS = 90
DEADLINE = 20.0  # every loop below stops by itself: a bounded count of calls, within this time


@pytest.fixture
async def backends(pki: Pki) -> object:
    spies = [SpyServicer() for _ in range(3)]
    async with running(server_settings(pki), spies[0]) as a, running(server_settings(pki), spies[1]) as b:
        async with running(server_settings(pki), spies[2]) as c:
            yield [a, b, c], spies


def _target(servers: list[BuiltServer]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


async def test_calls_spread_over_all_backends(pki: Pki, backends: object) -> None:
    servers, spies = backends  # type: ignore[misc]
    async with create_channel(client_settings(pki, 0, target=_target(servers), server_name="localhost")) as channel:
        # round_robin only uses connected backends: the first calls may find some still connecting.
        for _ in range(1000):
            if all(spy.entered for spy in spies):
                break
            await say_hello(channel, "warm-up")
        for spy in spies:
            spy.entered.clear()
        replies = [await say_hello(channel, f"n{i}") for i in range(CALLS)]
    assert replies == [f"Hello, n{i}!" for i in range(CALLS)]
    counts = [len(spy.entered) for spy in spies]
    assert sum(counts) == CALLS
    assert all(count >= CALLS // 6 for count in counts), counts  # round robin, not pick-first


async def test_no_call_fails_when_a_backend_stops_mid_run(pki: Pki, backends: object) -> None:
    servers, spies = backends  # type: ignore[misc]
    failures: list[grpc.StatusCode] = []
    done, halfway = [0], asyncio.Event()
    settings = client_settings(pki, 0, target=_target(servers), server_name="localhost")
    async with create_channel(settings) as channel:

        async def worker(name: str) -> None:
            for i in range(CALLS // 3):
                try:
                    await say_hello(channel, f"{name}{i}")
                except grpc.aio.AioRpcError as error:
                    failures.append(error.code())
                done[0] += 1
                if done[0] == CALLS // 2:
                    halfway.set()

        workers = [asyncio.ensure_future(worker(f"w{k}-")) for k in range(6)]
        await asyncio.wait_for(halfway.wait(), DEADLINE)
        # Stop one backend mid-run the way hello-server's lifecycle does: health says NOT_SERVING
        # (clients watching it move away), a short drain, then no new calls and a grace period.
        await servers[1].health.enter_graceful_shutdown()
        at_flip = len(spies[1].entered)
        await asyncio.sleep(0.2)  # HELLO_DRAIN_SECONDS, in small
        at_stop = len(spies[1].entered)
        await servers[1].server.stop(0.5)
        await asyncio.wait_for(asyncio.gather(*workers), DEADLINE)
    assert failures == []
    # The channel watched health and moved away: at most the calls already on their way (one per worker).
    assert at_stop - at_flip <= len(workers)
    assert sum(len(s.entered) for s in spies) >= 2 * CALLS


async def test_dns_target_reaches_the_server(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, 0, target=f"dns:///localhost:{server.port}")) as channel:
        assert await say_hello(channel, "dns") == "Hello, dns!"


async def test_server_name_is_still_verified(server: BuiltServer, pki: Pki) -> None:
    target = f"ipv4:127.0.0.1:{server.port}"
    async with create_channel(client_settings(pki, 0, target=target, server_name="not-in-the-cert")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await say_hello(channel, "x")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
