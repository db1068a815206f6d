"""hello-client: call the service from a shell; failures are one line a person understands (exit 1)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..config.settings import ClientSettings, load, unknown_variable_warnings
from ..errors import StartupError, lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hello-client",
        description="Call rpc_package.HelloWorldService over TLS. Options default to HELLO_CLIENT__* variables.",
    )
    parser.add_argument("--target", help="host:port (default: localhost:50051)")
    parser.add_argument("--ca", dest="ca_file", type=Path, help="CA bundle that signed the server's certificate")
    parser.add_argument("--cert", dest="cert_file", type=Path, help="client certificate, for mutual TLS")
    parser.add_argument("--key", dest="key_file", type=Path, help="client certificate's private key")
    parser.add_argument("--token", help="bearer token (visible to other local users; prefer --token-file)")
    parser.add_argument("--token-file", type=Path, help="tokens file; its first token is sent")
    parser.add_argument("--timeout", type=float, help="deadline per call in seconds (default: 5)")
    parser.add_argument(
        "--plaintext", action="store_true", default=None, help="no TLS, no token: for the plaintext health port"
    )
    parser.add_argument("--server-name", help="name the server certificate must carry (for address targets)")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=os.environ.get("HELLO_ENV_FILE") or None,
        help="read settings from this file",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    say = commands.add_parser("say", help="call SayHello and print the reply")
    say.add_argument("name")
    repeated = commands.add_parser("say-repeated", help="call SayHelloRepeated; print each greeting streamed back")
    repeated.add_argument("name")
    repeated.add_argument("--count", type=int, default=3, help="how many greetings (1 to 100, default 3)")
    many = commands.add_parser("say-many", help="call SayHelloToMany with the names; print the one reply")
    many.add_argument("names", nargs="+", metavar="NAME")
    chat = commands.add_parser("chat", help="call SayHelloChat; print a reply per name (names from stdin if none)")
    chat.add_argument("names", nargs="*", metavar="NAME")
    health = commands.add_parser("health", help="print the serving status; exit 0 only when SERVING")
    health.add_argument("service", nargs="?", default="", help="service name (default: the whole server)")
    return parser


_TLS_PROBLEMS = (
    (
        "Hostname Verification Check failed",
        "TLS handshake failed: the server's certificate is not for this host",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "TLS handshake failed: certificate not trusted: pass the CA that signed it with --ca",
    ),
    (
        "certificate verify failed",
        "TLS handshake failed: certificate not trusted: pass the CA that signed it with --ca",
    ),
    ("CERTIFICATE_REQUIRED", "TLS handshake failed: the server requires a client certificate"),
    ("certificate required", "TLS handshake failed: the server requires a client certificate"),
    ("UNKNOWN_CA", "TLS handshake failed: the server does not trust the client certificate"),
    ("unknown ca", "TLS handshake failed: the server does not trust the client certificate"),
    ("WRONG_VERSION_NUMBER", "TLS handshake failed: the server does not speak TLS on this port"),
    ("Connection refused", "cannot connect: connection refused"),
    ("DNS resolution failed", "cannot connect: the host name does not resolve"),
    ("Ssl handshake failed", "TLS handshake failed"),
)


def describe(error: Any, settings: ClientSettings) -> str:
    """What went wrong (at the settings' target) and what to do about it, in words, then the status code."""
    code = error.code()
    details = error.details() or ""
    name = code.name if code is not None else "UNKNOWN"
    target = settings.target
    if name == "UNAUTHENTICATED" and settings.token is None and settings.token_file is None and not settings.plaintext:
        return f"the server wants a token: {details}: pass --token-file FILE (or HELLO_CLIENT__TOKEN_FILE) ({name})"
    if name == "UNAUTHENTICATED":
        return f"server rejected the token: {details} ({name})"
    if name == "DEADLINE_EXCEEDED":
        return f"no answer before the deadline ({name})"
    if name == "UNAVAILABLE":
        for needle, sentence in _TLS_PROBLEMS:
            if needle in details:
                return f"{target}: {sentence} ({name})"
        # grpc says only "Socket closed": ask the server ourselves, with a TLS handshake of our own.
        found = _probe(settings)
        if found is not None:
            return f"{target}: {found} ({name})"
    first_line = details.splitlines()[0] if details else "no details"
    fields, retry = _understood(error)
    if fields:
        return f"invalid argument: {fields} ({name})"
    return f"call failed: {first_line} ({name}{retry})"


def _understood(error: Any) -> tuple[str, str]:
    """From the call's google.rpc details: which fields broke which rules, and "; retry after N ms"."""
    from google.rpc import error_details_pb2

    from ..status_details import decode

    fields, retry = [], ""
    for detail in decode(error):
        if isinstance(detail, error_details_pb2.BadRequest):
            fields += [f"{v.field}: {v.description}" if v.field else v.description for v in detail.field_violations]
        elif isinstance(detail, error_details_pb2.RetryInfo):
            retry = f"; retry after {detail.retry_delay.ToMilliseconds()} ms"
    return "; ".join(fields), retry


def _probe(settings: ClientSettings) -> str | None:
    from ..client.tls_probe import host_and_port, speaks_tls, why_tls_failed

    address = host_and_port(settings.target)
    if address is None:
        return None
    if settings.plaintext:
        return "this port speaks TLS: drop --plaintext" if speaks_tls(*address) else None
    why = why_tls_failed(*address, with_certificate=settings.cert_file is not None)
    return None if why is None else f"TLS handshake failed: {why}"


async def _stdin_lines() -> AsyncIterator[str]:
    while line := await asyncio.to_thread(sys.stdin.readline):
        if line.strip():
            yield line.rstrip("\n")


async def _call(args: argparse.Namespace, channel: Any, timeout: float, request_id: str) -> int:
    from .. import client

    if args.command == "say":
        print(await client.say_hello(channel, args.name, timeout=timeout, request_id=request_id))
    elif args.command == "say-repeated":
        replies = client.say_hello_repeated(channel, args.name, args.count, timeout=timeout, request_id=request_id)
        async for message in replies:
            print(message, flush=True)
    elif args.command == "say-many":
        print(await client.say_hello_to_many(channel, args.names, timeout=timeout, request_id=request_id))
    elif args.command == "chat":
        names = args.names or _stdin_lines()
        async for message in client.say_hello_chat(channel, names, timeout=timeout, request_id=request_id):
            print(message, flush=True)
    else:
        status = await client.check_health(channel, args.service, timeout=timeout, request_id=request_id)
        print(status)
        return 0 if status == "SERVING" else 1
    return 0


async def _run(args: argparse.Namespace, settings: ClientSettings) -> int:
    import grpc

    from ..client import create_channel, new_request_id

    request_id = new_request_id()
    try:
        async with create_channel(settings, watch_health=args.command != "health") as channel:
            return await _call(args, channel, settings.timeout, request_id)
    except grpc.aio.AioRpcError as error:
        said = await asyncio.to_thread(describe, error, settings)
        print(f"hello-client: {said} [request id {request_id}]", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """hello-client: exit 0 on success, 1 when the call failed, 2 for bad usage or settings."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # see cli/hello_server.py: keep grpc's C core off stderr
    overrides = {
        field: value
        for field in (
            "target",
            "ca_file",
            "cert_file",
            "key_file",
            "token",
            "token_file",
            "timeout",
            "plaintext",
            "server_name",
        )
        if (value := getattr(args, field)) is not None
    }
    try:
        for warning in unknown_variable_warnings(os.environ, args.env_file):
            print(f"hello-client: warning: {warning}", file=sys.stderr)
        settings = load(ClientSettings, args.env_file, **overrides)
        return asyncio.run(_run(args, settings))
    except StartupError as exc:
        print(lines(exc, "hello-client"), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
