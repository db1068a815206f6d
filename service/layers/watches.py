"""Watch limit: health Watch streams capped per connection and on the whole server, RESOURCE_EXHAUSTED beyond."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import grpc
from grpc_health.v1 import health

from ..status_details import NO_RETRY, quota_failure
from .hooks import Call, Hooks, Method, Refusal

WATCH = f"/{health.SERVICE_NAME}/Watch"


class OpenWatches:
    """The Watch streams open on the whole server, every port's, and how many may be."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0


class WatchLimit:
    """Refuses a health Watch beyond ``per_connection`` on its connection or beyond ``server_wide``'s limit.

    Health answers without credentials (probes and balancers hold none), and the concurrency cap
    leaves it alone so that probes get through a full server; a Watch stream stays open for as
    long as its caller likes, so without this anyone could hold streams, and their memory, by
    the thousand. A client that watches health holds one per connection. One instance per port
    (a connection is its peer address there); ``server_wide`` is shared by every port's.
    """

    def __init__(
        self,
        server_wide: OpenWatches,
        per_connection: int,
        on_limited: Callable[[str], None] = lambda _limit: None,
    ) -> None:
        self._server_wide, self._per_connection, self._on_limited = server_wide, per_connection, on_limited
        self._by_connection: dict[str, int] = {}
        self._hooks = Hooks(enter=self._take, exit=self._release)

    def hooks(self, method: Method) -> Hooks | None:
        """Only Watch's calls."""
        return self._hooks if method.name == WATCH else None

    def _take(self, call: Call) -> None:
        peer, server_wide = call.peer(), self._server_wide
        on_connection = self._by_connection.get(peer, 0)
        if on_connection >= self._per_connection:
            self._refuse("connection", f"at most {self._per_connection} Watch streams on one connection")
        if server_wide.count >= server_wide.limit:
            self._refuse("server", f"at most {server_wide.limit} Watch streams on the server")
        self._by_connection[peer] = on_connection + 1
        server_wide.count += 1

    def _refuse(self, subject: str, limit: str) -> NoReturn:
        self._on_limited("watch")
        # No automatic retry: a watching client's health check retries with its own backoff.
        quota = quota_failure(subject, limit)
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"{limit}; retry later", details=(quota,), pushback_ms=NO_RETRY
        )

    def _release(self, call: Call) -> None:
        peer = call.peer()
        left = self._by_connection[peer] - 1
        if left:
            self._by_connection[peer] = left
        else:
            del self._by_connection[peer]
        self._server_wide.count -= 1
