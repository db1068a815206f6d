"""An app with blocking handlers (HELLO_APP=tests.blocking_app:register): ``Sync`` right, ``Async`` wrong.

Each takes the seconds to block as its request (bytes in and out, no proto): ``Sync`` is a ``def``
and runs in the pool; ``Async`` is an ``async def`` that blocks the event loop, the mistake the
loop's watch reports.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from service.registry import Registry

SERVICE = "tests.Blocking"
MAX_SECONDS = 5.0


def _seconds(request: bytes) -> float:
    return min(float(request.decode() or 0), MAX_SECONDS)


def blocks_in_a_thread(request: bytes, context: Any) -> bytes:
    time.sleep(_seconds(request))
    return b"slept"


async def blocks_the_loop(request: bytes, context: Any) -> bytes:
    time.sleep(_seconds(request))  # noqa: ASYNC251 - the mistake under test
    return b"slept"


def register(server: Registry) -> None:
    """tests.Blocking/Sync and tests.Blocking/Async."""
    handlers = {
        "Sync": grpc.unary_unary_rpc_method_handler(blocks_in_a_thread),
        "Async": grpc.unary_unary_rpc_method_handler(blocks_the_loop),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
