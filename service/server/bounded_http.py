"""A small HTTP/1.1 server for one WSGI app, bounded: one thread, a deadline per connection, a cap on connections.

prometheus-client's own server (wsgiref, a thread per connection, no timeout) gives each client
that connects and says nothing a thread and a file descriptor for ever: 200 of them pinned 200
threads, and under a lower file limit starved the gRPC ports. Here every connection is read by
one event loop on one thread, must send its request and take its reply within a deadline, and
beyond a number of connections the oldest one still sending its request is dropped for the new
one. A request is answered by the app on that same thread, one at a time, and the connection
closed (as wsgiref did): a scrape is one request a few seconds apart.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

import structlog

log = structlog.get_logger("hello.metrics")
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# A scraper's request head is a few hundred bytes; a longer one is not a scrape.
MAX_HEAD_BYTES = 8192
BACKLOG = 64


class BoundedHttpServer:
    """Serves ``app`` on ``host``:``port`` from a daemon thread until ``shutdown()``; the port is bound at once."""

    def __init__(self, app: WsgiApp, host: str, port: int, *, timeout: float, max_connections: int) -> None:
        self._app, self._timeout, self._max_connections = app, timeout, max_connections
        # As prometheus-client binds: the first address the name resolves to, [::] taking IPv4 too.
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(BACKLOG)
        except OSError:
            self._socket.close()
            raise
        self.server_port: int = self._socket.getsockname()[1]
        # Open connections in the order they came; True while the request is still being read.
        self._open: dict[asyncio.StreamWriter, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, sock=self._socket, limit=MAX_HEAD_BYTES)
        async with server:
            await self._stopped.wait()
        for writer in list(self._open):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def shutdown(self) -> None:
        """Stop serving, close every connection and the port, and wait for the thread to end."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join()

    def _make_room(self) -> bool:
        """Room under the cap for a new connection: the oldest still reading its request goes; False if none can."""
        if len(self._open) < self._max_connections:
            return True
        oldest = next((w for w, reading in self._open.items() if reading), None)
        if oldest is None:
            return False
        del self._open[oldest]
        oldest.transport.abort()
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._make_room():
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each connection in a task of its own
        self._open[writer] = True
        self._tasks.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            self._open[writer] = False
            writer.write(self._respond(head))
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # too slow, too long, or gone: nothing to answer
        finally:
            self._open.pop(writer, None)
            self._tasks.discard(task)
            writer.transport.abort()

    def _respond(self, head: bytes) -> bytes:
        """The whole reply to a request whose head (request line and headers) is ``head``."""
        request_line, _, header_lines = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _reply("400 Bad Request", [("Content-Type", "text/plain")], b"not an HTTP/1 request\n")
        method, target, protocol = parts
        headers = http.client.parse_headers(io.BytesIO(header_lines))
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": protocol,
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": io.StringIO(),
            **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
        }
        started: list[Any] = []
        try:
            body = b"".join(self._app(environ, lambda status, headers, *_: started.extend((status, headers))))
        except Exception:
            # The app failed (a collector raised): the scraper sees a failed scrape, the server goes on.
            log.exception("metrics request failed")
            return _reply("500 Internal Server Error", [("Content-Type", "text/plain")], b"metrics failed\n")
        status, response_headers = started
        return _reply(status, response_headers, body)


def _reply(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body
