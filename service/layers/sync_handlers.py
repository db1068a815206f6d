"""Sync handlers: grpc's sync servicer API, run in a bounded pool of threads (threads.py), never on the event loop.

A sync handler (a ``def``: a function, a generator, one that takes a request iterator) holds one
thread from its start to its end, as in grpc's sync server, so thread-local state (a database
session) stays its own; its messages, metadata and status pass through the chain on the loop.
grpc.aio adapts sync handlers itself (its migration_thread_pool), but only those it is handed
unwrapped, and the chain hands it async wrappers so that every layer's hooks run on the loop. Its
adapter would not serve as it is: its sync context wraps only grpc's own context (not the chain's,
which adds the layers' metadata), runs add_callback's callbacks only after a unary handler returned,
has no is_active, and a sync generator's thread blocks for good once its caller is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .sync_context import Abort, SyncContext
from .threads import HandlerThreads


def is_sync(behavior: Any) -> bool:
    """Whether ``behavior`` is a sync handler: no coroutine or async generator function (grpc.aio's rule)."""
    return not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior))


# The end of a stream, where a message would be.
_END = object()


async def _next(messages: AsyncIterator[Any]) -> Any:
    try:
        return await messages.__anext__()
    except StopAsyncIteration:
        return _END


class _Requests(Iterator[Any]):
    """The request stream as grpc's sync API gives it: next() waits for the next message (or the stream's end)."""

    def __init__(self, messages: AsyncIterator[Any], context: SyncContext) -> None:
        self._messages, self._context = messages, context

    def __next__(self) -> Any:
        message = self._context.on_loop(_next(self._messages))
        if message is _END:
            raise StopIteration
        return message


class _Replies:
    """A sync handler's replies, made in its thread and taken on the loop one at a time.

    The thread makes the next reply while the loop sends the last one, and waits for the loop to
    take it before making another; it stops, closing the handler's generator, when the call ends.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, context: SyncContext) -> None:
        self._loop, self._context = loop, context
        # (True, reply), or (False, the exception that ended the handler, or None).
        self._queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self._taken = threading.Semaphore(0)

    def make(self, behavior: Callable[[Any, SyncContext], Any], request: Any) -> None:
        """Run the handler and hand over each reply (in the pool thread)."""
        try:
            replies = behavior(request, self._context)
            try:
                for reply in replies:
                    self._hand((True, reply))
                    self._taken.acquire()
                    if not self._context.is_active():
                        break
            finally:
                # A generator left early runs its finally blocks now, in its own thread.
                close = getattr(replies, "close", None)
                if close is not None:
                    close()
        except BaseException as error:
            self._hand((False, error))
        else:
            self._hand((False, None))

    def _hand(self, item: tuple[bool, Any]) -> None:
        # A closed loop (RuntimeError): the process is exiting, nobody waits for it any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def next(self) -> Any:
        """The next reply, as the thread hands it over, or _END; raises what ended the handler."""
        is_reply, value = await self._queue.get()
        if is_reply:
            self._taken.release()  # the thread may make the next one while this one is sent
            return value
        if value is not None:
            raise value
        return _END

    def stop(self) -> None:
        """Wake the thread if it waits for the loop to take a reply (the call has ended)."""
        self._taken.release()


def in_threads(
    behavior: Callable[..., Any], streaming_requests: bool, streaming_responses: bool, threads: HandlerThreads
) -> Callable[..., Any]:
    """``behavior``, a sync handler, as an async one of the same kind that runs it in ``threads``.

    The handler sees the call's context variables (its log context, the caller, the span) in its thread.
    """
    if not streaming_responses:

        async def unary(request: Any, context: Any) -> Any:
            loop = asyncio.get_running_loop()
            sync = SyncContext(context, loop)
            if streaming_requests:
                request = _Requests(request, sync)
            try:
                try:
                    reply = await loop.run_in_executor(threads, contextvars.copy_context().run, behavior, request, sync)
                except Abort:
                    reply = None
                if sync.aborted is not None:  # raised, or caught by the handler: aborted either way
                    await sync.aborted.send(context)
                return reply
            finally:
                sync.end()

        return unary

    async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        sync = SyncContext(context, loop)
        if streaming_requests:
            request = _Requests(request, sync)
        replies = _Replies(loop, sync)
        # A call that ends while it waits for a thread never starts.
        running = loop.run_in_executor(threads, contextvars.copy_context().run, replies.make, behavior, request)
        try:
            try:
                while (reply := await replies.next()) is not _END:
                    yield reply
            except Abort:
                pass
            if sync.aborted is not None:
                await sync.aborted.send(context)
        finally:
            sync.end()
            replies.stop()
            if not running.done():
                running.cancel()

    return streamed
