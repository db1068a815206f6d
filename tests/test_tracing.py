"""Tracing: a client call and its server span share one trace, for every RPC kind; the access log names it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service import __version__
from service.client import create_channel, say_hello, say_hello_chat, say_hello_repeated
from service.config.settings import TracingSettings
from service.generated.rpc_package import helloworld_pb2 as pb
from service.hello import HelloServicer
from service.observability.logs import add_trace_context
from service.observability.tracing import resource
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, running, server_settings
from .recorded import recorded


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


async def _server_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The SERVER spans once ``count`` have ended: a server ends its span after the caller has the status."""
    spans = await recorded(lambda: _by_kind(exporter.get_finished_spans(), SpanKind.SERVER), lambda s: len(s) >= count)
    assert len(spans) >= count, f"{count} server spans did not end within 5 s"
    return spans


def _by_kind(finished: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in finished if span.kind == kind]


async def test_client_and_server_spans_share_the_trace(
    traced: BuiltServer, pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with capture_logs(processors=[merge_contextvars, add_trace_context]) as logs:
        async with create_channel(client_settings(pki, traced.port), tracer=provider) as channel:
            assert await say_hello(channel, "traced") == "Hello, traced!"
    [server] = await _server_spans(exporter, 1)
    [client] = _by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    assert server.name == "rpc_package.HelloWorldService/SayHello"
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert server.attributes is not None
    assert dict(server.attributes) == {
        "rpc.system.name": "grpc",
        "rpc.method": "rpc_package.HelloWorldService/SayHello",
        "rpc.response.status_code": "OK",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": server.attributes["network.peer.port"],
    }
    assert isinstance(server.attributes["network.peer.port"], int)
    assert server.status.status_code == StatusCode.UNSET
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
    servers = {span.name: span for span in await _server_spans(exporter, 2)}
    assert servers["rpc_package.HelloWorldService/SayHelloRepeated"].status.is_ok
    chat = servers["rpc_package.HelloWorldService/SayHelloChat"]
    assert chat.attributes is not None
    assert chat.attributes["rpc.response.status_code"] == "INVALID_ARGUMENT"
    # The caller's mistake, not the server's fault: the gRPC conventions leave a server span's status unset.
    assert chat.status.status_code == StatusCode.UNSET
    assert "error.type" not in chat.attributes


class _FailingHello(HelloServicer):
    async def SayHello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        raise RuntimeError("a bug")


async def test_only_the_servers_faults_mark_its_span_error(
    pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    settings = server_settings(pki, tracing={"enabled": True})
    async with running(settings, servicer=_FailingHello(), tracer=provider) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as internal:
                await say_hello(channel, "x")
            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
                await channel.unary_unary("/rpc_package.HelloWorldService/NoSuchMethod")(b"", timeout=5)
        async with create_channel(client_settings(pki, built.port, token=None)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await say_hello(channel, "x")
    assert [e.value.code() for e in (internal, unimplemented, unauthenticated)] == [
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
    ]
    finished = await _server_spans(exporter, 3)
    outcome = {
        (span.name, span.attributes["rpc.response.status_code"]): (
            span.status.status_code,
            span.attributes.get("error.type"),
        )
        for span in finished
        if span.attributes is not None
    }
    assert outcome == {
        ("rpc_package.HelloWorldService/SayHello", "INTERNAL"): (StatusCode.ERROR, "INTERNAL"),
        # A method the server does not have: rpc.method _OTHER, the span named after the system.
        ("grpc", "UNIMPLEMENTED"): (StatusCode.ERROR, "UNIMPLEMENTED"),
        ("rpc_package.HelloWorldService/SayHello", "UNAUTHENTICATED"): (StatusCode.UNSET, None),
    }
    [other] = [span for span in finished if span.name == "grpc"]
    assert other.attributes is not None
    assert other.attributes["rpc.method"] == "_OTHER"
    assert other.attributes["rpc.method_original"] == "rpc_package.HelloWorldService/NoSuchMethod"


@pytest.mark.parametrize(
    ("setting", "env", "expected"),
    [
        (None, {}, "hello-grpc-service"),
        (None, {"OTEL_SERVICE_NAME": "from-otel"}, "from-otel"),
        (None, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,team=a"}, "from-attributes"),
        (None, {"OTEL_SERVICE_NAME": "from-otel", "OTEL_RESOURCE_ATTRIBUTES": "service.name=x"}, "from-otel"),
        ("from-hello", {"OTEL_SERVICE_NAME": "from-otel"}, "from-hello"),
    ],
)
def test_service_name_follows_the_sdks_variables_over_our_default(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, env: dict[str, str], expected: str
) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    attributes = resource(TracingSettings(enabled=True, service_name=setting)).attributes
    assert attributes["service.name"] == expected
    assert attributes["service.version"] == __version__


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


async def test_a_sync_handlers_call_has_its_span_current_in_the_handlers_thread(
    pki: Pki, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    from opentelemetry import trace

    from service.registry import Registry

    seen: list[int] = []

    def lookup(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(trace.get_current_span().get_span_context().trace_id)  # a call made here joins the trace
        context.abort(grpc.StatusCode.NOT_FOUND, "no such order")

    def app(registry: Registry) -> None:
        handlers = {"Get": grpc.unary_unary_rpc_method_handler(lookup)}
        # As generated code registers: by name too, so that the method is declared (and its span named).
        registry.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("team.Orders", handlers),))
        registry.add_registered_method_handlers("team.Orders", handlers)

    provider, exporter = spans
    async with running(server_settings(pki, tracing={"enabled": True}), tracer=provider, app=app) as built:
        async with create_channel(client_settings(pki, built.port)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/team.Orders/Get")(b"1", timeout=5)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        [span] = await _server_spans(exporter, 1)
    assert span.name == "team.Orders/Get"
    assert dict(span.attributes or {})["rpc.response.status_code"] == "NOT_FOUND"
    assert seen == [span.context.trace_id]
