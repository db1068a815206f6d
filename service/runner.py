"""The runner: start the built server, wait for a stop signal, drain and shut down in order."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from .app import App, load_app, started
from .loop_watch import LoopWatch
from .metrics_http import serve_metrics
from .registry import Registry
from .server import BuiltServer, build_server
from .server_metrics import PUSH_SECONDS, ServerMetrics
from .settings import Settings

log = structlog.get_logger("hello.server")

# A SIGTERM this soon after the first is the same request, delivered twice (see on_signal).
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


async def _stop_when_orphaned(stop: Callable[[signal.Signals], None]) -> None:
    """A worker whose supervisor died (even by SIGKILL) stops as if told to: no worker outlives it."""
    supervisor = os.getppid()
    # A poll: nothing signals a process when its parent dies (prctl's PDEATHSIG needs a pre-exec hook).
    while os.getppid() == supervisor:  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    log.warning("supervisor gone: stopping", supervisor=supervisor)
    stop(signal.SIGTERM)


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


async def serve(
    settings: Settings, *, app: App | None = None, env_file: Path | None = None, ready_fd: int | None = None
) -> int:
    """Serve ``app`` (default: the one HELLO_APP names) until SIGTERM or SIGINT, then shut down gracefully.

    Returns the process exit code. The app registers its services and runs its start-up first; its
    shutdown runs last, after the drain and the grace period. A second signal skips what is left of
    the drain and the grace period and exits 1 (a SIGTERM within half a second of the first SIGTERM
    is the same one, forwarded by make). With ``ready_fd`` this process is a worker: it
    shares its ports with the other workers, leaves /metrics to its supervisor, and writes a byte
    to ``ready_fd`` once it serves.
    """
    app = app if app is not None else load_app(settings.app)
    async with started(app, Registry(settings, env_file), settings.app) as registry:
        return await _serve(settings, registry, ready_fd)


async def _serve(settings: Settings, registry: Registry, ready_fd: int | None) -> int:
    worker = ready_fd is not None
    built = await build_server(settings, registry, shared_port=worker)
    # A worker leaves /metrics to its supervisor, which adds up all the workers' values.
    metrics_http = None if worker else serve_metrics(built.metrics.registry, settings)
    metrics_port = None if metrics_http is None else int(metrics_http.server_port)
    loop = asyncio.get_running_loop()
    stopping, forced = asyncio.Event(), asyncio.Event()
    first: list[tuple[signal.Signals, float]] = []

    def on_signal(signum: signal.Signals) -> None:
        if not first:
            first.append((signum, loop.time()))
            log.info("stop signal: shutting down", signal=signum.name)
            stopping.set()
        elif signum is first[0][0] is signal.SIGTERM and loop.time() - first[0][1] < SAME_SIGTERM_SECONDS:
            # make forwards the SIGTERM its process group already got (kill -TERM -PGID to make
            # run), as a supervisor does to its workers: one request, not two. make never forwards
            # Ctrl-C (SIGINT), and no person sends two SIGTERMs within half a second.
            log.debug("the same stop signal again: ignored", signal=signum.name)
        else:
            log.warning("second stop signal: stopping now", signal=signum.name)
            forced.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    orphan_watch = asyncio.ensure_future(_stop_when_orphaned(on_signal)) if worker else None
    pushes = asyncio.ensure_future(_push_every(built.metrics, PUSH_SECONDS))
    watch = LoopWatch()
    try:
        await start(built)
        watch.start()
        if ready_fd is not None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        log.info(
            "serving",
            pid=os.getpid(),
            host=settings.host,
            port=built.port,
            health_port=built.health_port,
            metrics_port=metrics_port,
            app=settings.app,
            services=list(registry.services),
            tls=built.tls is not None,
            mtls=bool(built.tls and built.tls.mutual),
            loop=type(loop).__module__.split(".")[0],
        )
        await stopping.wait()

        # 1. Health says NOT_SERVING first, so probes and balancers send new calls elsewhere.
        await built.health.enter_graceful_shutdown()
        # 2. Keep serving new and in-flight calls while they move away (HELLO_DRAIN_SECONDS).
        if settings.drain_seconds and not forced.is_set():
            log.info("draining", seconds=settings.drain_seconds)
            await _until_first(asyncio.sleep(settings.drain_seconds), forced.wait())
        # 3. Refuse new calls; in-flight calls get the grace period, or none after a second signal.
        grace = settings.shutdown_grace_seconds
        stopped = asyncio.gather(*(s.stop(grace) for s in built.servers))
        # When the grace period is over grpc cancels what is still in flight: those calls are logged
        # with what their callers get (UNAVAILABLE), not as cancelled by the caller.
        grace_over = loop.call_later(grace, built.chain.stopping.begin)
        await asyncio.sleep(0)  # let stop() begin: from here on grpc refuses new calls
        log.info("refusing new calls", grace_seconds=grace)
        await _until_first(stopped, forced.wait())
        grace_over.cancel()
        if forced.is_set():
            built.chain.stopping.begin()
            await asyncio.gather(*(s.stop(None) for s in built.servers))
    finally:
        watch.stop()
        end_threads(built)
        if orphan_watch is not None:
            orphan_watch.cancel()
        pushes.cancel()
        built.metrics.push()  # a worker's last counts reach its supervisor
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if metrics_http is not None:
            metrics_http.shutdown()
        if built.tracer is not None:
            built.tracer.shutdown()  # flushes the spans still batched
    code = 1 if forced.is_set() else 0
    log.info("stopped", exit_code=code)
    return code
