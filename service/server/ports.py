"""Listening ports: binding them, why one cannot be bound, and the one start-up line that says so.

grpc is imported only for type hints: the workers' supervisor, which imports no grpc, checks ports here too.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ..config.settings import env_name
from ..errors import StartupError

if TYPE_CHECKING:
    import grpc


def bind_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (the OS's words), or None when it can.

    SO_REUSEADDR as the servers set it: connections lingering in TIME_WAIT do not make a port busy.
    """
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def cannot_listen(field: str, host: str, port: int, problem: str) -> StartupError:
    """The start-up error for a port the setting ``field`` names and that cannot be used."""
    return StartupError(f"{env_name(field)}: cannot listen on {host}:{port}: {problem}")


def bind(server: grpc.aio.Server, field: str, host: str, port: int, credentials: grpc.ServerCredentials | None) -> int:
    """Add a listening port to ``server`` (TLS with ``credentials``); the port bound, or the start-up error."""
    address = f"{host}:{port}"
    try:
        if credentials is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, credentials))
    except RuntimeError:
        # grpc only says it could not bind; ask the OS why, with a socket of our own.
        problem = bind_problem(host, port) or "grpc could not bind it"
        raise cannot_listen(field, host, port, problem) from None
