"""What a concern gives the chain: plain functions called at the edges of each call, chosen once per method.

Hooks are synchronous on purpose. grpc.aio runs every interceptor as a coroutine per call and each
async context manager costs two awaits; measured with `make bench`, the nine layers we had as interceptors
cost more than the whole bare server. A hook that refuses a call raises Refusal, and the chain awaits the abort.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from .. import status_details

# The codes the hot path names on every call, looked up once: StatusCode is an Enum, and naming a
# member (grpc.StatusCode.OK) is a descriptor call. Measured (python -m timeit, grpcio 1.85):
# `code is grpc.StatusCode.OK` 58 ns, `code is OK` 7 ns; a call makes four such checks.
OK, UNKNOWN = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN


class Call:
    """One call as the hooks see it: its context, what the layers noted, and, at exit, its status code."""

    __slots__ = (
        "_peer",
        "code",
        "context",
        "entered",
        "headers",
        "metadata",
        "method",
        "notes",
        "received",
        "request_id",
        "sent",
        "started",
        "trailers",
    )

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        self.context, self.method = context, method
        # Read once: grpc builds a new tuple of str on every invocation_metadata() call.
        # grpc.aio gives a tuple of (key, value) tuples; its stubs say Metadata (no cast: a call per call).
        self.metadata: tuple[tuple[str, str | bytes], ...] = context.invocation_metadata() or ()  # type: ignore[assignment]
        self._peer: str | None = None
        self.started = time.perf_counter()
        # UNKNOWN until the chain knows better: it sets the code before any exit hook runs.
        self.code = UNKNOWN
        # Initial metadata a layer wants the caller to see; the chain sends it on streaming replies.
        self.headers: tuple[tuple[str, str], ...] = ()
        # Trailing metadata a layer set; the chain adds it to whatever the handler sets.
        self.trailers: tuple[tuple[str, str], ...] = ()
        self.request_id = ""
        self.received = self.sent = 0
        # How many layers' enter hooks ran: their exit hooks run, no others.
        self.entered = 0
        # What one layer keeps from its enter hook for its exit hook (a span, a token), by layer.
        self.notes: dict[object, Any] = {}

    def peer(self) -> str:
        """grpc's peer string ("ipv4:127.0.0.1:5000"), asked of grpc at most once."""
        if self._peer is None:
            self._peer = self.context.peer()
        return self._peer

    def add_trailers(self, *metadata: tuple[str, str]) -> None:
        """Send ``metadata`` in the call's trailers too, beside what the handler and the other layers set."""
        self.trailers += metadata
        context = self.context
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), *metadata))


class Refusal(Exception):
    """Raised by a hook to end the call with ``code`` and ``message`` (safe to show the caller).

    ``details`` (google.rpc messages) and ``pushback_ms`` (grpc's retry advice) go out in the
    trailers, built only now that the call is refused; ``trailing_metadata`` is added to what
    the layers set before (the request id).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailing_metadata: tuple[tuple[str, str], ...] | None = None,
        *,
        details: Sequence[Message] = (),
        pushback_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.trailing_metadata = code, message, trailing_metadata
        self.details, self.pushback_ms = details, pushback_ms

    async def abort(self, call: Call) -> None:
        """Send the status; raises grpc's AbortError, as context.abort does."""
        context = call.context
        if self.trailing_metadata is not None:
            context.set_trailing_metadata((*(context.trailing_metadata() or ()), *self.trailing_metadata))
        await status_details.abort(context, self.code, self.message, *self.details, pushback_ms=self.pushback_ms)


# Methods nobody registered are counted and traced under this one name, so callers cannot create
# metric series or span names by inventing methods.
UNKNOWN_METHOD = "/unknown/unknown"


@dataclass(frozen=True, slots=True)
class Method:
    """The method a handler serves: its name, whether it is served, its handler, and whether it is declared.

    ``declared``: the registry names it (a method of a registered proto service, or registered by
    name). A catch-all generic handler serves any name a caller sends; only declared ones get
    metric series and span names of their own, so callers cannot create them by inventing names.
    """

    name: str
    known: bool
    handler: grpc.RpcMethodHandler[Any, Any]
    declared: bool = True

    @property
    def label(self) -> str:
        """The name it is counted and traced under: its own, or UNKNOWN_METHOD for an unknown or undeclared one."""
        return self.name if self.known and self.declared else UNKNOWN_METHOD

    @property
    def streaming(self) -> bool:
        """Whether requests or responses (or both) are a stream."""
        return bool(self.handler.request_streaming or self.handler.response_streaming)


@dataclass(frozen=True, slots=True)
class Hooks:
    """A layer's part in the calls of one method; any hook may be absent.

    ``enter`` runs before the handler (outermost layer first) and may raise Refusal; ``exit`` runs
    after it (innermost first) for each layer whose enter ran, with ``call.code`` set. ``received``
    and ``sent`` run per message of a stream. ``decode`` and ``encode`` replace grpc's
    (de)serializers, so a body is parsed only after every enter hook let the call in.
    """

    enter: Callable[[Call], None] | None = None
    exit: Callable[[Call], None] | None = None
    received: Callable[[Call], None] | None = None
    sent: Callable[[Call], None] | None = None
    decode: Callable[[bytes], Any] | None = None
    encode: Callable[[Any], bytes] | None = None


class Layer(Protocol):
    """One concern: which hooks it runs for the calls of a method (None: it leaves that method alone)."""

    def hooks(self, method: Method) -> Hooks | None: ...
