"""Sync handlers: grpc's sync servicer API, run in a bounded pool of threads, never on the event loop.

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
import concurrent.futures
import contextlib
import contextvars
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NoReturn

import grpc
import structlog

log = structlog.get_logger("hello.threads")

# Threads a chain built without settings gets; HELLO_HANDLER_THREADS' default (Starlette's, anyio's).
DEFAULT_THREADS = 40


def is_sync(behavior: Any) -> bool:
    """Whether ``behavior`` is a sync handler: no coroutine or async generator function (grpc.aio's rule)."""
    return not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior))


class HandlerThreads(concurrent.futures.Executor):
    """At most ``size`` threads for sync handlers, started only when calls need them.

    Daemon threads: a handler still blocked when the grace period is over (or after a second stop
    signal) must not keep the process from exiting, as ThreadPoolExecutor's would (its exit joins them).
    """

    def __init__(self, size: int = DEFAULT_THREADS) -> None:
        self.size = size
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._work = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.busy = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` in a thread of the pool, as soon as one is free."""
        if kwargs:
            raise TypeError("HandlerThreads.submit takes positional arguments only")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the server is stopping: no new sync handler starts")
            self._work.put((future, fn, args))
            # An idle thread takes it; else a new one, up to the size; else it waits for the first free.
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
                name = f"hello-handler-{len(self._threads) + 1}"
                thread = threading.Thread(target=self._serve, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            self._run(*item)
            del item  # the finished call's objects go now, not when the next call comes
            self._idle.release()

    def _run(self, future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # its call ended while it waited for a thread: it never starts
        with self._lock:
            self.busy += 1
        try:
            future.set_result(fn(*args))
        except BaseException as error:
            future.set_exception(error)
        finally:
            with self._lock:
                self.busy -= 1

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        """Start nothing more, drop what waits for a thread; handlers still running are left to finish."""
        with self._lock:
            self._closed = True
            while cancel_futures:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class CallEnded(grpc.RpcError):
    """Raised in a sync handler that reads a request or sends metadata after its call ended.

    Its caller cancelled, its deadline passed, or the server stopped; grpc's sync server raises a
    grpc.RpcError in the same places.
    """

    def __str__(self) -> str:
        return "the call has ended: cancelled, past its deadline, or the server is stopping"


class _Abort(Exception):
    """A sync handler's context.abort(): the status goes out from the loop, even if the handler catches this."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]) -> None:
        super().__init__(f"aborted with {code.name}")
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata

    async def send(self, context: Any) -> NoReturn:
        """End the call with this status; raises grpc's AbortError, as context.abort does."""
        await context.abort(self.code, self.details, self.trailing_metadata)
        raise AssertionError("context.abort returned")  # it raises; this tells mypy so


# The end of a stream, where a message would be.
_END = object()


async def _next(messages: AsyncIterator[Any]) -> Any:
    try:
        return await messages.__anext__()
    except StopAsyncIteration:
        return _END


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
        self.aborted: _Abort | None = None

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
        self.aborted = _Abort(code, details, tuple(trailing_metadata))
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
                except _Abort:
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
            except _Abort:
                pass
            if sync.aborted is not None:
                await sync.aborted.send(context)
        finally:
            sync.end()
            replies.stop()
            if not running.done():
                running.cancel()

    return streamed
