"""The layers around every call, one concern each, and the chain that runs them; server/stack.py orders them.

Tracing (layers.tracing) is not imported here: it needs the [tracing] extra.
"""

from __future__ import annotations

from .access_log import AccessLog
from .auth import Auth
from .chain import Chain
from .hooks import Layer
from .limits import ConcurrencyLimit, RateLimit
from .metrics import Metrics
from .request_id import RequestId
from .watches import WatchLimit
from .wire import Wire

__all__ = [
    "AccessLog",
    "Auth",
    "Chain",
    "ConcurrencyLimit",
    "Layer",
    "Metrics",
    "RateLimit",
    "RequestId",
    "WatchLimit",
    "Wire",
]
