"""The runner: start the built server, wait for a stop signal, drain and shut down in order."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from wsgiref.simple_server import WSGIServer

import structlog

from .errors import StartupError
from .generated.rpc_package import helloworld_pb2_grpc
from .metrics import serve_metrics
from .server import BuiltServer, build_server
from .settings import Settings, env_name

log = structlog.get_logger("hello.server")


async def _until_first(*awaitables: Awaitable[object]) -> None:
    """Wait for whichever finishes first and cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _serve_metrics(settings: Settings, built: BuiltServer) -> tuple[WSGIServer | None, int | None]:
    if settings.metrics_port == "off":
        return None, None
    try:
        http, _ = serve_metrics(built.metrics.registry, settings.host, settings.metrics_port)
    except OSError as exc:
        address = f"{settings.host}:{settings.metrics_port}"
        raise StartupError(f"{env_name('metrics_port')}: cannot listen on {address}: {exc.strerror}") from None
    return http, int(http.server_port)


async def serve(settings: Settings, *, servicer: helloworld_pb2_grpc.HelloWorldServiceServicer | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; returns the process exit code.

    A second signal skips what is left of the drain and the grace period and exits 1.
    """
    built = await build_server(settings, servicer=servicer)
    metrics_http, metrics_port = _serve_metrics(settings, built)
    loop = asyncio.get_running_loop()
    stopping, forced = asyncio.Event(), asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stopping.is_set():
            log.warning("second stop signal: stopping now", signal=signum.name)
            forced.set()
        else:
            log.info("stop signal: shutting down", signal=signum.name)
            stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        for server in built.servers:
            await server.start()
        log.info(
            "serving",
            host=settings.host,
            port=built.port,
            health_port=built.health_port,
            metrics_port=metrics_port,
            tls=built.tls is not None,
            mtls=bool(built.tls and built.tls.mutual),
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
        await asyncio.sleep(0)  # let stop() begin: from here on grpc refuses new calls
        log.info("refusing new calls", grace_seconds=grace)
        await _until_first(stopped, forced.wait())
        if forced.is_set():
            await asyncio.gather(*(s.stop(None) for s in built.servers))
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if metrics_http is not None:
            metrics_http.shutdown()
        if built.tracer is not None:
            built.tracer.shutdown()  # flushes the spans still batched
    code = 1 if forced.is_set() else 0
    log.info("stopped", exit_code=code)
    return code
