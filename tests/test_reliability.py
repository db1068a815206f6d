"""Reliability under load: nothing is lost, every call is logged and counted once; faults cost no calls.

Real server processes; our async client makes the load: bounded in calls and in time."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client import create_channel, say_hello

from .conftest import Pki, client_settings, secret
from .processes import BIN, ServerProcess, memory_mib, pki_env
from .test_cert_rotation import install, issue, served_serial

LOAD_SECONDS = 8.0
MAX_CALLS = 200_000


@pytest.fixture
def servers(pki: Pki) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(pki: Pki, started: list[ServerProcess], **settings: object) -> tuple[ServerProcess, int]:
    server = ServerProcess([str(BIN / "hello-server")], pki_env(pki, **settings))
    started.append(server)
    return server, server.serving_port()


async def load(
    pki: Pki, target: str, seconds: float, *, channels: int = 4, concurrency: int = 64, **client: object
) -> tuple[list[str], list[grpc.StatusCode]]:
    """``concurrency`` callers spread over ``channels`` channels, each call with a unique request id."""
    sent: list[str] = []
    failures: list[grpc.StatusCode] = []
    deadline = time.monotonic() + seconds
    settings = client_settings(pki, 0, target=target, **client)

    async def caller(channel: grpc.aio.Channel, who: int) -> None:
        for i in range(MAX_CALLS // concurrency):
            if time.monotonic() >= deadline:
                return
            request_id = f"load-{who}-{i}"
            sent.append(request_id)
            try:
                await say_hello(channel, f"n{i}", request_id=request_id)
            except grpc.aio.AioRpcError as error:
                failures.append(error.code())

    opened = [create_channel(settings) for _ in range(channels)]
    chans = [await c.__aenter__() for c in opened]
    try:
        await asyncio.gather(*(caller(chans[k % channels], k) for k in range(concurrency)))
    finally:
        for c in opened:
            await c.__aexit__(None, None, None)
    return sent, failures


def metrics_ok_calls(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = r'^grpc_server_handled_total\{[^}]*grpc_code="OK"[^}]*grpc_method="SayHello"[^}]*\} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


async def test_load_loses_nothing_and_logs_every_call_once(pki: Pki, servers: list[ServerProcess]) -> None:
    server, port = start(pki, servers)
    metrics_port = int(server.events[-1]["metrics_port"])
    sent, failures = await load(pki, f"localhost:{port}", LOAD_SECONDS)
    assert failures == []
    assert len(sent) > 1000
    assert memory_mib(server.proc.pid) < 200
    ok = await asyncio.to_thread(metrics_ok_calls, metrics_port)
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0
    logged = Counter(e.get("request_id") for e in server.events if e.get("event") == "rpc" and e.get("code") == "OK")
    assert all(logged[request_id] == 1 for request_id in sent)
    assert sum(logged[r] for r in sent) == len(sent)
    assert ok == len(sent)


async def test_sigterm_with_drain_under_load_completes_every_call(pki: Pki, servers: list[ServerProcess]) -> None:
    server, port = start(pki, servers, HELLO_DRAIN_SECONDS=4)
    work = asyncio.ensure_future(load(pki, f"localhost:{port}", 3.0))
    await asyncio.sleep(1.0)  # the load is running
    server.signal(signal.SIGTERM)
    sent, failures = await work  # calls keep arriving during the drain, and are served
    assert failures == []
    assert len(sent) > 100
    assert await asyncio.to_thread(server.wait, 30) == 0


async def test_clients_move_on_when_one_of_two_backends_drains(pki: Pki, servers: list[ServerProcess]) -> None:
    (first, p1), (_, p2) = start(pki, servers, HELLO_DRAIN_SECONDS=2), start(pki, servers, HELLO_DRAIN_SECONDS=2)
    target = f"ipv4:127.0.0.1:{p1},127.0.0.1:{p2}"
    work = asyncio.ensure_future(load(pki, target, 5.0, server_name="localhost"))
    await asyncio.sleep(1.0)
    first.signal(signal.SIGTERM)
    sent, failures = await work
    assert failures == []
    assert len(sent) > 100
    assert await asyncio.to_thread(first.wait, 30) == 0


async def test_retries_absorb_a_killed_backend(pki: Pki, servers: list[ServerProcess]) -> None:
    backends = [start(pki, servers) for _ in range(3)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in backends)
    work = asyncio.ensure_future(load(pki, target, 5.0, server_name="localhost"))
    await asyncio.sleep(1.5)
    backends[1][0].signal(signal.SIGKILL)
    sent, failures = await work
    assert failures == []
    assert len(sent) > 100


async def test_token_rotation_under_load(pki: Pki, servers: list[ServerProcess], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    kept, added = secret("kept-token-0123456789abcdef-Kq7Wm2"), secret("added-token-0123456789abcdef-Kq7Wm2")
    tokens.write_text(f"svc:{kept}\n")
    _, port = start(pki, servers, HELLO_AUTH__TOKENS_FILE=tokens, HELLO_AUTH__RELOAD_SECONDS=0.2)
    work = asyncio.ensure_future(load(pki, f"localhost:{port}", 3.0, token=kept))
    await asyncio.sleep(1.0)
    (tmp_path / "tokens.new").write_text(f"svc:{kept}\nnew:{added}\n")
    os.replace(tmp_path / "tokens.new", tokens)
    sent, failures = await work
    assert failures == []  # the token kept across the rotation never failed
    assert len(sent) > 100
    async with create_channel(client_settings(pki, port, token=added)) as channel:
        assert await say_hello(channel, "added") == "Hello, added!"


async def test_certificate_rotation_under_load(pki: Pki, servers: list[ServerProcess], tmp_path: Path) -> None:
    for name in ("server.pem", "server-key.pem"):
        shutil.copy(pki.dir / name, tmp_path / name)
    _, port = start(
        pki,
        servers,
        HELLO_TLS__CERT_FILE=tmp_path / "server.pem",
        HELLO_TLS__KEY_FILE=tmp_path / "server-key.pem",
        HELLO_TLS__RELOAD_SECONDS=0,
    )
    # Short-lived channels keep making new connections, so some handshakes see each certificate.
    work = asyncio.ensure_future(load(pki, f"localhost:{port}", 3.0, channels=4, concurrency=16))
    await asyncio.sleep(1.0)
    cert, key, serial = issue(pki)
    install(tmp_path, cert, key)
    sent, failures = await work
    assert failures == []
    assert len(sent) > 100
    assert await asyncio.to_thread(served_serial, port, pki.ca) == serial
