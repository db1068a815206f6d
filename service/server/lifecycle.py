"""The lifecycle: start the built server, serve until told to stop, drain and shut down in order."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..config.settings import Settings
from ..observability.loop_watch import LoopWatch
from ..observability.metrics import PUSH_SECONDS, ServerMetrics
from ..registry import Registry
from .app import App, load_app, started
from .factory import BuiltServer, build_server
from .memory import TRIM_SECONDS, release_free_memory
from .metrics_http import serve_metrics

if TYPE_CHECKING:
    from .bounded_http import BoundedHttpServer

log = structlog.get_logger("hello.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A SIGTERM this soon after the first is the same request, delivered twice (see capture_signals).
SAME_SIGTERM_SECONDS = 0.5


async def _until_first(*awaitables: Awaitable[object]) -> None:
    """Wait for whichever finishes first and cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # Collect the cancellations, so none is reported as an exception never retrieved.
        await asyncio.gather(*tasks, return_exceptions=True)


async def _push_every(metrics: ServerMetrics, seconds: float) -> None:
    """Hand the counts to prometheus-client now and then, for what a scrape of this process does not cover.

    A worker's metrics are read from files by its supervisor, and a scrape filtered by name[] skips
    the collector that hands them over at every scrape.
    """
    while True:
        await asyncio.sleep(seconds)
        metrics.push()


async def _release_memory_every(seconds: float) -> None:
    """Hand the memory a burst freed (a flood of calls or streams, ended) back to the system, now and then."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        # In a thread: giving back a few hundred MiB takes tens of milliseconds.
        if not await loop.run_in_executor(None, release_free_memory):
            return


async def start(built: BuiltServer) -> None:
    """Start every server ``built`` holds: the main one and, when on, the health port."""
    for server in built.servers:
        await server.start()


async def stop(built: BuiltServer, grace: float | None) -> None:
    """Stop every server (calls in flight get ``grace`` seconds; None: none), then the sync handlers' threads."""
    try:
        await asyncio.gather(*(s.stop(grace) for s in built.servers))
    finally:
        end_threads(built)


def end_threads(built: BuiltServer) -> None:
    """No sync handler starts any more; one still running is abandoned to its caller's UNAVAILABLE, and said so."""
    threads = built.chain.threads
    threads.shutdown()
    if threads.busy:
        log.warning("sync handlers still running at exit: abandoned", handlers=threads.busy)


class Lifecycle:
    """A built server from start to stop: ``startup()``, ``main_loop()`` until ``stop()``, then ``shutdown()``.

    It handles no signals: hello-server wires SIGTERM and SIGINT to ``stop`` with ``capture_signals``; a
    test or an embedder calls ``stop`` itself. With ``ready_fd`` this process is a worker: it leaves
    /metrics to its supervisor, stops when the supervisor is gone, and writes a byte to ``ready_fd``
    once it serves (the server is then built with ``shared_port``).
    """

    def __init__(self, settings: Settings, built: BuiltServer, *, ready_fd: int | None = None) -> None:
        self.settings = settings
        self.built = built
        self.ready_fd = ready_fd
        self.worker = ready_fd is not None
        self.stopping = asyncio.Event()  # stop() was called: main_loop() returns
        self.forced = asyncio.Event()  # stop(force=True): what is left of the drain and the grace period is skipped
        self.metrics_port: int | None = None
        self._metrics_http: BoundedHttpServer | None = None
        self._background: list[asyncio.Future[None]] = []
        self._watch = LoopWatch()  # says when a handler blocks the event loop

    def stop(self, *, force: bool = False) -> None:
        """Ask for a graceful shutdown; with ``force``, skip what is left of the drain and the grace period."""
        self.stopping.set()
        if force:
            self.forced.set()

    async def startup(self) -> None:
        """Start serving: /metrics, the background work, then the servers; logs "serving"."""
        built, settings = self.built, self.settings
        if self.worker:
            # A worker leaves /metrics to its supervisor, which adds up all the workers' values.
            self._background.append(asyncio.ensure_future(self._stop_when_orphaned()))
        else:
            self._metrics_http = serve_metrics(built.metrics.registry, settings)
            self.metrics_port = None if self._metrics_http is None else int(self._metrics_http.server_port)
        self._background.append(asyncio.ensure_future(_push_every(built.metrics, PUSH_SECONDS)))
        self._background.append(asyncio.ensure_future(_release_memory_every(TRIM_SECONDS)))
        await start(built)
        self._watch.start()
        if self.ready_fd is not None:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
        log.info(
            "serving",
            pid=os.getpid(),
            host=settings.host,
            port=built.port,
            health_port=built.health_port,
            metrics_port=self.metrics_port,
            app=settings.app,
            services=list(built.registry.services),
            tls=built.tls is not None,
            mtls=bool(built.tls and built.tls.mutual),
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    async def main_loop(self) -> None:
        """Serve until ``stop()`` is called."""
        await self.stopping.wait()

    async def shutdown(self, force: bool = False) -> int:
        """Drain and stop, in the order below, then release what startup() began; the exit code (1: forced)."""
        if force:
            self.forced.set()
        built, settings = self.built, self.settings
        try:
            # 1. Health says NOT_SERVING first, so probes and balancers send new calls elsewhere.
            await built.health.enter_graceful_shutdown()
            # 2. Keep serving new and in-flight calls while they move away (HELLO_DRAIN_SECONDS).
            if settings.drain_seconds and not self.forced.is_set():
                log.info("draining", seconds=settings.drain_seconds)
                await _until_first(asyncio.sleep(settings.drain_seconds), self.forced.wait())
            # 3. Refuse new calls; in-flight calls get the grace period, or none when forced.
            grace = settings.shutdown_grace_seconds
            stopped = asyncio.gather(*(s.stop(grace) for s in built.servers))
            # When the grace period is over grpc cancels what is still in flight: those calls are logged
            # with what their callers get (UNAVAILABLE), not as cancelled by the caller.
            grace_over = asyncio.get_running_loop().call_later(grace, self._cancelling)
            await asyncio.sleep(0)  # let stop() begin: from here on grpc refuses new calls
            log.info("refusing new calls", grace_seconds=grace)
            await _until_first(stopped, self.forced.wait())
            grace_over.cancel()
            if self.forced.is_set():
                self._cancelling()
                await asyncio.gather(*(s.stop(None) for s in built.servers))
        finally:
            self.close()
        code = 1 if self.forced.is_set() else 0
        log.info("stopped", exit_code=code)
        return code

    def close(self) -> None:
        """Release what startup() began (once; shutdown() ends with it, a failed start-up needs it alone)."""
        self._watch.stop()
        end_threads(self.built)
        for task in self._background:
            task.cancel()
        self._background.clear()
        self.built.metrics.push()  # a worker's last counts reach its supervisor
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http = None
        if self.built.tracer is not None:
            self.built.tracer.shutdown()  # flushes the spans still batched

    async def serve(self) -> int:
        """startup(), main_loop(), shutdown(): the whole life; the exit code."""
        try:
            await self.startup()
            await self.main_loop()
        except BaseException:
            self.close()
            raise
        return await self.shutdown()

    def _cancelling(self) -> None:
        self.built.chain.cancelling = True

    async def _stop_when_orphaned(self) -> None:
        """A worker whose supervisor died (even by SIGKILL) stops as if told to: no worker outlives it."""
        supervisor = os.getppid()
        # A poll: nothing signals a process when its parent dies (prctl's PDEATHSIG needs a pre-exec hook).
        while os.getppid() == supervisor:  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        log.warning("supervisor gone: stopping", supervisor=supervisor)
        # As a stop signal would: a second one (the worker was stopping already) is final.
        self.stop(force=self.stopping.is_set())


@contextmanager
def capture_signals(lifecycle: Lifecycle) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``lifecycle`` while inside (a second one is final); the handlers found are restored."""
    loop = asyncio.get_running_loop()
    first: list[tuple[signal.Signals, float]] = []

    def on_signal(signum: signal.Signals) -> None:
        if not first:
            first.append((signum, loop.time()))
            log.info("stop signal: shutting down", signal=signum.name)
            lifecycle.stop()
        elif signum is first[0][0] is signal.SIGTERM and loop.time() - first[0][1] < SAME_SIGTERM_SECONDS:
            # make forwards the SIGTERM its process group already got (kill -TERM -PGID to make
            # run), as a supervisor does to its workers: one request, not two. make never forwards
            # Ctrl-C (SIGINT), and no person sends two SIGTERMs within half a second.
            log.debug("the same stop signal again: ignored", signal=signum.name)
        else:
            log.warning("second stop signal: stopping now", signal=signum.name)
            lifecycle.stop(force=True)

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            if handler is not None:  # None: set outside Python, which signal.signal cannot restore
                signal.signal(signum, handler)


async def serve(
    settings: Settings, *, app: App | None = None, env_file: Path | None = None, ready_fd: int | None = None
) -> int:
    """Serve ``app`` (default: the one HELLO_APP names) until SIGTERM or SIGINT, then shut down gracefully.

    Returns the process exit code. The app registers its services and runs its start-up first; its
    shutdown runs last, after the drain and the grace period. A second signal skips what is left of
    the drain and the grace period and exits 1 (a SIGTERM within half a second of the first SIGTERM
    is the same one, forwarded by make). ``ready_fd``: this process is a worker (see Lifecycle).
    """
    app = app if app is not None else load_app(settings.app)
    async with started(app, Registry(settings, env_file), settings.app) as registry:
        built = await build_server(settings, registry, shared_port=ready_fd is not None)
        lifecycle = Lifecycle(settings, built, ready_fd=ready_fd)
        with capture_signals(lifecycle):
            return await lifecycle.serve()
