"""OpenTelemetry set-up from TracingSettings: a tracer provider exporting over OTLP/gRPC."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from . import __version__
from .settings import TracingSettings


def tracer_provider(settings: TracingSettings) -> TracerProvider:
    """Spans batched to the OTLP collector (``otlp_endpoint``, else the standard OTEL_EXPORTER_OTLP_* settings).

    Sampling follows the caller's decision when there is one, else keeps ``sample_ratio`` of traces.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name, "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint) if settings.otlp_endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
