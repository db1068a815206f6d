"""The layers around every call, one concern each, and the chain that runs them; server/stack.py orders them.

An app's own layer is built of the same parts (Layer, Hooks, Call, Method, Refusal) and added with
``server.add_layer`` (README: Your own layers). Tracing (layers.tracing) is not imported here: it
needs the [tracing] extra.
"""

from __future__ import annotations

from .access_log import AccessLog
from .auth import Auth
from .chain import Chain
from .hooks import Call, Hooks, Layer, Method, Refusal
from .limits import ConcurrencyLimit, RateLimit
from .metrics import Metrics
from .request_id import RequestId
from .watches import WatchLimit
from .wire import Wire

__all__ = [
    "AccessLog",
    "Auth",
    "Call",
    "Chain",
    "ConcurrencyLimit",
    "Hooks",
    "Layer",
    "Method",
    "Metrics",
    "RateLimit",
    "Refusal",
    "RequestId",
    "WatchLimit",
    "Wire",
]
