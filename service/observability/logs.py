"""Logging, configured once at the edge: structlog for our events, the same renderer for stdlib (grpc) logs."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json as stdlib_json
import logging
import os
import sys
import time
from collections import deque
from select import PIPE_BUF
from typing import IO, Any, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor

from ..config.settings import LogSettings
from .borrowed import STRUCTLOG_KEY_PREFIX, STRUCTLOG_KEY_PREFIX_LEN

try:
    from opentelemetry import trace
except ImportError:  # without the [tracing] extra, no span is ever current
    trace = None  # type: ignore[assignment]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def add_trace_context(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Add trace_id and span_id of the current OpenTelemetry span, when there is one."""
    if trace is None:
        return event_dict
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict


# A failure's line keeps the exception's type, message and frames (file, line, function), never a
# variable's value: structlog's dict_tracebacks shows every frame's locals, and those hold the
# request, its metadata (the bearer token) and whatever a team's handler had in hand.
dict_tracebacks_without_locals = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def _tracebacks(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    # The structured traceback, only for the few lines that carry one (not for each access line).
    if "exc_info" not in event_dict:
        return event_dict
    return dict_tracebacks_without_locals(logger, method, event_dict)


class LoopFlushedLogger:
    """Writes rendered lines to a binary stream, all the lines of an event-loop iteration at once.

    Every line is out by the end of the loop iteration that logged it: a busy server makes one
    write for all the access-log lines of an iteration instead of one per line. Outside a running
    loop (start-up, other threads) a line goes out at once, after any still waiting.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        # A deque: append and popleft are atomic, so threads that log need no lock.
        self._lines: deque[bytes] = deque()
        self._flush_scheduled = False

    def msg(self, message: bytes) -> None:
        """Queue one line; write now outside a loop, else at the end of this loop iteration."""
        self._lines.append(message)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write and flush every queued line, in writes of at most PIPE_BUF bytes that end at a line's end.

        Workers share their stdout (a pipe in a container); the kernel keeps writes of up to
        PIPE_BUF bytes to a pipe whole, so lines from two processes never mix.
        """
        self._flush_scheduled = False
        lines, size = self._lines, 0
        piece: list[bytes] = []
        while lines:
            line = lines.popleft() + b"\n"
            if piece and size + len(line) > PIPE_BUF:
                self._write(piece)
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        if piece:
            self._write(piece)

    def _write(self, lines: list[bytes]) -> None:
        try:
            self._file.write(b"".join(lines))
            self._file.flush()
        except BrokenPipeError:
            # The reader is gone (make run | jq, after Ctrl-C): what is still logged goes nowhere,
            # and Python's own flush at exit must not fail on the same pipe (the advice of Python's
            # signal docs for SIGPIPE): the stream's descriptor now points at /dev/null.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._file.fileno())
            os.close(devnull)

    # The method names structlog may call, as its own PrintLogger and BytesLogger have them.
    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _Queued(logging.Handler):
    """A stdlib handler that hands each formatted record to a LoopFlushedLogger."""

    def __init__(self, logger: LoopFlushedLogger) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record and queue it as one line."""
        try:
            self._logger.msg(self.format(record).encode())
        except Exception:
            self.handleError(record)


class _UtcClock:
    """ISO 8601 UTC with microseconds ("2026-01-02T03:04:05.123456Z"), as TimeStamper(fmt="iso", utc=True) writes.

    At a fifth of TimeStamper's cost: the date and time up to the second are formatted once a
    second, not once per line, and the microseconds are cut from an integer, not formatted.
    """

    def __init__(self) -> None:
        self._second, self._prefix = -1, ""

    def now(self) -> str:
        """The current time."""
        micros = time.time_ns() // 1000
        second = micros // 1_000_000
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        # 1_000_000 + the microseconds has seven digits: the last six are them, zero-padded.
        return self._prefix + str(1_000_000 + micros % 1_000_000)[1:] + "Z"


def utc_timestamper() -> Processor:
    """Add ``timestamp`` as ISO 8601 UTC with microseconds ("2026-01-02T03:04:05.123456Z")."""
    clock = _UtcClock()

    def add_timestamp(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = clock.now()
        return event_dict

    return add_timestamp


def _fallback(value: Any) -> Any:
    # What JSONRenderer does with a value JSON has no type for: its __structlog__(), else repr().
    structlog_form = getattr(value, "__structlog__", None)
    return structlog_form() if structlog_form is not None else repr(value)


_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}


def json_line(trace_context: bool) -> Processor:
    """The JSON fast path's whole chain as one processor, rendering to bytes.

    The same line as merge_contextvars, [add_trace_context], add_log_level, utc_timestamper,
    _tracebacks (no locals) and JSONRenderer(orjson) in that order, in one call instead of six: a busy
    server writes a line per call, and each processor call costs it more than its work does.
    """
    clock = _UtcClock()

    def render(logger: Any, method: str, event_dict: EventDict) -> bytes:
        for var, value in contextvars.copy_context().items():
            # A variable structlog cleared holds Ellipsis; checking that first is the cheaper test.
            if value is not Ellipsis and var.name.startswith(STRUCTLOG_KEY_PREFIX):
                event_dict.setdefault(var.name[STRUCTLOG_KEY_PREFIX_LEN:], value)
        if trace_context:
            add_trace_context(logger, method, event_dict)
        event_dict["level"] = _LEVEL_OF_METHOD.get(method, method)
        event_dict["timestamp"] = clock.now()
        if "exc_info" in event_dict:
            event_dict = dict_tracebacks_without_locals(logger, method, event_dict)
        try:
            return orjson.dumps(event_dict, default=_fallback, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            # orjson refuses integers beyond 64 bits (a certificate serial); the stdlib takes anything.
            return stdlib_json.dumps(event_dict, default=_fallback).encode()

    return render


def configure_logging(settings: LogSettings, stream: TextIO | None = None, *, trace_context: bool = True) -> None:
    """Send structlog events and stdlib records to ``stream`` (stdout) as JSON lines or console text.

    With ``trace_context`` (tracing is on), lines logged inside a span carry its trace_id and span_id.
    """
    stream = stream or sys.stdout
    json = settings.format == "json" or (settings.format is None and not stream.isatty())
    level = _LEVELS[settings.level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        # Without tracing there is never a span: a look for one on every line is wasted.
        *([add_trace_context] if trace_context else []),
        structlog.processors.add_log_level,
        utc_timestamper(),
    ]
    # ConsoleRenderer's default tracebacks are Rich's or better-exceptions' when either is installed
    # (a team's dependency may bring it), and both print each frame's locals: the plain one does not.
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    exceptions: list[Processor] = [_tracebacks] if json else []
    # Our own events, the access log's line per call among them, take the fast path: orjson
    # renders bytes straight to the stream's buffer (stdlib records keep the str path below).
    fast = json and hasattr(stream, "buffer")
    logger = LoopFlushedLogger(stream.buffer) if fast else None
    if logger is not None:
        # Lines of the last loop iteration (the "stopped" line) must not die with the loop.
        atexit.register(logger.flush)
    structlog.configure(
        processors=[json_line(trace_context)] if fast else [*shared, *exceptions, renderer],
        # A filtering bound logger drops disabled levels before any processor runs: the cheap path.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=((lambda *_args: logger) if fast else structlog.WriteLoggerFactory(file=stream)),
        cache_logger_on_first_use=True,
    )
    # grpc and other libraries log through the stdlib; render their records the same way, and on
    # the fast path queue them with ours, so the stream keeps the order things were logged in.
    handler: logging.Handler = _Queued(logger) if logger is not None else logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
