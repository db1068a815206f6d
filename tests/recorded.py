"""What a server records of a call (metrics, access line, span) can land just after the caller has its reply."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
TIMEOUT = 5.0
# Short: most records are there at the first look or the next one.
INTERVAL = 0.01


async def recorded(read: Callable[[], T | Awaitable[T]], done: Callable[[T], bool], timeout: float = TIMEOUT) -> T:
    """``read()`` again until ``done`` accepts what it read, for ``timeout`` seconds at most; the last reading.

    A refused or aborted call's status reaches the caller before the server's exit hooks have run
    (its access line, its metrics, its span), and a server process's lines reach the test through a
    pipe. A test asserts on what this returns, so a record that never comes fails with what was read.
    """
    deadline = time.monotonic() + timeout
    while True:
        reading = read()
        value: T = await reading if inspect.isawaitable(reading) else reading  # type: ignore[assignment]
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(INTERVAL)
