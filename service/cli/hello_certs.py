"""hello-certs: write the development CA, certificates and token (see service.security.dev_pki)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..security.dev_pki import DEFAULT_SANS, write_dev_pki


def main(argv: list[str] | None = None) -> int:
    """hello-certs: write the dev PKI; exit 0, or 1 with one line on stderr."""
    parser = argparse.ArgumentParser(
        prog="hello-certs",
        description="Write a dev CA, server and client certificates and a bearer token. Not for production.",
    )
    parser.add_argument("--dir", type=Path, default=Path("certs"), help="output folder (default: certs)")
    parser.add_argument(
        "--san",
        action="append",
        default=[],
        help=f"extra server names, comma-separated, repeatable (always: {', '.join(DEFAULT_SANS)})",
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    sans = [name.strip() for value in args.san for name in value.split(",") if name.strip()]
    try:
        written = write_dev_pki(args.dir, extra_sans=sans, force=args.force)
    except (OSError, ValueError) as exc:
        print(f"hello-certs: {exc}", file=sys.stderr)
        return 1
    # What was written goes to stderr: stdout is left to what a caller pipes (make run | jq).
    for item in written:
        print(f"{'wrote' if item.written else 'kept '} {item.path}", file=sys.stderr)
    if sans and not all(item.written for item in written):
        print(
            "hello-certs: kept what exists; the server certificate carries every name asked for "
            "(--force, make certs FORCE=1, replaces everything)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
