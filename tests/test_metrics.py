"""Metrics: go-grpc-prometheus names and labels for every RPC kind, scraped over HTTP and by a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.client import create_channel, say_hello, say_hello_chat, say_hello_repeated, say_hello_to_many
from service.metrics_http import serve_metrics
from service.server import BuiltServer
from service.server_metrics import PUSH_SECONDS

from .conftest import Pki, client_settings, running, server_settings
from .processes import BIN, ServerProcess, pki_env

HELLO = "rpc_package.HelloWorldService"


@pytest.fixture
async def scraped_server(pki: Pki) -> AsyncIterator[tuple[BuiltServer, int]]:
    settings = server_settings(pki)
    async with running(settings) as built:
        http = serve_metrics(built.metrics.registry, settings)
        assert http is not None
        try:
            yield built, int(http.server_port)
        finally:
            http.shutdown()


async def _traffic(pki: Pki, port: int) -> None:
    """One OK call of each kind, plus an invalid name, a missing token and an unknown method."""
    async with create_channel(client_settings(pki, port)) as channel:
        await say_hello(channel, "a")
        _ = [m async for m in say_hello_repeated(channel, "b", 3)]
        await say_hello_to_many(channel, ["c", "d"])
        _ = [m async for m in say_hello_chat(channel, ["e", "f"])]
        with pytest.raises(grpc.aio.AioRpcError):
            await say_hello(channel, "")
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(f"/{HELLO}/NoSuchMethod{time.monotonic_ns()}")(b"", timeout=5)
    async with create_channel(client_settings(pki, port, token=None)) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await say_hello(channel, "x")


def _scrape(port: int, query: str = "") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics{'?' + query if query else ''}", timeout=5
    ) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_for_every_kind_and_code(scraped_server: tuple[BuiltServer, int], pki: Pki) -> None:
    built, metrics_port = scraped_server
    await _traffic(pki, built.port)
    samples = await asyncio.to_thread(_scrape, metrics_port)

    def method(kind: str, name: str) -> dict[str, str]:
        return {"grpc_type": kind, "grpc_service": HELLO, "grpc_method": name}

    unary = method("unary", "SayHello")
    assert _value(samples, "grpc_server_started_total", **unary) == 3
    assert _value(samples, "grpc_server_handled_total", **unary, grpc_code="OK") == 1
    assert _value(samples, "grpc_server_handled_total", **unary, grpc_code="InvalidArgument") == 1
    assert _value(samples, "grpc_server_handled_total", **unary, grpc_code="Unauthenticated") == 1
    assert _value(samples, "grpc_server_handling_seconds_count", **unary) == 3
    for kind, name, received, sent in [
        ("server_stream", "SayHelloRepeated", 1, 3),
        ("client_stream", "SayHelloToMany", 2, 1),
        ("bidi_stream", "SayHelloChat", 2, 2),
    ]:
        labels = method(kind, name)
        assert _value(samples, "grpc_server_handled_total", **labels, grpc_code="OK") == 1
        assert _value(samples, "grpc_server_msg_received_total", **labels) == received
        assert _value(samples, "grpc_server_msg_sent_total", **labels) == sent
    unknown = {"grpc_type": "unary", "grpc_service": "unknown", "grpc_method": "unknown"}
    assert _value(samples, "grpc_server_handled_total", **unknown, grpc_code="Unimplemented") == 1
    assert not any("NoSuchMethod" in str(key) for key in samples)
    assert _value(samples, "hello_auth_failures_total", reason="missing") == 1
    assert _value(samples, "hello_server_calls_in_flight") == 0
    assert built.tls is not None
    assert _value(samples, "hello_server_certificate_expiry_timestamp_seconds") == built.tls.not_after.timestamp()
    assert _value(samples, "hello_build_info", version=_version(), grpcio_version=grpc.__version__) == 1


def _seconds_buckets(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[tuple[float, float]]:
    """SayHello's handling-time buckets as (upper bound, cumulative count), lowest bound first."""
    return sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "grpc_server_handling_seconds_bucket" and dict(labels)["grpc_method"] == "SayHello"
    )


async def test_handling_time_histogram_adds_up_across_scrapes(
    scraped_server: tuple[BuiltServer, int], pki: Pki
) -> None:
    # The histogram is kept as plain counts and handed to prometheus-client at each scrape:
    # each scrape must add what happened since the last one, no more, no less.
    built, metrics_port = scraped_server
    unary = {"grpc_type": "unary", "grpc_service": HELLO, "grpc_method": "SayHello"}
    sums = [0.0]
    async with create_channel(client_settings(pki, built.port)) as channel:
        for calls, total in ((2, 2), (3, 5)):
            began = time.perf_counter()
            for _ in range(calls):
                await say_hello(channel, "histogram")
            elapsed = time.perf_counter() - began
            samples = await asyncio.to_thread(_scrape, metrics_port)
            buckets = _seconds_buckets(samples)
            assert _value(samples, "grpc_server_handling_seconds_count", **unary) == total
            assert buckets[-1] == (float("inf"), total)
            assert [count for _, count in buckets] == sorted(count for _, count in buckets)  # cumulative
            assert _value(samples, "grpc_server_handling_seconds_bucket", **unary, le="10.0") == total
            sums.append(_value(samples, "grpc_server_handling_seconds_sum", **unary))
            # What this round's calls took in the server lies within what they took for the client.
            assert 0 < sums[-1] - sums[-2] <= elapsed


def _version() -> str:
    from service import __version__

    return __version__


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _query(prometheus: str, expression: str) -> list[dict[str, object]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return list(json.load(response)["data"]["result"])
    except OSError:
        return []  # not up yet


async def test_real_prometheus_scrapes_the_counters(
    scraped_server: tuple[BuiltServer, int], pki: Pki, tmp_path: Path
) -> None:
    built, metrics_port = scraped_server
    await _traffic(pki, built.port)
    web = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hello\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    prometheus = await asyncio.create_subprocess_exec(
        shutil.which("prometheus") or "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{web}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    expression = 'grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="SayHello"}'
    try:
        result: list[dict[str, object]] = []
        for _ in range(120):  # bounded: 60 s at most
            result = await asyncio.to_thread(_query, f"http://127.0.0.1:{web}", expression)
            if result:
                break
            await asyncio.sleep(0.5)  # Prometheus scrapes every second; ask again until it has
        assert result, "Prometheus did not report the counter within 60 s"
        assert result[0]["value"][1] == "1"  # type: ignore[index]
        ok_calls = f'sum(grpc_server_handled_total{{grpc_code="OK",grpc_service="{HELLO}"}})'
        ok = await asyncio.to_thread(_query, f"http://127.0.0.1:{web}", ok_calls)
        assert ok[0]["value"][1] == "4"  # type: ignore[index]
    finally:
        prometheus.terminate()
        await asyncio.wait_for(prometheus.wait(), 30)


async def test_a_scrape_filtered_by_name_sees_the_counts_within_half_a_second(pki: Pki) -> None:
    # A name[] scrape skips the collector that hands the counts over at every scrape; the runner's
    # push every PUSH_SECONDS covers it.
    server = ServerProcess([str(BIN / "hello-server")], pki_env(pki))
    try:
        port = server.serving_port()
        metrics_port = int(server.events[-1]["metrics_port"])
        async with create_channel(client_settings(pki, port)) as channel:
            for name in ("a", "b", "c"):
                await say_hello(channel, name)
        query = urllib.parse.urlencode({"name[]": "grpc_server_handled_total"})
        key = (
            "grpc_server_handled_total",
            (("grpc_code", "OK"), ("grpc_method", "SayHello"), ("grpc_service", HELLO), ("grpc_type", "unary")),
        )
        for _ in range(20):
            handled = await asyncio.to_thread(_scrape, metrics_port, query)
            if handled.get(key) == 3:
                break
            await asyncio.sleep(PUSH_SECONDS / 2)
        assert handled.get(key) == 3
        assert {name for name, _labels in handled} == {"grpc_server_handled_total"}
    finally:
        server.stop()
