"""Workers: several hello-server processes on the same ports, supervised by the first.

The supervisor imports no grpc: each worker is a fresh interpreter (``python -m service``) started
with the same settings, so no grpc state is ever forked. The supervisor checks the ports are free,
starts one worker and waits until it serves (a configuration problem then ends everything with that
worker's one line and exit code), starts the rest, serves /metrics for all of them (prometheus-client's
multiprocess mode), restarts a worker that dies, and on SIGTERM or SIGINT passes the signal on and
waits for every worker to drain.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

import structlog

from ..config.settings import Settings, env_name
from ..errors import ConfigError
from .metrics_http import serve_metrics, workers_registry
from .ports import bind_problem, cannot_listen

log = structlog.get_logger("hello.workers")
READY_FD = "HELLO_WORKER_READY_FD"  # set by the supervisor for its workers only
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# More restarts than this within a minute is a crash loop: the supervisor stops rather than spin.
MAX_RESTARTS_A_MINUTE = 10


def check_free(settings: Settings) -> None:
    """Refuse ports in use: the workers set SO_REUSEPORT, which would share them silently."""
    ports = [("port", settings.port), ("health_port", settings.health_port), ("metrics_port", settings.metrics_port)]
    for name, port in ports:
        if port == "off":
            continue
        if port == 0:
            raise ConfigError(env_name(name), f"several workers ({env_name('workers')}) need a fixed port, not 0")
        problem = bind_problem(settings.host, int(port))
        if problem is not None:
            raise cannot_listen(name, settings.host, int(port), problem)


class Worker:
    """One worker process and the pipe on which it says it serves."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", *argv], env={**env, READY_FD: str(write)}, pass_fds=(write,)
        )
        os.close(write)
        self._ready_pipe = read
        self.ready = False

    def wait_ready(self) -> bool:
        """Block until the worker serves (True) or exits first (False)."""
        with os.fdopen(self._ready_pipe, "rb") as pipe:
            self.ready = pipe.read(1) == b"1"
        return self.ready


def supervise(settings: Settings, count: int, argv: list[str]) -> int:
    """Run ``count`` workers until a stop signal; returns the exit code (0 when all drained cleanly)."""
    check_free(settings)
    metrics_dir = tempfile.mkdtemp(prefix="hello-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, env_name("workers"): "1"}
    # Stop signals wait in a queue (sigwaitinfo) instead of interrupting the supervisor mid-step.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *STOP_SIGNALS})
    workers: list[Worker] = []
    try:
        workers.append(Worker(argv, env))
        if not workers[0].wait_ready():
            return workers[0].proc.wait()  # it printed its one line; its exit code says what kind
        workers += [Worker(argv, env) for _ in range(count - 1)]
        for worker in workers[1:]:
            worker.wait_ready()
        http = serve_metrics(workers_registry(metrics_dir), settings)
        log.info("workers serving", workers=[w.proc.pid for w in workers], port=settings.port)
        try:
            return _watch(workers, argv, env, metrics_dir)
        finally:
            if http is not None:
                http.shutdown()
    finally:
        # Whatever happened here, no worker outlives its supervisor.
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _watch(workers: list[Worker], argv: list[str], env: Mapping[str, str], metrics_dir: str) -> int:
    from prometheus_client import multiprocess

    stopping, forced, failed = False, False, False
    restarts: list[float] = []
    while workers:
        info = signal.sigwaitinfo({signal.SIGCHLD, *STOP_SIGNALS})
        if info.si_signo in STOP_SIGNALS:
            # First signal: every worker drains; a second: every worker stops at once.
            forced, stopping = stopping, True
            log.info("stop signal: stopping workers", signal=signal.Signals(info.si_signo).name, forced=forced)
            for worker in workers:
                worker.proc.send_signal(info.si_signo)
            continue
        for worker in [w for w in workers if w.proc.poll() is not None]:
            workers.remove(worker)
            multiprocess.mark_process_dead(worker.proc.pid, path=metrics_dir)  # type: ignore[no-untyped-call]
            code = worker.proc.returncode
            if stopping:
                failed = failed or code != 0
                continue
            restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
            if not worker.ready or len(restarts) > MAX_RESTARTS_A_MINUTE:
                log.error("worker cannot keep running; stopping", pid=worker.proc.pid, exit_code=code)
                for other in workers:
                    other.proc.send_signal(signal.SIGTERM)
                stopping, failed = True, True
                continue
            log.error("worker exited; starting another", pid=worker.proc.pid, exit_code=code)
            replacement = Worker(argv, env)
            workers.append(replacement)
            replacement.wait_ready()
    return 1 if forced or failed else 0
