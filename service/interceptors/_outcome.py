"""The status code a call ended with, as seen from a wrapper around its handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _status(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return default
    return code if isinstance(code, grpc.StatusCode) else _BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)


class Outcome:
    """Filled in when the wrapped call ends: UNKNOWN unless something better is known.

    An exception that is not grpc's counts as INTERNAL: the error interceptor, outside the
    layers that record outcomes, turns it into exactly that.
    """

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code = grpc.StatusCode.UNKNOWN


@asynccontextmanager
async def outcome(context: grpc.aio.ServicerContext, result: Outcome) -> AsyncIterator[None]:
    """Record in ``result`` the code of the call that runs inside this block."""
    try:
        yield
        # A handler may set a code without raising.
        result.code = _status(context, grpc.StatusCode.OK)
    except grpc.aio.AbortError:
        result.code = _status(context, grpc.StatusCode.UNKNOWN)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        result.code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        result.code = grpc.StatusCode.INTERNAL
        raise
