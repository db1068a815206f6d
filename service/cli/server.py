"""hello-server: read the settings, configure logging, serve; start-up problems are one line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..errors import StartupError
from ..settings import Settings, load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hello-server",
        description="Serve rpc_package.HelloWorldService over TLS with token auth. "
        "Settings come from HELLO_* environment variables (see the README).",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=os.environ.get("HELLO_ENV_FILE") or None,
        help="read settings from this file too; the environment wins (default: $HELLO_ENV_FILE)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # grpc's C core writes its own lines to stderr, which would break the one-line errors and
    # the JSON log stream; it reads this once, when grpc is first imported (below).
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        settings = load(Settings, args.env_file)
        from ..logs import configure_logging
        from ..runner import serve

        configure_logging(settings.log)
        return asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"hello-server: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
