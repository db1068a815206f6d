"""Access log: exactly one structured line per call of every kind, written when it ends, never with a secret."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

import grpc
import structlog

from .hooks import OK, Call, Hooks, Method

_CALLER_ERRORS = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.ABORTED,
    }
)


def level_for(code: grpc.StatusCode) -> str:
    """OK is info, the caller's mistakes are warnings, the server's failures are errors."""
    if code is grpc.StatusCode.OK:
        return "info"
    return "warning" if code in _CALLER_ERRORS else "error"


# Looked up once: an enum member's .name is a descriptor call, and this runs on every call. The
# usual code, OK, is not looked up at all: a StatusCode is an Enum, whose hash is a Python call
# (a dict lookup by StatusCode 50 ns, the identity check 7 ns; python -m timeit).
_NAMES_AND_LEVELS = {code: (code.name, level_for(code)) for code in grpc.StatusCode}


def _user_agent(metadata: tuple[tuple[str, str | bytes], ...]) -> str | bytes | None:
    for key, value in metadata:
        if key == "user-agent":
            return value
    return None


def _readable(peer: str) -> str:
    # grpc percent-encodes IPv6 peers ("ipv6:%5B::1%5D:5000"); log them as people write them.
    return unquote(peer) if "%" in peer else peer


def _received(call: Call) -> None:
    call.received += 1


def _sent(call: Call) -> None:
    call.sent += 1


class AccessLog:
    """Logs code, duration_ms, peer, user_agent (and message counts for streams) with the call's context.

    The call's context (method, request_id, principal) comes from structlog's contextvars, bound
    by the request-id and auth layers. Calls to ``quiet_services`` that succeed log at debug,
    so probes every few seconds do not flood the log.
    """

    def __init__(self, logger: Any = None, quiet_services: tuple[str, ...] = ()) -> None:
        # Bound now, not through structlog's lazy proxy on every line (structlog's advice for hot
        # paths); build_server runs after logging is configured. capture_logs still sees the
        # lines: it changes the processor list this logger holds, in place.
        log = logger if logger is not None else structlog.get_logger("hello.access").bind()
        self._methods = {level: getattr(log, level) for level in ("debug", "info", "warning", "error")}
        self._quiet = tuple(f"/{service}/" for service in quiet_services)

    def hooks(self, method: Method) -> Hooks:
        """Counts messages on streams; writes the line at exit."""
        quiet = method.name.startswith(self._quiet)
        if method.streaming:
            return Hooks(
                exit=lambda call: self._write(call, quiet, received=call.received, sent=call.sent),
                received=_received,
                sent=_sent,
            )
        return Hooks(exit=lambda call: self._write(call, quiet))

    def _write(self, call: Call, quiet: bool, **counts: int) -> None:
        code = call.code
        if code is OK:
            name, level = "OK", "debug" if quiet else "info"
        else:
            name, level = _NAMES_AND_LEVELS[code]
        self._methods[level](
            "rpc",
            method=call.method,
            code=name,
            # Whole microseconds, in milliseconds: round(x * 1000, 3) gives the same figure in
            # 316 ns against 55 ns (python -m timeit), on every call.
            duration_ms=int((time.perf_counter() - call.started) * 1e6) / 1000,
            peer=_readable(call.peer()),
            user_agent=_user_agent(call.metadata),
            **counts,
        )
