"""grpc's sync ServicerContext API over the chain's context, for a sync handler in a pool thread (sync_handlers.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, NoReturn

import grpc
import structlog

log = structlog.get_logger("hello.threads")


class CallEnded(grpc.RpcError):
    """Raised in a sync handler that reads a request or sends metadata after its call ended.

    Its caller cancelled, its deadline passed, or the server stopped; grpc's sync server raises a
    grpc.RpcError in the same places.
    """

    def __str__(self) -> str:
        return "the call has ended: cancelled, past its deadline, or the server is stopping"


class Abort(Exception):
    """A sync handler's context.abort(): the status goes out from the loop, even if the handler catches this."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]) -> None:
        super().__init__(f"aborted with {code.name}")
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata

    async def send(self, context: Any) -> NoReturn:
        """End the call with this status; raises grpc's AbortError, as context.abort does."""
        await context.abort(self.code, self.details, self.trailing_metadata)
        raise AssertionError("context.abort returned")  # it raises; this tells mypy so


class SyncContext:
    """grpc's sync ServicerContext API over the chain's context, for a handler running in a pool thread.

    What needs the event loop (sending initial metadata, reading the next request) is handed to it
    and waited for, never longer than the call lasts (then CallEnded). abort raises, as grpc's sync
    abort does. Callbacks (add_callback) run on the loop when the call ends, however it ends: they
    must not block (setting a threading.Event that the handler waits on is their use).
    """

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._context, self._loop = context, loop
        self._ended = False
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._callbacks: list[Callable[[], object]] = []
        self.aborted: Abort | None = None

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return str(self._context.peer())

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self._context.peer_identity_key()  # type: ignore[no-any-return]

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()  # type: ignore[no-any-return]

    def is_active(self) -> bool:
        """Whether the call runs: False once its caller cancelled, its deadline passed or the server stopped it."""
        return not self._ended

    def add_callback(self, callback: Callable[[], object]) -> bool:
        """Call ``callback`` (on the loop) when the call ends; False, and never called, if it has ended."""
        if self._ended:
            return False
        self._callbacks.append(callback)
        return True

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def code(self) -> Any:
        return self._context.code()

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def details(self) -> Any:
        return self._context.details()

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._context.set_trailing_metadata(metadata)

    def trailing_metadata(self) -> Any:
        return self._context.trailing_metadata()

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()

    def send_initial_metadata(self, metadata: Any) -> None:
        self.on_loop(self._context.send_initial_metadata(metadata))

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self.aborted = Abort(code, details, tuple(trailing_metadata))
        raise self.aborted

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self.abort(status.code, status.details, status.trailing_metadata)

    def on_loop(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the loop and wait for its result, at most until the call ends."""
        if self._ended:
            coroutine.close()
            raise CallEnded
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop is closed: the process is exiting
            coroutine.close()
            raise CallEnded from None
        self._waiting.add(future)
        if self._ended:  # end() ran between the check above and the add
            future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise CallEnded from None
        finally:
            self._waiting.discard(future)

    def end(self) -> None:
        """The call is over (called on the loop): waits in the handler's thread end, and its callbacks run."""
        self._ended = True
        for future in list(self._waiting):
            future.cancel()
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                log.exception("a sync handler's callback failed")
