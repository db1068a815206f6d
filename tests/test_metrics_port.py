"""The metrics port answers anyone: slow and idle connections are dropped, its threads and descriptors bounded."""

from __future__ import annotations

import asyncio
import gzip
import os
import selectors
import socket
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.server.metrics_http import serve_metrics

from .conftest import Pki, running, server_settings
from .processes import BIN, ServerProcess, pki_env

TIMEOUT, MAX_CONNECTIONS, FILE_LIMIT, HALF_OPEN = 2, 16, 128, 200


def _with_file_limit(limit: int, *command: str) -> list[str]:
    """``command`` run with at most ``limit`` open files (descriptors), as a tighter container would."""
    limit_then_exec = (
        "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]),) * 2); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", limit_then_exec, str(limit), *command]


def _count(pid: int, what: str) -> int:
    return len(os.listdir(f"/proc/{pid}/{what}"))


def _half_open(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send half a request line and stop (those the server still accepts)."""
    held = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            break  # a starved server leaves connections in its backlog: the finding itself
        sock.sendall(b"GET /metr")
        held.append(sock)
    return held


def _trickle(port: int) -> float:
    """A connection sending its request a byte each quarter second; the seconds until the server closes it.

    Bounded: 48 bytes, 12 s at most.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=0.25) as sock:
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ".ljust(48, b"a"):
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue  # still open: the next byte
            except OSError:
                break
    return time.monotonic() - started


def _all_closed_by(held: list[socket.socket], deadline: float) -> list[socket.socket]:
    """Wait until the server has closed each of ``held`` or ``deadline`` passes; the ones still open."""
    open_ = set(held)
    with selectors.DefaultSelector() as selector:
        for sock in held:
            selector.register(sock, selectors.EVENT_READ)
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    closed = sock.recv(1024) == b""
                except OSError:
                    closed = True
                if closed:
                    selector.unregister(sock)
                    open_.discard(sock)
    return list(open_)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def _probe(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


async def test_half_open_scrapes_are_dropped_and_starve_nothing(pki: Pki) -> None:
    env = pki_env(pki, HELLO_METRICS__TIMEOUT_SECONDS=TIMEOUT, HELLO_METRICS__MAX_CONNECTIONS=MAX_CONNECTIONS)
    server = ServerProcess(_with_file_limit(FILE_LIMIT, str(BIN / "hello-server")), env)
    try:
        serving = await server.await_event("serving")
        metrics, health, pid = int(serving["metrics_port"]), int(serving["health_port"]), server.proc.pid
        assert "hello_build_info" in await asyncio.to_thread(_scrape, metrics)
        threads, files = _count(pid, "task"), _count(pid, "fd")
        held = await asyncio.to_thread(_half_open, metrics, HALF_OPEN)
        trickling = asyncio.ensure_future(asyncio.to_thread(_trickle, metrics))
        try:
            # Meanwhile a real scrape and the kubelet's probe are answered.
            assert "hello_build_info" in await asyncio.to_thread(_scrape, metrics)
            assert await _probe(health) == health_pb2.HealthCheckResponse.SERVING
            # One thread and at most MAX_CONNECTIONS descriptors for all of them (a handful of
            # threads come and go with grpc's own work).
            assert _count(pid, "task") <= threads + 2
            assert _count(pid, "fd") <= files + MAX_CONNECTIONS + 2
            assert len(held) == HALF_OPEN
            # The server closes every one of them within the timeout (those beyond the cap at once).
            still_open = await asyncio.to_thread(_all_closed_by, held, time.monotonic() + TIMEOUT + 3)
            assert still_open == []
            assert await trickling < TIMEOUT + 3  # a deadline for the whole request, not per byte
        finally:
            for sock in held:
                sock.close()
    finally:
        server.stop()


def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read the reply to its end (the server closes every connection after one)."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass  # closed without a reply: what the caller asserts on
    return reply


async def test_the_scrape_server_speaks_http_as_prometheus_client_did(pki: Pki) -> None:
    settings = server_settings(pki)
    async with running(settings) as built:
        http = serve_metrics(built.metrics.registry, settings)
        assert http is not None
        try:
            port = http.server_port
            gzipped = await asyncio.to_thread(
                _exchange, port, b"GET /metrics?name[]=hello_build_info HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"
            )
            head, _, body = gzipped.partition(b"\r\n\r\n")
            assert head.startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n"))
            assert b"Content-Encoding: gzip" in head
            assert gzip.decompress(body).decode().splitlines()[-1].startswith("hello_build_info{")
            post = await asyncio.to_thread(_exchange, port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            assert post.split(b"\r\n")[0].endswith(b" 405 Method Not Allowed")
            garbage = await asyncio.to_thread(_exchange, port, b"HELLO\r\n\r\n")
            assert garbage.split(b"\r\n")[0].endswith(b" 400 Bad Request")
            # A request head longer than any scraper sends is not answered at all.
            assert await asyncio.to_thread(_exchange, port, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n") == b""
        finally:
            http.shutdown()
