"""The threads sync handlers run in: a bounded pool, started as calls need them (sync_handlers.py uses it)."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

# Threads a chain built without settings gets; HELLO_HANDLER_THREADS' default (Starlette's, anyio's).
DEFAULT_THREADS = 40


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
