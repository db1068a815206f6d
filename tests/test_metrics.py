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
from service.generated.rpc_package import helloworld_pb2 as pb
from service.hello import HelloServicer
from service.observability.metrics import GO_CODE_NAMES, PUSH_SECONDS
from service.server.factory import BuiltServer
from service.server.metrics_http import serve_metrics

from .conftest import Pki, client_settings, running, server_settings
from .processes import BIN, ServerProcess, clean_env, pki_env, run
from .recorded import recorded

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"

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


# The calls _traffic makes: one of each kind, an invalid name, an unknown method, a missing token.
TRAFFIC_CALLS = 7


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


def _handled(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    """Every call the server has counted as ended, whatever its method and code."""
    return sum(value for (name, _labels), value in samples.items() if name == "grpc_server_handled_total")


async def _scrape_when_handled(port: int, calls: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape once ``calls`` calls are counted: a refused call's caller has its status before they are."""
    return await recorded(lambda: asyncio.to_thread(_scrape, port), lambda samples: _handled(samples) >= calls)


async def test_counters_for_every_kind_and_code(scraped_server: tuple[BuiltServer, int], pki: Pki) -> None:
    built, metrics_port = scraped_server
    await _traffic(pki, built.port)
    samples = await _scrape_when_handled(metrics_port, TRAFFIC_CALLS)
    assert _handled(samples) == TRAFFIC_CALLS

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
    # Every call counted before Prometheus's first scrape, so the values it reports are final.
    assert _handled(await _scrape_when_handled(metrics_port, TRAFFIC_CALLS)) == TRAFFIC_CALLS
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
    # A name[] scrape skips the collector that hands the counts over at every scrape; the lifecycle's
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
        # Ten push intervals at most, for a busy machine.
        handled = await recorded(
            lambda: asyncio.to_thread(_scrape, metrics_port, query), lambda s: s.get(key) == 3, PUSH_SECONDS * 10
        )
        assert handled.get(key) == 3
        assert {name for name, _labels in handled} == {"grpc_server_handled_total"}
        # hello-server turns prometheus-client's *_created series off at its entry point.
        everything = await asyncio.to_thread(_scrape, metrics_port)
        assert "process_cpu_seconds_total" in {name for name, _labels in everything}
        assert not [name for name, _labels in everything if name.endswith("_created")]
    finally:
        server.stop()


async def test_every_code_of_every_registered_method_is_a_series_before_any_call(
    scraped_server: tuple[BuiltServer, int],
) -> None:
    # As go-grpc-prometheus's InitializeMetrics: rate() sees a pod's first error only if the
    # series had a sample (0) before it.
    built, metrics_port = scraped_server
    samples = await asyncio.to_thread(_scrape, metrics_port)
    handled = {
        dict(labels)["grpc_service"] + "/" + dict(labels)["grpc_method"]: dict(labels)["grpc_type"]
        for (name, labels), _ in samples.items()
        if name == "grpc_server_handled_total"
    }
    methods = built.registry.methods()
    assert set(handled) == set(methods)
    assert {
        f"{HELLO}/SayHello",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    } <= set(methods)
    assert handled[f"{HELLO}/SayHelloChat"] == "bidi_stream"
    for method, kind in handled.items():
        service, _, name = method.partition("/")
        labels = {"grpc_type": kind, "grpc_service": service, "grpc_method": name}
        for code in GO_CODE_NAMES.values():
            assert ("grpc_server_handled_total", tuple(sorted({**labels, "grpc_code": code}.items()))) in samples
        assert _value(samples, "grpc_server_started_total", **labels) == 0
        assert ("grpc_server_handling_seconds_count", tuple(sorted(labels.items()))) in samples
    assert sum(v for (name, _), v in samples.items() if name == "grpc_server_handled_total") == 0


async def test_process_and_python_series_are_served(scraped_server: tuple[BuiltServer, int]) -> None:
    _built, metrics_port = scraped_server
    names = {name for name, _labels in await asyncio.to_thread(_scrape, metrics_port)}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    ):
        assert name in names, name


def test_importing_the_metrics_leaves_other_registries_alone() -> None:
    # prometheus-client's *_created switch is process-wide: only hello-server's entry point turns it.
    code = (
        "import service.server.factory, service.observability.metrics, prometheus_client as p\n"
        "r = p.CollectorRegistry(); p.Counter('c', 'c', registry=r).inc()\n"
        "print(p.generate_latest(r).decode())"
    )
    result = run([str(BIN / "python"), "-c", code], clean_env(), 60)
    assert result.returncode == 0, result.stderr
    assert "c_created" in result.stdout


class _FailingHello(HelloServicer):
    """Hello whose SayHello fails with INTERNAL (a server fault) for names that start with "fail"."""

    async def SayHello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        if request.name.startswith("fail"):
            raise RuntimeError("a bug")
        return await super().SayHello(request, context)


def _series_lines(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """grpc_server_handled_total samples of SayHello as promtool series selectors, with job="hello"."""
    lines = {}
    for (name, labels), value in samples.items():
        if name == "grpc_server_handled_total" and dict(labels)["grpc_method"] == "SayHello":
            selector = ",".join(f'{key}="{val}"' for key, val in (("job", "hello"), *labels))
            lines[f"{name}{{{selector}}}"] = value
    return lines


def _promtool_test(scrapes: list[dict[str, float]], eval_minutes: int, firing: bool, description: str) -> str:
    """A promtool unit test of HelloHighErrorRatio over ``scrapes``, one a minute (a series absent from a
    scrape has no sample then), expecting the alert firing or not at ``eval_minutes``."""
    series = sorted({key for scrape in scrapes for key in scrape})
    inputs = "".join(
        f"      - series: '{key}'\n        values: '"
        + " ".join(str(int(scrape[key])) if key in scrape else "_" for scrape in scrapes)
        + "'\n"
        for key in series
    )
    expected = (
        "\n          - exp_labels: {severity: page, job: hello}\n"
        "            exp_annotations:\n"
        "              summary: More than 1% of hello calls fail on the server side\n"
        f'              description: "{description}"'
        if firing
        else " []"
    )
    return (
        f"rule_files: ['{MONITORING / 'rules.yaml'}']\nevaluation_interval: 1m\n"
        "tests:\n  - interval: 1m\n    input_series:\n"
        + inputs
        + f"    alert_rule_test:\n      - eval_time: {eval_minutes}m\n        alertname: HelloHighErrorRatio\n"
        + f"        exp_alerts:{expected}\n"
    )


async def test_the_error_ratio_alert_fires_on_a_pods_first_errors(pki: Pki, tmp_path: Path) -> None:
    # A fresh pod, scraped once a minute, fails 1 call in 20 from its first minute: the alert's
    # rate() sees the first failures because the Internal series was scraped at 0 before them.
    async with running(server_settings(pki), servicer=_FailingHello()) as built:
        http = serve_metrics(built.metrics.registry, server_settings(pki))
        assert http is not None
        try:
            scrapes = [_series_lines(await asyncio.to_thread(_scrape, int(http.server_port)))]
            async with create_channel(client_settings(pki, built.port)) as channel:
                for _minute in range(6):
                    for call in range(20):
                        if call == 0:
                            with pytest.raises(grpc.aio.AioRpcError) as failed:
                                await say_hello(channel, "fail")
                            assert failed.value.code() == grpc.StatusCode.INTERNAL
                        else:
                            await say_hello(channel, "ok")
                    scrapes.append(_series_lines(await asyncio.to_thread(_scrape, int(http.server_port))))
        finally:
            http.shutdown()
    internal = next(key for key in scrapes[0] if 'grpc_code="Internal"' in key)
    assert (scrapes[0][internal], scrapes[-1][internal]) == (0, 6)
    # 1 call in 20 failed: humanizePercentage of 0.05.
    fires = _promtool_test(scrapes, 6, True, "5% of calls ended Unknown, Internal, Unavailable or DataLoss.")
    # Without the series at 0 (a series born at its first increase), the same pod's alert is still
    # pending at that time: the first minute's failures are lost to rate().
    born_late = [{key: value for key, value in scrape.items() if value} for scrape in scrapes]
    pending = _promtool_test(born_late, 6, False, "")
    for name, test in (("fires", fires), ("pending", pending)):
        (tmp_path / f"{name}.test.yaml").write_text(test)
        result = run(["promtool", "test", "rules", f"{name}.test.yaml"], clean_env(), 60, tmp_path)
        assert result.returncode == 0, name + result.stdout + result.stderr


def test_the_borrowed_histogram_internals_are_checked_and_a_change_fails_loudly() -> None:
    from prometheus_client import Histogram

    from service.observability.borrowed import check_prometheus_client

    check_prometheus_client()  # the locked release: what the hot path borrows works

    class Renamed(Histogram):
        """prometheus-client as a release that renamed its per-bucket values would be."""

        def _metric_init(self) -> None:
            super()._metric_init()
            self._bucket_values, self._buckets = self._buckets, None

    with pytest.raises(ImportError, match=r"prometheus-client .* changed the Histogram internals"):
        check_prometheus_client(Renamed)
