"""The client library's resilience: failing backends are ejected and come back, retries are throttled,
obey the server's pushback, and never outlast the call's deadline. Loopback backends, bounded loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest

from service.client import create_channel, say_hello
from service.config.settings import ClientSettings
from service.generated.rpc_package import helloworld_pb2 as pb
from service.hello import HelloServicer
from service.server.factory import BuiltServer
from service.status_details import NO_RETRY, abort, retry_info

from .conftest import Pki, client_settings, running, server_settings
from .test_rate_limits import BlockingHello

DEADLINE = 15.0  # every loop below ends by itself, by count and by this time


class ControlledHello(HelloServicer):
    """SayHello that notes each attempt's time and fails with ``failing`` (a code) while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[float] = []
        self.failing: grpc.StatusCode | None = None
        self.delay = 0.0
        self.pushback_ms: int | None = None

    async def SayHello(self, request: pb.HelloRequest, context: Any) -> pb.HelloReply:
        self.attempts.append(time.monotonic())
        if self.delay:
            await asyncio.sleep(self.delay)  # a backend slow to fail
        if self.failing is not None:
            details = (retry_info(self.pushback_ms / 1000),) if self.pushback_ms and self.pushback_ms > 0 else ()
            await abort(context, self.failing, "induced failure", *details, pushback_ms=self.pushback_ms)
        return await super().SayHello(request, context)


@pytest.fixture
async def backends(pki: Pki) -> AsyncIterator[tuple[list[BuiltServer], list[ControlledHello]]]:
    servicers = [ControlledHello() for _ in range(3)]
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(running(server_settings(pki), s)) for s in servicers]
        yield servers, servicers


def balanced(pki: Pki, servers: list[BuiltServer], **overrides: Any) -> ClientSettings:
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    return client_settings(pki, 0, target=target, server_name="localhost", **overrides)


async def outcome(channel: grpc.aio.Channel, timeout: float = 5) -> grpc.StatusCode:
    try:
        await say_hello(channel, "x", timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_failing_backend_is_ejected_then_readmitted_when_it_recovers(pki: Pki, backends: Any) -> None:
    servers, servicers = backends
    bad = servicers[1]
    # Small times so the test is short; the defaults (5 s interval) eject within 10 s the same way.
    ejection = {"interval": 0.5, "base_time": 2.0, "min_calls": 5}
    async with create_channel(balanced(pki, servers, ejection=ejection)) as channel:
        for _ in range(1000):  # round robin only uses connected backends: wait for all three
            if all(s.attempts for s in servicers):
                break
            await outcome(channel)
        bad.failing = grpc.StatusCode.INTERNAL  # not retried: each failure reaches the caller
        started, failed, quiet = time.monotonic(), 0, False
        # Failing: calls until 0.6 s of calls (hundreds) gave the bad backend none: it is ejected.
        while not quiet and time.monotonic() - started < DEADLINE:
            seen, window = len(bad.attempts), time.monotonic()
            while time.monotonic() - window < 0.6:
                failed += await outcome(channel) != grpc.StatusCode.OK
            quiet = len(bad.attempts) == seen
        assert quiet, "never ejected"
        ejected_after = bad.attempts[-1] - started
        # The first count after it began failing, or the next (interval 0.5 s), ejected it.
        assert ejected_after < 2 * ejection["interval"] + 0.3, ejected_after
        assert failed > 0  # it did fail calls before it was set aside
        # Ejected: every call succeeds and none reaches it.
        seen = len(bad.attempts)
        assert [await outcome(channel) for _ in range(60)] == [grpc.StatusCode.OK] * 60
        assert len(bad.attempts) == seen
        # Recovered: after its ejection time it is tried again, succeeds, and stays in.
        bad.failing = None
        recovered = time.monotonic()
        while len(bad.attempts) == seen and time.monotonic() - recovered < DEADLINE:
            assert await outcome(channel) == grpc.StatusCode.OK
        assert len(bad.attempts) > seen, "never readmitted"
        assert [await outcome(channel) for _ in range(30)] == [grpc.StatusCode.OK] * 30
        assert len(bad.attempts) >= seen + 5  # round robin gives it its share again


async def test_never_more_than_half_the_backends_are_ejected(pki: Pki, backends: Any) -> None:
    servers, servicers = backends
    async with create_channel(balanced(pki, servers, ejection={"interval": 0.3, "min_calls": 3})) as channel:
        for _ in range(1000):
            if all(s.attempts for s in servicers):
                break
            await outcome(channel)
        for servicer in servicers[:2]:
            servicer.failing = grpc.StatusCode.INTERNAL
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # several intervals
            await outcome(channel)
        counts = [len(s.attempts) for s in servicers]
        results = [await outcome(channel) for _ in range(60)]
    grown = [len(s.attempts) - c for s, c in zip(servicers, counts, strict=True)]
    # One of the two failing backends is out; the other still gets (and fails) its share.
    out, still_in = sorted(grown[:2])
    assert out == 0, grown
    assert still_in > 0, grown
    assert results.count(grpc.StatusCode.INTERNAL) == still_in


async def test_retries_stop_when_every_backend_fails(pki: Pki, backends: Any) -> None:
    servers, servicers = backends
    for servicer in servicers:
        servicer.failing = grpc.StatusCode.UNAVAILABLE
    settings = balanced(pki, servers)
    # Fewer at once than a connection's 100 streams (HELLO_GRPC__MAX_CONCURRENT_STREAMS): a burst
    # over it on a connection whose SETTINGS have not arrived yet is refused (RST_STREAM) by grpc
    # 1.78 before any handler sees it, and would not count as an attempt.
    calls = 90
    async with create_channel(settings) as channel:
        results = await asyncio.gather(*(outcome(channel) for _ in range(calls)))
        first = sum(len(s.attempts) for s in servicers)
        results += await asyncio.gather(*(outcome(channel) for _ in range(calls)))
        second = sum(len(s.attempts) for s in servicers) - first
    assert results == [grpc.StatusCode.UNAVAILABLE] * 2 * calls
    # Without the throttle: 4 attempts each, 800. With it: only while more than half of its
    # tokens are left, one token spent per failed attempt and none earned; then none at all.
    assert calls < first <= calls + settings.retry.throttle_tokens // 2, first
    assert second == calls


async def test_the_deadline_bounds_the_whole_call_with_its_retries(pki: Pki, backends: Any) -> None:
    servers, servicers = backends
    for servicer in servicers:
        servicer.failing, servicer.delay = grpc.StatusCode.UNAVAILABLE, 0.4
    async with create_channel(balanced(pki, servers)) as channel:
        started = time.monotonic()
        code = await outcome(channel, timeout=1.0)
        took = time.monotonic() - started
    # Four attempts of 0.4 s would take 1.6 s: the deadline ends the call at 1 s, retries and all.
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1.0 <= took < 1.3, took
    assert 2 <= sum(len(s.attempts) for s in servicers) <= 3


async def test_retry_waits_the_servers_pushback(pki: Pki) -> None:
    servicer = ControlledHello()
    servicer.failing, servicer.pushback_ms = grpc.StatusCode.RESOURCE_EXHAUSTED, 400
    async with running(server_settings(pki), servicer) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:

            async def recover_after_first_attempt() -> None:
                while not servicer.attempts:  # noqa: ASYNC110 - the call reaches the handler within a few loop turns
                    await asyncio.sleep(0)
                servicer.failing = None

            recovering = asyncio.ensure_future(recover_after_first_attempt())
            assert await say_hello(channel, "later") == "Hello, later!"
            await recovering
    first, second = servicer.attempts
    assert 0.4 <= second - first < 0.7, second - first


async def test_no_retry_when_the_server_says_minus_one(pki: Pki) -> None:
    servicer = ControlledHello()
    servicer.failing, servicer.pushback_ms = grpc.StatusCode.RESOURCE_EXHAUSTED, NO_RETRY
    async with running(server_settings(pki), servicer) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            assert await outcome(channel) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(servicer.attempts) == 1


async def test_rate_limited_call_is_retried_after_the_wait_and_served(pki: Pki) -> None:
    async with running(server_settings(pki, rate_limit={"per_second": 4, "burst": 1})) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            assert await say_hello(channel, "first") == "Hello, first!"
            started = time.monotonic()
            assert await say_hello(channel, "second") == "Hello, second!"  # refused once, then served
            took = time.monotonic() - started
        limited = built.metrics.registry.get_sample_value("hello_rate_limited_total", {"limit": "rate"})
    assert limited == 1
    assert 0.2 <= took < 0.6, took  # a token every 0.25 s


async def test_concurrency_cap_refusal_is_not_retried(pki: Pki) -> None:
    servicer = BlockingHello()
    async with running(server_settings(pki, rate_limit={"max_concurrent_calls": 1}), servicer) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            held = asyncio.ensure_future(say_hello(channel, "held"))
            while servicer.entered < 1:  # noqa: ASYNC110 - the call reaches the handler within a few loop turns
                await asyncio.sleep(0)
            assert await outcome(channel) == grpc.StatusCode.RESOURCE_EXHAUSTED
            servicer.release.set()
            await held
        limited = built.metrics.registry.get_sample_value("hello_rate_limited_total", {"limit": "concurrency"})
    assert limited == 1  # one attempt: the server said -1


async def test_any_service_on_the_channel_gets_the_retry_policy() -> None:
    # A team's service, plugged in through HELLO_APP: the policy names no service, so it applies.
    attempts: list[float] = []

    async def flaky(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        return request

    handler = grpc.method_handlers_generic_handler("team.Orders", {"Get": grpc.unary_unary_rpc_method_handler(flaky)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        settings = ClientSettings(target=f"127.0.0.1:{port}", plaintext=True)
        async with create_channel(settings) as channel:
            assert await channel.unary_unary("/team.Orders/Get")(b"order-1", timeout=5) == b"order-1"
        assert len(attempts) == 2
        attempts.clear()
        no_retries = ClientSettings(target=f"127.0.0.1:{port}", plaintext=True, retry={"max_attempts": 1})
        async with create_channel(no_retries) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary("/team.Orders/Get")(b"order-2", timeout=5)
    finally:
        await server.stop(None)
    assert len(attempts) == 1  # max_attempts 1: no retries
