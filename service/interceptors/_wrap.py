"""Wrap a method handler's behaviour for every RPC kind, keeping its style (async generator or context.write).

Each interceptor supplies ``around(context)``, an async context manager entered before the handler
runs and left when it ends, with the handler's exception (if any) thrown into it. Requests and
responses can be passed through inbound and outbound hooks on their way in and out.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]
Inbound = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Outbound = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


async def _same(message: Any, _context: grpc.aio.ServicerContext) -> Any:
    return message


class _Context:
    """The servicer context, with read() and write() passed through the inbound and outbound hooks."""

    def __init__(self, context: grpc.aio.ServicerContext, inbound: Inbound, outbound: Outbound) -> None:
        self._context, self._inbound, self._outbound = context, inbound, outbound

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        if message is grpc.aio.EOF:
            return message
        return await self._inbound(message, self._context)

    async def write(self, message: Any) -> None:
        await self._context.write(await self._outbound(message, self._context))


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    around: Around,
    *,
    inbound: Inbound | None = None,
    outbound: Outbound | None = None,
    codec: bool = False,
) -> grpc.RpcMethodHandler:
    """The same handler with ``around`` wrapped about each call and messages passed through the hooks.

    With ``codec``, the hooks take over the handler's (de)serializers: grpc hands the hooks bytes
    and sends the bytes the outbound hook returns.
    """
    inbound_hook, outbound_hook = inbound or _same, outbound or _same
    hooked = inbound is not None or outbound is not None
    behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    streaming_requests, streaming_responses = handler.request_streaming, handler.response_streaming

    async def requests(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not streaming_requests:
            return await inbound_hook(request, context)
        if inbound is None:
            return request
        return (await inbound_hook(message, context) async for message in request)

    def servicer_context(context: grpc.aio.ServicerContext) -> Any:
        return _Context(context, inbound_hook, outbound_hook) if hooked else context

    if not streaming_responses:

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context):
                response = await behavior(await requests(request, context), servicer_context(context))
                return await outbound_hook(response, context)

        wrapped: Any = unary_response
    elif inspect.isasyncgenfunction(behavior):

        async def generated_responses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(context):
                async for response in behavior(await requests(request, context), servicer_context(context)):
                    yield await outbound_hook(response, context)

        wrapped = generated_responses
    else:

        async def written_responses(request: Any, context: grpc.aio.ServicerContext) -> None:
            async with around(context):
                await behavior(await requests(request, context), servicer_context(context))

        wrapped = written_responses

    kind = {
        (False, False): "unary_unary",
        (False, True): "unary_stream",
        (True, False): "stream_unary",
        (True, True): "stream_stream",
    }[(streaming_requests, streaming_responses)]
    if codec:
        return handler._replace(**{kind: wrapped, "request_deserializer": None, "response_serializer": None})
    return handler._replace(**{kind: wrapped})


class WrappedHandlers:
    """Wrapped handlers cached per (name, inner handler): each method is wrapped once, not per call.

    An entry holds the inner handler itself, so its id cannot be reused while it is cached.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(
        self, name: str, handler: grpc.RpcMethodHandler, build: Callable[[], grpc.RpcMethodHandler]
    ) -> grpc.RpcMethodHandler:
        entry = self._entries.get((name, id(handler)))
        if entry is None:
            entry = (handler, build())
            self._entries[(name, id(handler))] = entry
        return entry[1]


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that wraps each method handler once and reuses the result for every call.

    Wrapped handlers are kept per inner handler object: registered handlers are created once, so
    this stays as small as the set of methods, whatever method names callers send.
    """

    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._wrapped.get("", handler, lambda: self.wrap(handler))


class PerMethodInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor whose wrapping depends on the method (labels, span names), built once per method.

    Methods outside ``known_methods`` ("/pkg.Service/Method") share the name ``unknown_method``, so
    callers cannot grow the cache (or metric series) by inventing method names.
    """

    def __init__(self, known_methods: Iterable[str], unknown_method: str = "/unknown/unknown") -> None:
        self._known = frozenset(known_methods)
        self._unknown = unknown_method
        self._wrapped = WrappedHandlers()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method if details.method in self._known else self._unknown
        return self._wrapped.get(method, handler, lambda: self.wrap(method, handler))
