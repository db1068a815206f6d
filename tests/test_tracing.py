"""Tracing: a client call and its server span share one trace, for every RPC kind; the access log names it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.client import create_channel, say_hello, say_hello_chat, say_hello_repeated
from service.logs import add_trace_context
from service.server import BuiltServer

from .conftest import Pki, client_settings, running, server_settings


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
async def traced(pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]) -> AsyncIterator[BuiltServer]:
    settings = server_settings(pki, tracing={"enabled": True})
    async with running(settings, tracer=spans[0]) as built:
        yield built


async def _server_spans(exporter: InMemorySpanExporter, last: str, timeout: float = 5) -> dict[str, ReadableSpan]:
    """The finished SERVER spans by name, once ``last`` is among them (bounded wait).

    An abort sends the status at once; the server's span ends as the handler unwinds, which on a
    busy machine can be after the caller has seen the status.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        spans = {span.name: span for span in _by_kind(exporter.get_finished_spans(), SpanKind.SERVER)}
        if last in spans or asyncio.get_running_loop().time() > deadline:
            return spans
        await asyncio.sleep(0.01)


def _by_kind(finished: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in finished if span.kind == kind]


async def test_client_and_server_spans_share_the_trace(
    traced: BuiltServer, pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with capture_logs(processors=[merge_contextvars, add_trace_context]) as logs:
        async with create_channel(client_settings(pki, traced.port), tracer=provider) as channel:
            assert await say_hello(channel, "traced") == "Hello, traced!"
    [server] = _by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    [client] = _by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    assert server.name == "rpc_package.HelloWorldService/SayHello"
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert server.attributes["rpc.grpc.status_code"] == 0
    [line] = [entry for entry in logs if entry["event"] == "rpc"]
    assert line["trace_id"] == format(server.context.trace_id, "032x")


async def test_every_kind_gets_a_span_with_its_status(
    traced: BuiltServer, pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    async with create_channel(client_settings(pki, traced.port), tracer=provider) as channel:
        _ = [m async for m in say_hello_repeated(channel, "a", 2)]
        with pytest.raises(grpc.aio.AioRpcError):  # the empty name ends the bidi call INVALID_ARGUMENT
            _ = [m async for m in say_hello_chat(channel, ["b", ""])]
    servers = await _server_spans(exporter, "rpc_package.HelloWorldService/SayHelloChat")
    assert servers["rpc_package.HelloWorldService/SayHelloRepeated"].status.is_ok
    chat = servers["rpc_package.HelloWorldService/SayHelloChat"]
    assert chat.attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
    assert not chat.status.is_ok


async def test_health_watch_streams_with_context_write_under_tracing(traced: BuiltServer, pki: Pki) -> None:
    # grpc's health Watch writes with context.write, which a generator-only tracing wrapper breaks.
    async with create_channel(client_settings(pki, traced.port)) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        first = await watch.read()
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_tracing_is_off_by_default(pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    async with running(server_settings(pki), tracer=provider) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            await say_hello(channel, "untraced")
    assert built.tracer is None
    assert exporter.get_finished_spans() == ()
