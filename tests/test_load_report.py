"""Load-aware balancing: servers report their load (ORCA) in each call's trailers, weighted_round_robin follows it."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client import create_channel, say_hello
from service.generated.rpc_package import helloworld_pb2 as pb
from service.generated.rpc_package import helloworld_pb2_grpc
from service.layers.load_report import KEY, LoadReport

from .burner_app import BURN
from .conftest import Pki, client_settings, running, server_settings
from .processes import BIN, ServerProcess, pki_env
from .recorded import recorded
from .test_grpcurl import grpcurl, tls_args

ROOT = Path(__file__).parent.parent


async def test_each_call_carries_the_process_load(pki: Pki) -> None:
    settings = server_settings(pki, load_report={"enabled": True, "sample_seconds": 0.05})
    async with running(settings) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            for _ in range(50):
                await say_hello(channel, "load")
        # grpc's Python client keeps this trailer for its balancer; grpcurl (grpc-go) shows it.
        code, out, _ = await grpcurl(
            *tls_args(pki, token=pki.token),
            "-v",
            "-d",
            '{"name": "x"}',
            f"127.0.0.1:{built.port}",
            "rpc_package.HelloWorldService/SayHello",
        )
    assert code == 0
    (encoded,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(f"{KEY}: ")]
    # An xds.data.orca.v3.OrcaLoadReport: cpu_utilization (field 1) and rps_fractional (field 6), doubles.
    tag1, cpu, tag6, rate = struct.unpack("<BdBd", base64.b64decode(encoded))
    assert (tag1, tag6) == (0x09, 0x31)
    assert 0 < cpu < 4  # the process worked: TLS, our layers, the client of this same process
    assert rate > 0  # calls since the sample before


def test_the_sample_is_cpu_time_per_second_and_calls_per_second() -> None:
    # The same arithmetic the server runs, on clocks this test sets.
    now, cpu = [100.0], [5.0]
    report = LoadReport(1.0, cpu_seconds=lambda: cpu[0], clock=lambda: now[0])
    now[0], cpu[0] = 102.0, 6.5
    report._calls = 30
    assert report.sample() == (0.75, 15.0)


@pytest.fixture
def backends(pki: Pki) -> Iterator[list[tuple[ServerProcess, int]]]:
    env = pki_env(
        pki,
        HELLO_APP="tests.burner_app:register",
        HELLO_LOAD_REPORT__ENABLED="true",
        HELLO_LOAD_REPORT__SAMPLE_SECONDS="0.25",
        HELLO_SHUTDOWN_GRACE_SECONDS="0",
        PYTHONPATH=ROOT,
    )
    started = [ServerProcess([str(BIN / "hello-server")], env) for _ in range(3)]
    try:
        yield [(server, server.serving_port()) for server in started]
    finally:
        for server in started:
            server.stop()


async def _calls(channel: grpc.aio.Channel, seconds: float) -> int:
    """SayHello back to back for ``seconds`` (at most 5000 calls); how many were made."""
    stub = helloworld_pb2_grpc.HelloWorldServiceStub(channel)
    started = time.monotonic()
    for made in range(5000):
        if time.monotonic() - started >= seconds:
            return made
        await stub.SayHello(pb.HelloRequest(name="x"), timeout=5)
    return 5000


def _served(servers: list[ServerProcess]) -> list[int]:
    """SayHello calls each server has logged so far."""
    return [
        sum(1 for e in server.events if e.get("event") == "rpc" and str(e.get("method", "")).endswith("/SayHello"))
        for server in servers
    ]


async def _served_once_logged(servers: list[ServerProcess], calls: int) -> list[int]:
    """_served, once the servers' lines of ``calls`` SayHello calls in all have reached the test."""
    return await recorded(lambda: _served(servers), lambda served: sum(served) >= calls)


async def _split(channel: grpc.aio.Channel, servers: list[ServerProcess], seconds: float, made: int) -> list[int]:
    """How the SayHello calls of ``seconds`` spread over the servers, ``made`` calls having been made before."""
    before = await _served_once_logged(servers, made)
    calls = await _calls(channel, seconds)
    after = await _served_once_logged(servers, made + calls)
    assert sum(after) == made + calls
    return [now - was for now, was in zip(after, before, strict=True)]


async def test_weighted_round_robin_follows_the_reported_load(
    pki: Pki, backends: list[tuple[ServerProcess, int]]
) -> None:
    servers = [server for server, _ in backends]
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in backends)
    settings = client_settings(pki, 0, target=target, server_name="localhost", balancing="weighted_round_robin")
    async with create_channel(settings) as channel:
        made = await _calls(channel, 1.0)  # every backend connected and reporting
        async with create_channel(client_settings(pki, backends[0][1])) as direct:
            # The first backend busy for 4 s: a thread of its process spins, as a hot loop would.
            assert await direct.unary_unary(BURN)(b"4", timeout=5) == b"burning"
        made += await _calls(channel, 1.5)  # a new sample (0.25 s), new weights (every 1 s)
        busy = await _split(channel, servers, 1.5, made)
        made += sum(busy)
        # The burn ends at 4 s. The backend it starved gets few calls, so its next samples are few
        # too: measured, its share takes 2 to 3 s to come back on an idle machine, longer on a loaded
        # one; so the split is measured again (1.5 s each, 8 times at most) until it is even.
        made += await _calls(channel, 3.5)
        for _ in range(8):
            even = await _split(channel, servers, 1.5, made)
            made += sum(even)
            if min(even) * 2 > max(even):
                break
    assert busy[0] * 2 < min(busy[1:]), busy
    assert min(even) * 2 > max(even), even
