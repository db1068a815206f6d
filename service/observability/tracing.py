"""OpenTelemetry set-up from TracingSettings: a tracer provider exporting over OTLP/gRPC."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from .. import __version__
from ..config.settings import TracingSettings

DEFAULT_SERVICE_NAME = "hello-grpc-service"


def resource(settings: TracingSettings) -> Resource:
    """The spans' resource: service.name from HELLO_TRACING__SERVICE_NAME, else the SDK's, else our default.

    The SDK reads OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES; our default fills in only where
    neither names the service (Resource.create would otherwise say "unknown_service").
    """
    name = settings.service_name
    if name is None and SERVICE_NAME not in OTELResourceDetector().detect().attributes:
        name = DEFAULT_SERVICE_NAME
    return Resource.create({SERVICE_VERSION: __version__, **({SERVICE_NAME: name} if name else {})})


def tracer_provider(settings: TracingSettings) -> TracerProvider:
    """Spans batched to the OTLP collector (``otlp_endpoint``, else the standard OTEL_EXPORTER_OTLP_* settings).

    Sampling follows the caller's decision when there is one, else keeps ``sample_ratio`` of traces.
    """
    provider = TracerProvider(
        resource=resource(settings),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint) if settings.otlp_endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
