"""Health answers anyone, on both ports: its Watch streams, names and connections are bounded, and a flood's
memory comes back."""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client import create_channel, say_hello
from service.server.factory import BuiltServer
from service.status_details import decode

from .conftest import Pki, client_settings, running, server_settings
from .processes import BIN, ServerProcess, pki_env

SERVING = health_pb2.HealthCheckResponse.SERVING
PORTS = ["tls", "health"]


def _port(built: BuiltServer, kind: str) -> int:
    port = built.port if kind == "tls" else built.health_port
    assert port
    return port


def _channel(pki: Pki, port: int, kind: str) -> grpc.aio.Channel:
    """A channel of its own connection (no subchannel shared with other channels), sending no token."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    target = f"127.0.0.1:{port}"
    if kind == "tls":
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(pki.ca.read_bytes()), options)
    return grpc.aio.insecure_channel(target, options)


async def _watch(channel: grpc.aio.Channel, service: str = "") -> grpc.aio.UnaryStreamCall:  # type: ignore[type-arg]
    """An open Watch stream that has had its first answer; raises AioRpcError when refused."""
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
    first = await call.read()
    assert first is not grpc.aio.EOF
    if first.status != SERVING:
        await call.read()  # the end of the stream: raises with its status
    return call


async def _refused(channel: grpc.aio.Channel, service: str = "") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _watch(channel, service)
    return error.value


def _quota_subject(error: grpc.aio.AioRpcError) -> str:
    [quota] = [d for d in decode(error) if isinstance(d, error_details_pb2.QuotaFailure)]
    return quota.violations[0].subject


async def _check(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


@pytest.mark.parametrize("kind", PORTS)
async def test_watch_streams_are_capped_per_connection(pki: Pki, kind: str) -> None:
    settings = server_settings(pki, health={"max_watch_streams_per_connection": 3})
    async with running(settings) as built:
        port = _port(built, kind)
        async with _channel(pki, port, kind) as crowded, _channel(pki, port, kind) as other:
            held = [await _watch(crowded) for _ in range(3)]
            refused = await _refused(crowded)
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.details() == "at most 3 Watch streams on one connection; retry later"
            assert _quota_subject(refused) == "connection"
            # Another connection has its own allowance, and Check is never capped.
            await _watch(other)
            assert await _check(crowded) == SERVING
            # A stream that ends gives its place back (the server learns of the cancel a moment later).
            held.pop().cancel()
            codes = []
            for _ in range(200):  # bounded
                try:
                    held.append(await _watch(crowded))
                    break
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    await asyncio.sleep(0.01)
            assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert len(held) == 3
        assert built.metrics.registry.get_sample_value("hello_rate_limited_total", {"limit": "watch"}) >= 1


async def test_watch_streams_are_capped_on_the_whole_server(pki: Pki) -> None:
    settings = server_settings(pki, health={"max_watch_streams": 4})
    async with running(settings) as built:
        channels = [_channel(pki, _port(built, kind), kind) for kind in PORTS]
        try:
            # Both ports count against the one cap.
            held = [await _watch(channel) for channel in channels for _ in range(2)]
            for channel in channels:
                refused = await _refused(channel)
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert refused.details() == "at most 4 Watch streams on the server; retry later"
                assert _quota_subject(refused) == "server"
                # Probes and calls are answered at the cap.
                assert await _check(channel) == SERVING
            async with create_channel(client_settings(pki, built.port)) as calls:
                assert await say_hello(calls, "at the cap") == "Hello, at the cap!"
            assert len(held) == 4
        finally:
            for channel in channels:
                await channel.close()


@pytest.mark.parametrize("kind", PORTS)
async def test_service_names_are_bounded_and_unknown_ones_are_not_watched(pki: Pki, kind: str) -> None:
    settings = server_settings(pki, health={"max_service_name_length": 40})
    async with running(settings) as built, _channel(pki, _port(built, kind), kind) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for method in (stub.Check, stub.Watch):
            call = method(health_pb2.HealthCheckRequest(service="x" * 41), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await (call if method is stub.Check else call.read())  # type: ignore[misc]
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details() == "service: at most 40 characters, as the longest service a server may serve"
            [bad] = [d for d in decode(error.value) if isinstance(d, error_details_pb2.BadRequest)]
            assert bad.field_violations[0].field == "service"
        # A name of an allowed length that the server does not serve: Check's NOT_FOUND, and a Watch
        # gets the protocol's SERVICE_UNKNOWN, then its end (it could never become known).
        unknown = "y" * 40
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _check(channel, unknown)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=unknown), timeout=5)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await watch.read()
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details().startswith("no service of that name here")
        # What is served is watched as before.
        assert await _check(channel, "rpc_package.HelloWorldService") == SERVING
        (await _watch(channel, "rpc_package.HelloWorldService")).cancel()


# HTTP/2 as the server speaks it, read frame by frame: what it advertises, and when it pings and closes.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, SETTINGS, PING, GOAWAY = 0x0, 0x4, 0x6, 0x7
ACK = 0x1
MAX_CONCURRENT_STREAMS = 0x3
ENHANCE_YOUR_CALM = 0xB


def _frame(kind: int, flags: int = 0, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + (0).to_bytes(4, "big") + payload


@dataclass
class Connection:
    """What one raw HTTP/2 connection saw from the server."""

    max_streams: int | None = None
    pings: int = 0
    goaway: bytes | None = None
    closed: bool = False
    frames: list[int] = field(default_factory=list)


async def _open(pki: Pki, port: int, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = None
    if kind == "tls":
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost" if context else None
    )
    writer.write(PREFACE + _frame(SETTINGS))
    return reader, writer


async def _follow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pings_to_send: int = 0) -> Connection:
    """Read the server's frames until it closes; answer its pings; send ``pings_to_send`` of ours at once."""
    seen = Connection()
    writer.write(_frame(PING, payload=b"hello-01") * pings_to_send)
    while True:
        try:
            header = await reader.readexactly(9)
            payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
        except (asyncio.IncompleteReadError, ConnectionError):
            seen.closed = True
            break
        kind, flags = header[3], header[4]
        seen.frames.append(kind)
        if kind == SETTINGS and not flags & ACK:
            params = {
                int.from_bytes(payload[i : i + 2], "big"): payload[i + 2 : i + 6] for i in range(0, len(payload), 6)
            }
            if MAX_CONCURRENT_STREAMS in params:
                seen.max_streams = int.from_bytes(params[MAX_CONCURRENT_STREAMS], "big")
            writer.write(_frame(SETTINGS, ACK))
        elif kind == PING and not flags & ACK:
            seen.pings += 1
            writer.write(_frame(PING, ACK, payload))
        elif kind == GOAWAY:
            seen.goaway = payload
    writer.close()
    return seen


@pytest.mark.parametrize("kind", PORTS)
async def test_idle_connections_are_pinged_then_closed_on_both_ports(pki: Pki, kind: str) -> None:
    # 50 connections that finish the handshakes and then make no call, as the red team held open.
    policy = {"max_concurrent_streams": 7, "keepalive_time_seconds": 0.5, "max_connection_idle_seconds": 2}
    async with running(server_settings(pki, grpc=policy)) as built:
        opened = [await _open(pki, _port(built, kind), kind) for _ in range(50)]
        # Bounded: the idle limit is 2 s; without one they would stay open for ever.
        seen = await asyncio.wait_for(asyncio.gather(*(_follow(*pair) for pair in opened)), 20)
    assert all(c.closed and c.goaway is not None for c in seen), [c.frames for c in seen if not c.closed]
    assert {c.max_streams for c in seen} == {7}
    assert all(c.pings >= 1 for c in seen)  # the server's keepalive finds dead peers


@pytest.mark.parametrize("kind", PORTS)
async def test_ping_floods_are_cut_off_on_both_ports(pki: Pki, kind: str) -> None:
    async with running(server_settings(pki)) as built:
        reader, writer = await _open(pki, _port(built, kind), kind)
        seen = await asyncio.wait_for(_follow(reader, writer, pings_to_send=5), 20)
    assert seen.goaway is not None
    assert int.from_bytes(seen.goaway[4:8], "big") == ENHANCE_YOUR_CALM
    assert b"too_many_pings" in seen.goaway[8:]


@pytest.mark.parametrize("kind", PORTS)
async def test_a_watch_ends_with_its_connection_s_age(pki: Pki, kind: str) -> None:
    policy = {"max_connection_age_seconds": 1, "max_connection_age_grace_seconds": 1}
    async with running(server_settings(pki, grpc=policy)) as built, _channel(pki, _port(built, kind), kind) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=15)
        assert (await call.read()).status == SERVING
        # The connection goes after 1 s (+ jitter) and 1 s of grace, well before the call's deadline.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"^VmRSS:\s+(\d+)", status.read(), re.MULTILINE).group(1)) / 1024  # type: ignore[union-attr]


@dataclass
class Bystander:
    """Probes on the health port and calls on the TLS port, made all through a flood (bounded)."""

    answered: int = 0
    errors: list[str] = field(default_factory=list)


CONNECTIONS, ATTEMPTS = 10, 100


async def test_a_watch_flood_with_long_unique_names_is_refused_and_its_memory_returns(pki: Pki) -> None:
    server = ServerProcess([str(BIN / "hello-server")], pki_env(pki))
    try:
        serving = await server.await_event("serving")
        ports = {"tls": int(serving["port"]), "health": int(serving["health_port"])}
        record, stop = Bystander(), asyncio.Event()

        async def bystander() -> None:
            async with (
                _channel(pki, ports["health"], "health") as probes,
                create_channel(client_settings(pki, ports["tls"])) as calls,
            ):
                for i in range(100_000):  # bounded; the flood's end stops it long before
                    if stop.is_set():
                        return
                    try:
                        assert await _check(probes) == SERVING
                        assert await say_hello(calls, f"by{i}") == f"Hello, by{i}!"
                        record.answered += 1
                    except grpc.aio.AioRpcError as error:
                        record.errors.append(f"{error.code()}: {error.details()}")
                    await asyncio.sleep(0.01)

        async def flood(kind: str, name_length: int, round_: int) -> list[grpc.StatusCode]:
            # Unique names of 20 kB on the TLS port; 3 kB on the health port, whose messages are
            # smaller (grpc refuses a 20 kB one there before any code of ours runs).
            channels = [_channel(pki, ports[kind], kind) for _ in range(CONNECTIONS)]
            try:
                names = [f"{round_}-{i}-".ljust(name_length, "n") for i in range(CONNECTIONS * ATTEMPTS)]
                attempts = [_refused(channels[i % CONNECTIONS], name) for i, name in enumerate(names)]
                codes = [error.code() for error in await asyncio.gather(*attempts)]
                # And the streams that may be held: as many as each connection may hold, and one more.
                held = [await _watch(channel) for channel in channels for _ in range(8)]
                codes += [(await _refused(channel)).code() for channel in channels]
                peaks.append(rss_mib(server.proc.pid))
                for call in held:
                    call.cancel()
                return codes
            finally:
                for channel in channels:
                    await channel.close()

        # Warm up (TLS, the first calls of each kind), then measure from there.
        watching = asyncio.ensure_future(bystander())
        peaks: list[float] = []
        await flood("health", 300, -1)
        start = rss_mib(server.proc.pid)
        afters = []
        for round_ in range(2):
            for kind, name_length in (("tls", 20_000), ("health", 3_000)):
                codes = await flood(kind, name_length, round_)
                # Each long name is refused: for its length or, while its connection already has a Watch
                # stream's worth of attempts in flight (more of them overlap on a loaded machine), by the cap.
                refused = set(codes[: CONNECTIONS * ATTEMPTS])
                assert grpc.StatusCode.INVALID_ARGUMENT in refused, refused
                assert refused <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}, refused
                assert set(codes[CONNECTIONS * ATTEMPTS :]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            # Freed memory goes back to the system every few seconds (service/memory.py); poll, bounded.
            for _ in range(300):
                after = rss_mib(server.proc.pid)
                if after < start + 20:
                    break
                await asyncio.sleep(0.1)
            afters.append(after)
        stop.set()
        await asyncio.wait_for(watching, 30)
        figures = f"RSS MiB: start {start:.1f}, with streams held {peaks[1:]}, after each round {afters}"
        print(figures)
        assert all(after < start + 20 for after in afters), figures
        assert record.errors == []
        assert record.answered > 0
    finally:
        server.stop()
