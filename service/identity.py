"""Who is calling: the principal the auth layer proved for the call being handled, and how it was proven.

from service.identity import caller

def GetOrder(self, request, context):        # sync or async, and in a layer after auth
    who = caller()                            # Caller(principal='billing', proven_by='token')
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

Proof = Literal["token", "certificate", "token+certificate"]

# How HELLO_AUTH__MODE proves a caller: in token+mtls the token names the principal, and the
# client certificate was verified too.
PROVEN_BY: dict[str, Proof] = {"token": "token", "mtls": "certificate", "token+mtls": "token+certificate"}


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the name logs and policies use, and what proved it."""

    principal: str
    proven_by: Proof


# Set by the auth layer for the call running in this task (and, copied, in a sync handler's thread).
current_caller: ContextVar[Caller | None] = ContextVar("current_caller", default=None)


def caller() -> Caller | None:
    """The caller of the call being handled; None where no credentials were asked (health, public reflection)."""
    return current_caller.get()
