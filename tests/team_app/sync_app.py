"""The team's service with grpc's sync API (def handlers, generators, request iterators), as most teams write it.

It does what app.py's async servicer does, script for script, so that the tests run every case
for both. A handler that waits notices the end of its call as grpc's sync API lets it: a callback
(context.add_callback) wakes it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog

from .app import CODES, InventorySettings, _metadata
from .generated.inventory.v1 import inventory_pb2 as pb
from .generated.inventory.v1 import inventory_pb2_grpc

log = structlog.get_logger("teamapp")


class _Ended(Exception):
    """The call ended while the handler waited."""


def _follow(script: pb.Script, context: Any, method: str) -> None:
    """Do what the script says before the handler answers."""
    try:
        if script.initial_metadata:
            context.send_initial_metadata(_metadata(script.initial_metadata))
        if script.trailing_metadata:
            context.set_trailing_metadata(_metadata(script.trailing_metadata))
        if script.sleep_seconds:
            ended = threading.Event()
            if not context.add_callback(ended.set):  # False: the call has already ended
                ended.set()
            if ended.wait(script.sleep_seconds):
                raise _Ended
    except (_Ended, grpc.RpcError):
        # grpc.RpcError: the call ended while the metadata went out (the caller may cancel once it has them).
        log.info("handler cancelled", handler=method)
        raise
    if script.code:
        context.abort(CODES[script.code], script.details)


class SyncInventory(inventory_pb2_grpc.InventoryServiceServicer):
    """Answers items as scripted, in sync handlers; ForgetItem is left to the generated base class."""

    def __init__(self, settings: InventorySettings) -> None:
        self._prefix = settings.sku_prefix

    def _item(self, item: pb.Item, script: pb.Script) -> pb.Item:
        return pb.Item(
            sku=self._prefix + item.sku, payload=b"x" * script.reply_bytes, updated=item.updated, labels=item.labels
        )

    def GetItem(self, request: pb.GetItemRequest, context: Any) -> pb.GetItemResponse:
        _follow(request.script, context, "GetItem")
        return pb.GetItemResponse(item=self._item(request.item, request.script))

    def ListItems(self, request: pb.ListItemsRequest, context: Any) -> Iterator[pb.ListItemsResponse]:
        _follow(request.script, context, "ListItems")
        for index in range(request.count):
            yield pb.ListItemsResponse(item=self._item(pb.Item(sku=f"sku-{index}"), request.script), index=index)

    def UploadItems(self, request_iterator: Iterator[pb.UploadItemsRequest], context: Any) -> pb.UploadItemsResponse:
        count = size = 0
        for request in request_iterator:
            if count == 0:
                _follow(request.script, context, "UploadItems")
            count, size = count + 1, size + len(request.item.payload)
        return pb.UploadItemsResponse(count=count, payload_bytes=size)

    def SyncItems(
        self, request_iterator: Iterator[pb.SyncItemsRequest], context: Any
    ) -> Iterator[pb.SyncItemsResponse]:
        for index, request in enumerate(request_iterator):
            if index == 0:
                _follow(request.script, context, "SyncItems")
            yield pb.SyncItemsResponse(item=self._item(request.item, request.script))


def register(server: Any) -> None:
    """The team's registration line, unchanged: the servicer is sync."""
    settings = InventorySettings(_env_file=server.env_file)  # type: ignore[call-arg]
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(SyncInventory(settings), server)


@asynccontextmanager
async def app(server: Any) -> AsyncIterator[None]:
    """The same lifespan as app.py's."""
    log.info("inventory starting")
    register(server)
    yield
    log.info("inventory stopped")
