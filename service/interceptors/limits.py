"""Limits: a server-wide cap on calls in flight and a per-principal rate, answered RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import grpc

from ..limits import Buckets
from ._wrap import Continuation, WrappingInterceptor, wrap_handler
from .auth import current_principal
from .request_id import HEADER, current_request_id


class ConcurrencyLimitInterceptor(WrappingInterceptor):
    """Refuses calls beyond ``max_calls`` in flight, before auth, so a flood cannot queue without bound.

    Calls to ``exempt_services`` (health) neither count nor are refused: probes must get through a
    full server, and every client that watches health holds a Watch stream open all the time.
    """

    def __init__(
        self,
        max_calls: int,
        exempt_services: Iterable[str] = (),
        on_limited: Callable[[str], None] = lambda _limit: None,
    ) -> None:
        super().__init__()
        self._max, self._on_limited = max_calls, on_limited
        self._exempt = tuple(f"/{service}/" for service in exempt_services)
        self._in_flight = 0

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(self._exempt):
            return await continuation(details)
        return await super().intercept_service(continuation, details)

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, self._slot)

    @asynccontextmanager
    async def _slot(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if self._in_flight >= self._max:
            self._on_limited("concurrency")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"server busy: {self._max} calls in flight; retry shortly"
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1


class RateLimitInterceptor(WrappingInterceptor):
    """Gives each principal a token bucket; a call without a token is refused, saying when to retry.

    Runs inside auth, which names the principal; calls to public services (health) have none and
    are not limited.
    """

    def __init__(
        self, per_second: float, burst: float, on_limited: Callable[[str], None] = lambda _limit: None
    ) -> None:
        super().__init__()
        self._buckets, self._per_second, self._on_limited = Buckets(per_second, burst), per_second, on_limited

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, self._admit)

    @asynccontextmanager
    async def _admit(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        principal = current_principal.get()
        if principal is not None:
            wait = self._buckets.take(principal)
            if wait:
                self._on_limited("rate")
                # Replaces the trailers the request-id interceptor set, so it carries the id along.
                context.set_trailing_metadata((("retry-after", f"{wait:.3f}"), (HEADER, current_request_id.get())))
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self._per_second:g} calls per second exceeded; retry after {wait:.2f} s",
                )
        yield
