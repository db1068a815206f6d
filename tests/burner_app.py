"""An app for load-report tests (HELLO_APP=tests.burner_app:register): Hello, and a call that keeps the process busy."""

from __future__ import annotations

import threading
import time

import grpc

from service.hello import register as register_hello
from service.registry import Registry

BURN = "/tests.Burner/Burn"
MAX_SECONDS = 10.0


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def _burn(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    # The request is the seconds to stay busy, bounded; a thread spins them while the server serves.
    seconds = min(float(request.decode() or 0), MAX_SECONDS)
    threading.Thread(target=_spin, args=(seconds,), daemon=True).start()
    return b"burning"


def register(server: Registry) -> None:
    """The Hello service and tests.Burner/Burn."""
    register_hello(server)
    burner = grpc.method_handlers_generic_handler("tests.Burner", {"Burn": grpc.unary_unary_rpc_method_handler(_burn)})
    server.add_generic_rpc_handlers((burner,))
