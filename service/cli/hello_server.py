"""hello-server: read the settings, configure logging, serve; start-up problems are one line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from ..config.settings import Settings, load, unknown_variable_warnings
from ..errors import ConfigError, StartupError, lines
from ..server.metrics_http import no_created_series
from ..server.workers import READY_FD, supervise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hello-server",
        description="Serve the app's gRPC services (HELLO_APP; rpc_package.HelloWorldService by default) "
        "over TLS with token auth. "
        "Settings come from HELLO_* environment variables (see the README).",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=os.environ.get("HELLO_ENV_FILE") or None,
        help="read settings from this file too; the environment wins (default: $HELLO_ENV_FILE)",
    )
    parser.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTRIBUTE",
        help='the function that registers the services to serve, e.g. "orders.app:register" '
        "(default: $HELLO_APP, else service.hello:register)",
    )
    return parser


def run(main: Coroutine[Any, Any, int], loop: str) -> int:
    """Run ``main`` on the event loop the settings ask for (uvloop when "auto" finds it)."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise ConfigError("HELLO_LOOP", "uvloop is not installed (pip install uvloop)") from None
        else:
            return int(uvloop.run(main))
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    """hello-server: serve until stopped; the exit code says how it ended (0, 1, or 2 for configuration)."""
    args = _parser().parse_args(argv)
    # grpc's C core writes its own lines to stderr, which would break the one-line errors and
    # the JSON log stream; it reads this once, when grpc is first imported (below).
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    warned = False
    try:
        overrides = {"app": args.app} if args.app else {}
        settings = load(Settings, args.env_file, **overrides)
        from ..observability.logs import configure_logging

        configure_logging(settings.log, trace_context=settings.tracing.enabled)
        log = structlog.get_logger("hello.server")
        for warning in unknown_variable_warnings(os.environ, args.env_file):
            log.warning(warning)
        warned = True
        no_created_series()
        ready_fd = os.environ.pop(READY_FD, None)
        if ready_fd is None:
            count = settings.worker_count(os.cpu_count() or 1)
            if count > 1:
                return supervise(settings, count, sys.argv[1:] if argv is None else argv)
        else:
            # A worker inherits its supervisor's blocked signals; it handles its own.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
        # The app's module is looked for in the working directory too, as uvicorn and gunicorn do.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        from ..server.app import load_app
        from ..server.lifecycle import serve

        app = load_app(settings.app)
        worker_fd = None if ready_fd is None else int(ready_fd)
        return run(serve(settings, app=app, env_file=args.env_file, ready_fd=worker_fd), settings.loop)
    except StartupError as exc:
        if isinstance(exc, ConfigError) and not warned:
            # A misspelled variable is a likely cause of a configuration error: say so beside it.
            for warning in unknown_variable_warnings(os.environ, args.env_file):
                print(f"hello-server: warning: {warning}", file=sys.stderr)
        print(lines(exc, "hello-server"), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
