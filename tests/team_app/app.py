"""A team's own service, written outside this repository's package: registered only through HELLO_APP.

The tests copy this folder beside its generated code (``generated/``, from ``protos/`` by
scripts/gen_protos.py) into a temporary package ``teamapp`` on PYTHONPATH. Each request's ``script``
says what the handler does, so the tests can check that the stack's layers pass it all through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog
from pydantic_settings import BaseSettings, SettingsConfigDict

from .generated.inventory.v1 import inventory_pb2 as pb
from .generated.inventory.v1 import inventory_pb2_grpc

log = structlog.get_logger("teamapp")
CODES = {code.value[0]: code for code in grpc.StatusCode}


class InventorySettings(BaseSettings):
    """The team's own settings, from INVENTORY_* variables and the server's env file."""

    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    sku_prefix: str = ""


def _metadata(values: Mapping[str, bytes]) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((key, value if key.endswith("-bin") else value.decode()) for key, value in sorted(values.items()))


async def _follow(script: pb.Script, context: Any, method: str) -> None:
    """Do what the script says before the handler answers."""
    try:
        if script.initial_metadata:
            await context.send_initial_metadata(_metadata(script.initial_metadata))
        if script.trailing_metadata:
            context.set_trailing_metadata(_metadata(script.trailing_metadata))
        if script.sleep_seconds:
            await asyncio.sleep(script.sleep_seconds)
    except asyncio.CancelledError:
        # Also while the initial metadata is sent: the caller may cancel as soon as it has them.
        log.info("handler cancelled", handler=method)
        raise
    if script.code:
        await context.abort(CODES[script.code], script.details)


class Inventory(inventory_pb2_grpc.InventoryServiceServicer):
    """Answers items as scripted; ForgetItem is left to the generated base class (UNIMPLEMENTED)."""

    def __init__(self, settings: InventorySettings) -> None:
        self._prefix = settings.sku_prefix

    def _item(self, item: pb.Item, script: pb.Script) -> pb.Item:
        return pb.Item(
            sku=self._prefix + item.sku, payload=b"x" * script.reply_bytes, updated=item.updated, labels=item.labels
        )

    async def GetItem(self, request: pb.GetItemRequest, context: Any) -> pb.GetItemResponse:
        await _follow(request.script, context, "GetItem")
        return pb.GetItemResponse(item=self._item(request.item, request.script))

    async def ListItems(self, request: pb.ListItemsRequest, context: Any) -> AsyncIterator[pb.ListItemsResponse]:
        await _follow(request.script, context, "ListItems")
        for index in range(request.count):
            yield pb.ListItemsResponse(item=self._item(pb.Item(sku=f"sku-{index}"), request.script), index=index)

    async def UploadItems(
        self, request_iterator: AsyncIterator[pb.UploadItemsRequest], context: Any
    ) -> pb.UploadItemsResponse:
        count = size = 0
        async for request in request_iterator:
            if count == 0:
                await _follow(request.script, context, "UploadItems")
            count, size = count + 1, size + len(request.item.payload)
        return pb.UploadItemsResponse(count=count, payload_bytes=size)

    async def SyncItems(self, request_iterator: AsyncIterator[pb.SyncItemsRequest], context: Any) -> None:
        first = True
        async for request in request_iterator:
            if first:
                await _follow(request.script, context, "SyncItems")
                first = False
            await context.write(pb.SyncItemsResponse(item=self._item(request.item, request.script)))


def register(server: Any) -> None:
    """The simplest app: the team's registration line, unchanged."""
    settings = InventorySettings(_env_file=server.env_file)  # type: ignore[call-arg]
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(Inventory(settings), server)


@asynccontextmanager
async def app(server: Any) -> AsyncIterator[None]:
    """An app with start-up and shutdown work, as Starlette's lifespan."""
    log.info("inventory starting")
    register(server)
    yield
    log.info("inventory stopped")
