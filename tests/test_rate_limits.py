"""Limits: a noisy principal is slowed while others are not; a server-wide cap on calls in flight; an address
that keeps failing auth has its failures refused while valid callers, from it or elsewhere, are served."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.client import check_health, create_channel, say_hello
from service.generated.rpc_package import helloworld_pb2 as pb
from service.hello import HelloServicer
from service.server.lifecycle import start, stop

from .conftest import Pki, build_hello, client_settings, running, secret, server_settings

NOISY, QUIET = secret("noisy-token-0123456789-Kq7Wm2Xp9R"), secret("quiet-token-0123456789-Kq7Wm2Xp9R")


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"noisy:{NOISY}\nquiet:{QUIET}\n")
    return path


async def _code(channel: grpc.aio.Channel, name: str = "x") -> grpc.aio.AioRpcError | None:
    try:
        await say_hello(channel, name)
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def test_noisy_principal_is_limited_and_others_are_not(pki: Pki, tokens: Path) -> None:
    settings = server_settings(pki, auth={"tokens_file": tokens}, rate_limit={"per_second": 0.5, "burst": 3})
    async with running(settings) as built:
        # No retries: the client library would wait out the server's pushback and be served (test_resilience.py).
        noisy_settings = client_settings(pki, built.port, token=NOISY, retry={"max_attempts": 1})
        async with create_channel(noisy_settings) as noisy:
            results = [await _code(noisy) for _ in range(5)]
            # Health is public and never limited.
            assert await check_health(noisy) == "SERVING"
        async with create_channel(client_settings(pki, built.port, token=QUIET)) as quiet:
            assert [await _code(quiet) for _ in range(3)] == [None, None, None]
        limited = built.metrics.registry.get_sample_value("hello_rate_limited_total", {"limit": "rate"})
    assert limited == 2
    assert results[:3] == [None, None, None]
    for error in results[3:]:
        assert error is not None
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details().startswith("rate limit of 0.5 calls per second exceeded; retry after ")
        trailers = dict(list(error.trailing_metadata() or ()))
        assert 0 < float(trailers["retry-after"]) <= 2
        assert "x-request-id" in trailers


class BlockingHello(HelloServicer):
    """SayHello waits until released, so calls can be held in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = 0

    async def SayHello(self, request: pb.HelloRequest, context: Any) -> pb.HelloReply:
        self.entered += 1
        await self.release.wait()
        return await super().SayHello(request, context)


async def test_concurrency_cap_refuses_beyond_it_and_recovers(pki: Pki) -> None:
    servicer = BlockingHello()
    settings = server_settings(pki, rate_limit={"max_concurrent_calls": 2})
    async with running(settings, servicer) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            held = [asyncio.ensure_future(say_hello(channel, f"held{i}")) for i in range(2)]
            while servicer.entered < 2:  # noqa: ASYNC110 - both calls reach the handler within a few loop turns
                await asyncio.sleep(0)
            refused = await _code(channel, "third")
            # Health is exempt: probes get through a full server.
            assert await check_health(channel) == "SERVING"
            servicer.release.set()
            assert await asyncio.gather(*held) == ["Hello, held0!", "Hello, held1!"]
            assert await _code(channel, "after") is None
        assert built.metrics.registry.get_sample_value("hello_rate_limited_total", {"limit": "concurrency"}) == 1
    assert refused is not None
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details() == "server busy: 2 calls in flight; retry shortly"


class _on_both_loopbacks:
    """A started server, the main one listening on ::1 too, at the same port and with the same TLS:
    two peer addresses on one machine (grpc binds only 127.0.0.1 for "localhost" on some releases)."""

    def __init__(self, settings: Any, pki: Pki) -> None:
        self._settings, self._pki = settings, pki

    async def __aenter__(self) -> Any:
        built = await build_hello(self._settings)
        key_pair = (self._pki.server_key.read_bytes(), self._pki.server.read_bytes())
        built.server.add_secure_port(f"[::1]:{built.port}", grpc.ssl_server_credentials([key_pair]))
        self._built = built
        await start(built)
        return built

    async def __aexit__(self, *exc: object) -> None:
        await stop(self._built, None)


async def test_address_failing_auth_is_throttled_while_its_valid_callers_are_served(pki: Pki) -> None:
    settings = server_settings(pki, rate_limit={"auth_failure_burst": 3, "auth_failures_per_second": 0.1})
    async with _on_both_loopbacks(settings, pki) as built:
        bad = client_settings(pki, built.port, target=f"ipv4:127.0.0.1:{built.port}", server_name="localhost")
        good = client_settings(pki, built.port, target=f"ipv6:[::1]:{built.port}", server_name="localhost")
        async with create_channel(bad.model_copy(update={"token": None})) as guesser:
            guesses = [await _code(guesser) for _ in range(4)]
            # A caller with a valid token behind the same address (a NAT, a proxy, a sidecar),
            # while the guesser keeps trickling: it is served, every time.
            async with create_channel(bad) as same_address:
                neighbour, trickle = [], []
                for _ in range(3):
                    neighbour.append(await _code(same_address))
                    trickle.append(await _code(guesser))
        async with create_channel(good.model_copy(update={"token": None})) as other_address:
            other_failure = await _code(other_address)  # its own bucket: not throttled
        failures = built.metrics.registry.get_sample_value
        assert failures("hello_auth_failures_total", {"reason": "missing"}) == 4
        assert failures("hello_auth_failures_total", {"reason": "throttled"}) == 4
    assert [e.code() for e in guesses[:3] if e] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    for refused in (guesses[3], *trickle):
        assert refused is not None
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many failed authentications from this address" in refused.details()
    assert neighbour == [None, None, None]
    assert other_failure is not None
    assert other_failure.code() == grpc.StatusCode.UNAUTHENTICATED
