"""The chain: each method's handler wrapped once, at registration, with the hooks of every layer.

One wrapper per handler runs the layers' hooks in order, for all four RPC kinds and either
streaming style (async generator or context.write), and settles the status code in one place.
A sync handler (grpc's sync API) is the same to the layers: it runs in a pool thread (sync_handlers.py).
Wrapping at registration instead of with grpc.aio interceptors keeps grpc's fast path: with any
interceptor, grpc awaits the whole interceptor chain on every call before it finds the handler.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from .hooks import OK, UNKNOWN, Call, Hooks, Layer, Method, Refusal
from .recovery import exit_failed, internal_error
from .sync_handlers import in_threads, is_sync
from .threads import HandlerThreads

if TYPE_CHECKING:
    from ..registry import Registry

_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _status(context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode) -> grpc.StatusCode:
    # A handler may set a code without raising; grpc keeps whatever it was given.
    code = context.code()
    if code is None:
        return default
    return code if isinstance(code, grpc.StatusCode) else _BY_VALUE.get(code, UNKNOWN)


class _Plan:
    """The hooks of one method, in the order they run."""

    def __init__(self, method: Method, hooks: Sequence[Hooks], chain: Chain) -> None:
        self.name = method.name
        self.chain = chain
        self.layers = len(hooks)
        # (position, hook) of the layers that have one; exits innermost first.
        self.enters = tuple((i, h.enter) for i, h in enumerate(hooks) if h.enter is not None)
        self.exits = tuple((i, h.exit) for i, h in reversed(list(enumerate(hooks))) if h.exit is not None)
        self.received = tuple(h.received for h in hooks if h.received is not None)
        self.sent = tuple(h.sent for h in hooks if h.sent is not None)
        self.decode = next((h.decode for h in hooks if h.decode is not None), None)
        self.encode = next((h.encode for h in hooks if h.encode is not None), None)

    def enter(self, call: Call) -> None:
        """Run the enter hooks; the layers before a refusing one count as entered, it and those after do not."""
        for position, enter in self.enters:
            call.entered = position
            enter(call)
        call.entered = self.layers

    def exit(self, call: Call) -> None:
        """Run the exit hooks of the layers entered, innermost first; a failing hook stops no other."""
        for position, exit_hook in self.exits:
            if position < call.entered:
                try:
                    exit_hook(call)
                except Exception:
                    # The call's outcome is settled: a bug in one layer's bookkeeping must not
                    # change what the caller gets, nor keep the other layers from theirs.
                    exit_failed(call)

    def request(self, call: Call, data: Any) -> Any:
        for received in self.received:
            received(call)
        return self.decode(data) if self.decode is not None else data

    def response(self, call: Call, message: Any) -> Any:
        for sent in self.sent:
            sent(call)
        return self.encode(message) if self.encode is not None else message

    async def failed(self, call: Call, error: BaseException) -> None:
        """Settle the code for an exception out of the call; a Refusal or other exception becomes an abort."""
        context = call.context
        if isinstance(error, Refusal):
            call.code = error.code
            await error.abort(call)
        elif isinstance(error, grpc.aio.AbortError):
            call.code = _status(context, UNKNOWN)
        elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            # The caller cancelled, its deadline passed, or the server is stopping and cancels its
            # calls (the caller gets UNAVAILABLE: the connection goes): the access line says what it got.
            remaining = context.time_remaining()
            if self.chain.cancelling:
                call.code = grpc.StatusCode.UNAVAILABLE
            elif remaining is not None and remaining <= 0:
                call.code = grpc.StatusCode.DEADLINE_EXCEEDED
            else:
                call.code = grpc.StatusCode.CANCELLED
        elif isinstance(error, Exception):
            code = _status(context, OK)
            if code is not OK:
                # The handler set a code before raising (generated servicers' "Method not implemented!"
                # sets UNIMPLEMENTED): grpc would send that code and details, and so does the chain.
                call.code = code
                await context.abort(code, context.details() or "")
            else:
                call.code = grpc.StatusCode.INTERNAL
                await internal_error(call).abort(call)


class _Context:
    """The servicer context, with read() and write() passed through the plan (counts, decode, encode),
    and the layers' metadata added to the handler's (never replacing it)."""

    def __init__(self, call: Call, plan: _Plan) -> None:
        self._context, self._call, self._plan = call.context, call, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        return message if message is grpc.aio.EOF else self._plan.request(self._call, message)

    async def send_initial_metadata(self, metadata: Any) -> None:
        """The handler's initial metadata, with the layers' headers (x-request-id) added, in one write."""
        headers, self._call.headers = self._call.headers, ()
        await self._context.send_initial_metadata((*metadata, *headers))

    def _with_trailers(self, metadata: Any) -> tuple[Any, ...]:
        # The layers' trailers, unless the handler's already hold them (it read and extended them).
        metadata = tuple(metadata)
        return (*metadata, *(pair for pair in self._call.trailers if pair not in metadata))

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._context.set_trailing_metadata(self._with_trailers(metadata))

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        # grpc keeps the trailers already set only when given none at all (its own empty tuple).
        await self._context.abort(code, details, self._with_trailers(trailing_metadata) if trailing_metadata else ())

    async def abort_with_status(self, status: Any) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    async def write(self, message: Any) -> None:
        if self._call.headers:
            await _send_headers(self._call)
        await self._context.write(self._plan.response(self._call, message))


async def _send_headers(call: Call) -> None:
    """The layers' initial metadata, before the first message, unless the handler sent its own with them."""
    headers, call.headers = call.headers, ()
    await call.context.send_initial_metadata(headers)


def _wrap(
    plan: _Plan, handler: grpc.RpcMethodHandler[Any, Any], threads: HandlerThreads
) -> grpc.RpcMethodHandler[Any, Any]:
    # A coroutine function, or an async generator function, of the handler's kind.
    behavior: Any = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    streaming_requests, streaming_responses = handler.request_streaming, handler.response_streaming
    if is_sync(behavior):
        # grpc's sync API (def, generators, request iterators): the same, run in a thread of the pool.
        behavior = in_threads(behavior, streaming_requests, streaming_responses, threads)

    def arguments(request: Any, call: Call) -> tuple[Any, Any]:
        # Every handler gets the wrapper, unary ones too: their metadata merges with the layers'.
        context = _Context(call, plan)
        if streaming_requests:
            return (plan.request(call, message) async for message in request), context
        return plan.request(call, request), context

    if not inspect.isasyncgenfunction(behavior):
        # A unary reply, or a stream the handler writes with context.write and ends by returning.

        async def called(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = Call(context, plan.name)
            try:
                plan.enter(call)
                result = await behavior(*arguments(request, call))
                if not streaming_responses:
                    result = plan.response(call, result)
                call.code = _status(context, OK)
                return result
            except BaseException as error:
                await plan.failed(call, error)
                raise
            finally:
                plan.exit(call)

        wrapped: Any = called
    else:

        async def generated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            call = Call(context, plan.name)
            # Asked now, not at exit: a stream its caller cancelled may be closed after grpc freed the
            # call (grpcio 1.85: context.peer() then crashed the process, test_sync_handlers).
            call.peer()
            try:
                plan.enter(call)
                async for response in behavior(*arguments(request, call)):
                    if call.headers:
                        await _send_headers(call)
                    yield plan.response(call, response)
                call.code = _status(context, OK)
            except BaseException as error:
                await plan.failed(call, error)
                raise
            finally:
                plan.exit(call)

        wrapped = generated

    kind = {
        (False, False): "unary_unary",
        (False, True): "unary_stream",
        (True, False): "stream_unary",
        (True, True): "stream_stream",
    }[(streaming_requests, streaming_responses)]
    changes: dict[str, Any] = {kind: wrapped}
    if plan.decode is not None:
        changes["request_deserializer"] = None
    if plan.encode is not None:
        changes["response_serializer"] = None
    # grpc's handlers are namedtuples (grpc._utilities.RpcMethodHandler); its stubs declare a plain class.
    as_tuple: Any = handler
    replaced: grpc.RpcMethodHandler[Any, Any] = as_tuple._replace(**changes)
    return replaced


async def _unimplemented(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method")


# Wrapped handlers kept for generic handlers' methods: far more than any service declares.
MAX_CACHED = 1024


class Chain:
    """Layers, outermost first, and the handlers they wrapped (one per method and inner handler).

    Sync handlers run in ``threads`` (a pool of its default size when not given).
    """

    def __init__(self, layers: Iterable[Layer], threads: HandlerThreads | None = None) -> None:
        self._layers = tuple(layers)
        # Set by the server's lifecycle when it cancels the calls in flight (a forced stop, or the
        # grace period is over): from then on a cancelled call was cancelled by the server.
        self.cancelling = False
        self.threads = threads if threads is not None else HandlerThreads()
        self._wrapped: OrderedDict[
            tuple[str, int], tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = OrderedDict()
        # The methods the registry names (None: every method is); see Method.declared.
        self._declared: frozenset[str] | None = None
        self._unknown: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_unimplemented)

    def wrap(
        self, name: str, handler: grpc.RpcMethodHandler[Any, Any], *, known: bool = True
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` of the method ``name`` ("/pkg.Service/Method") with every layer's hooks about each call."""
        method = Method(name, known, handler, self._declared is None or name in self._declared)
        hooks = [h for layer in self._layers if (h := layer.hooks(method)) is not None]
        return _wrap(_Plan(method, hooks, self), handler, self.threads)

    def serve(self, server: grpc.aio.Server, registry: Registry) -> None:
        """Serve every handler ``registry`` holds on ``server``, each wrapped with the layers' hooks.

        Every method is served through one generic handler, none is registered by name with grpc.
        grpc.aio's server from 1.84 on keeps a pending request per registered method, plus one for
        everything else, and waits on all of them (asyncio.wait) for every call it accepts (1.78
        ignored registration by name). Ours had eight:
        that was a fifth of the Python function calls per call (cProfile) and 8 % of its
        instructions (callgrind, make bench). Looking the method up in a dict of our own costs one call.
        """
        self._declared = frozenset(registry.handlers) | {f"/{method}" for method in registry.methods()}
        by_name = {name: self.cached(name, handler) for name, handler in registry.handlers.items()}
        server.add_generic_rpc_handlers((_Fallback(self, by_name, registry.generic),))

    def cached(self, name: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """Like wrap, but once per (name, inner handler): generic handlers hand out the same object each call.

        At most MAX_CACHED, the least recently used forgotten: a generic handler that makes a new
        handler per call (or serves any name a caller sends) must not grow the cache without end.
        """
        # The entry holds the inner handler itself, so its id cannot be reused while it is cached.
        key = (name, id(handler))
        entry = self._wrapped.get(key)
        if entry is None:
            entry = self._wrapped[key] = (handler, self.wrap(name, handler))
            if len(self._wrapped) > MAX_CACHED:
                self._wrapped.popitem(last=False)
        else:
            self._wrapped.move_to_end(key)
        return entry[1]

    def unknown(self, name: str) -> grpc.RpcMethodHandler[Any, Any]:
        """UNIMPLEMENTED for a method nobody registered, through the layers (logged, counted, authenticated)."""
        return self.wrap(name, self._unknown, known=False)


class _Fallback(grpc.GenericRpcHandler):
    """Asked for every method: the registered ones by name, else the generic handlers', else UNIMPLEMENTED."""

    def __init__(
        self,
        chain: Chain,
        by_name: dict[str, grpc.RpcMethodHandler[Any, Any]],
        generic: Sequence[grpc.GenericRpcHandler],
    ) -> None:
        self._chain = chain
        self.by_name = by_name
        self.generic = tuple(generic)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        handler = self.by_name.get(details.method)
        if handler is not None:
            return handler
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return self._chain.cached(details.method, handler)
        return self._chain.unknown(details.method)
