"""An app that fails holding secrets (HELLO_APP=tests.failing_app:register), for the error-log tests.

SayHello treats the name as a card number: it charges it with the caller's token in scope, logs the
failure the ways a team's handler does (structlog's exception and exc_info=True, a stdlib logger) and
lets the exception escape to the stack. The app's shutdown fails too, holding the last card number.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog

from service.generated.rpc_package import helloworld_pb2 as pb
from service.generated.rpc_package import helloworld_pb2_grpc
from service.registry import Registry

log = structlog.get_logger("tests.failing_app")
stdlib_log = logging.getLogger("tests.failing_app")


class PaymentDeclined(Exception):
    """What a payment provider's client raises."""


def charge(card_number: str, authorization: str) -> None:
    """A payment that fails: its frame holds the card number and the caller's bearer token."""
    raise PaymentDeclined("declined by the bank")


class Payments(helloworld_pb2_grpc.HelloWorldServiceServicer):
    """Charges the card number sent as the name, and fails."""

    def __init__(self) -> None:
        self.last_card = ""

    async def SayHello(self, request: pb.HelloRequest, context: Any) -> pb.HelloReply:
        metadata = dict(context.invocation_metadata())
        authorization = metadata["authorization"]
        card_number = request.name
        self.last_card = card_number
        try:
            charge(card_number, authorization)
        except PaymentDeclined:
            log.exception("charge failed")
            log.error("charge failed, exc_info", exc_info=True)
            stdlib_log.exception("charge failed, stdlib")
            raise
        return pb.HelloReply(message="charged")


@asynccontextmanager
async def _lifespan(payments: Payments) -> AsyncIterator[None]:
    yield
    card_number = payments.last_card
    raise RuntimeError(f"the payment pool did not close ({len(card_number)} digits pending)")


def register(server: Registry) -> AbstractAsyncContextManager[None]:
    """The failing HelloWorldService, and a lifespan whose shutdown fails."""
    payments = Payments()
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(payments, server)
    return _lifespan(payments)
