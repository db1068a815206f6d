"""Logging, configured once at the edge: structlog for our events, the same renderer for stdlib (grpc) logs."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor

from .settings import LogSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def add_trace_context(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add trace_id and span_id of the current OpenTelemetry span, when there is one."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Send structlog events and stdlib records to ``stream`` (stdout) as JSON lines or console text."""
    stream = stream or sys.stdout
    json = settings.format == "json" or (settings.format is None and not stream.isatty())
    level = _LEVELS[settings.level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    exceptions: list[Processor] = [structlog.processors.dict_tracebacks] if json else []
    structlog.configure(
        processors=[*shared, *exceptions, renderer],
        # A filtering bound logger drops disabled levels before any processor runs: the cheap path.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # grpc and other libraries log through the stdlib; render their records the same way.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
