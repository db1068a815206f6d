"""Listening ports: why one cannot be bound, and the one start-up line that says so (no grpc imported here)."""

from __future__ import annotations

import socket

from .errors import StartupError
from .settings import env_name


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
