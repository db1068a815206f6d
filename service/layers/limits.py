"""Limits: a server-wide cap on calls in flight and a per-principal rate, answered RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc

from ..identity import current_caller
from ..status_details import NO_RETRY, pushback_within, quota_failure, retry_info
from .buckets import Buckets
from .hooks import Call, Hooks, Method, Refusal


class ConcurrencyLimit:
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
        self._max, self._on_limited = max_calls, on_limited
        self._exempt = tuple(f"/{service}/" for service in exempt_services)
        self._in_flight = 0
        self._hooks = Hooks(enter=self._take, exit=self._release)

    def hooks(self, method: Method) -> Hooks | None:
        """None for the exempt services."""
        return None if method.name.startswith(self._exempt) else self._hooks

    def _take(self, _call: Call) -> None:
        if self._in_flight >= self._max:
            self._on_limited("concurrency")
            busy = f"server busy: {self._max} calls in flight; retry shortly"
            # No automatic retry (pushback -1): a server at its cap is most often one of a fleet
            # that is overloaded as a whole, and retries are more load; the caller decides.
            quota = quota_failure("server", f"at most {self._max} calls in flight")
            raise Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, busy, details=(quota,), pushback_ms=NO_RETRY)
        self._in_flight += 1

    def _release(self, _call: Call) -> None:
        self._in_flight -= 1


class RateLimit:
    """Gives each principal a token bucket; a call without a token is refused, saying when to retry.

    Runs inside auth, which names the principal; calls to public services (health) have none and
    are not limited.
    """

    def __init__(
        self, per_second: float, burst: float, on_limited: Callable[[str], None] = lambda _limit: None
    ) -> None:
        self._buckets, self._per_second, self._on_limited = Buckets(per_second, burst), per_second, on_limited
        self._hooks = Hooks(enter=self._admit)

    def hooks(self, _method: Method) -> Hooks:
        """The same for every method."""
        return self._hooks

    def _admit(self, call: Call) -> None:
        caller = current_caller.get()
        if caller is None:
            return
        principal = caller.principal
        wait = self._buckets.take(principal)
        if wait:
            self._on_limited("rate")
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {self._per_second:g} calls per second exceeded; retry after {wait:.2f} s",
                # retry-after (seconds) is deprecated: RetryInfo and the pushback say it in the standard form.
                trailing_metadata=(("retry-after", f"{wait:.3f}"),),
                details=(
                    retry_info(wait),
                    quota_failure(f"principal:{principal}", f"{self._per_second:g} calls per second"),
                ),
                # grpc's retry waits this long and tries again, within the caller's deadline.
                pushback_ms=pushback_within(wait, call.context),
            )
