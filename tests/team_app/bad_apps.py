"""Apps that are wrong in each way HELLO_APP can be wrong; hello-server must refuse each with one line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from grpc_health.v1 import health, health_pb2_grpc

from .app import register

not_callable = 42


def raises(server: Any) -> None:
    raise RuntimeError("cannot reach the stock database\nsecond line")


def nothing(server: Any) -> None:
    """Registers no service."""


def twice(server: Any) -> None:
    register(server)
    register(server)


def health_too(server: Any) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)


@asynccontextmanager
async def failing_startup(server: Any) -> AsyncIterator[None]:
    register(server)
    raise ConnectionError("the pool refused the connection")
    yield
