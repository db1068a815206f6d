"""HELLO_WORKERS: several processes on the same ports, supervised: calls spread, a killed worker is replaced,
SIGTERM drains them all, /metrics adds them up, start-up problems are still one line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from service.client import create_channel, say_hello
from service.observability.metrics import PUSH_SECONDS

from .conftest import Pki, client_settings
from .processes import BIN, ServerProcess, pki_env, run
from .recorded import recorded


def fixed_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture
def workers(pki: Pki) -> Iterator[tuple[ServerProcess, dict[str, int]]]:
    port, health, metrics = fixed_ports(3)
    env = pki_env(pki, HELLO_WORKERS=2, HELLO_PORT=port, HELLO_HEALTH_PORT=health, HELLO_METRICS_PORT=metrics)
    supervisor = ServerProcess([str(BIN / "hello-server")], env)
    supervisor.wait_for("workers serving")
    yield supervisor, {"port": port, "metrics": metrics}
    supervisor.stop()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _sum(text: str, series: str) -> float:
    """The sum of the values of every sample of SayHello whose name and labels start as ``series``."""
    pattern = rf'^{re.escape(series)}[^}}]*grpc_method="SayHello"[^}}]*\}} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def _ok_calls(port: int) -> float:
    return _sum(_scrape(port), 'grpc_server_handled_total{grpc_code="OK",')


def _serving_pids(supervisor: ServerProcess) -> set[int]:
    return {int(e["pid"]) for e in supervisor.events if e.get("event") == "serving"}


async def test_two_workers_serve_one_port_and_metrics_add_up(
    workers: tuple[ServerProcess, dict[str, int]], pki: Pki
) -> None:
    supervisor, ports = workers
    assert len(_serving_pids(supervisor)) == 2
    for _ in range(6):  # a new connection each time: the kernel spreads them over the workers
        async with create_channel(client_settings(pki, ports["port"])) as channel:
            assert await say_hello(channel, "w") == "Hello, w!"
    # Workers hand their counts to the supervisor every PUSH_SECONDS: all six show within a few.
    ok = await recorded(lambda: asyncio.to_thread(_ok_calls, ports["metrics"]), lambda ok: ok == 6, PUSH_SECONDS * 10)
    assert ok == 6
    text = await asyncio.to_thread(_scrape, ports["metrics"])
    # The handling-time histogram adds up over the workers too; the build is one series, not one per pid.
    assert _sum(text, "grpc_server_handling_seconds_count{") == 6
    assert _sum(text, "grpc_server_handling_seconds_sum{") > 0
    build_info = [line for line in text.splitlines() if line.startswith("hello_build_info{")]
    assert len(build_info) == 1, build_info
    assert "pid=" not in build_info[0]
    # Every code's series is there at 0 before its first call; python_info is the supervisor's
    # (process_* cannot be added up over processes); no *_created series.
    assert re.search(
        r'^grpc_server_handled_total\{grpc_code="DataLoss",[^}]*grpc_method="SayHello"[^}]*\} 0\.0$', text, re.M
    )
    assert re.search(r"^python_info\{", text, re.M)
    assert "_created" not in text


async def test_a_killed_worker_is_replaced(workers: tuple[ServerProcess, dict[str, int]], pki: Pki) -> None:
    supervisor, ports = workers
    victim = min(_serving_pids(supervisor))
    before = len(_serving_pids(supervisor))
    os.kill(victim, signal.SIGKILL)
    restarted = await supervisor.await_event("worker exited; starting another")
    assert restarted["pid"] == victim
    await supervisor.await_event("serving")
    assert len(_serving_pids(supervisor)) == before + 1
    async with create_channel(client_settings(pki, ports["port"])) as channel:
        assert await say_hello(channel, "after") == "Hello, after!"


async def test_sigterm_drains_every_worker_and_exits_0(workers: tuple[ServerProcess, dict[str, int]]) -> None:
    supervisor, _ = workers
    supervisor.signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 30) == 0
    stopped = [e for e in supervisor.events if e.get("event") == "stopped"]
    assert [e["exit_code"] for e in stopped] == [0, 0]


def test_port_in_use_is_one_line(pki: Pki) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        health, metrics = fixed_ports(2)
        env = pki_env(pki, HELLO_WORKERS=2, HELLO_PORT=port, HELLO_HEALTH_PORT=health, HELLO_METRICS_PORT=metrics)
        result = run([str(BIN / "hello-server")], env, 60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"hello-server: HELLO_PORT: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize(
    ("settings", "line", "code"),
    [
        ({"HELLO_PORT": 0}, "hello-server: HELLO_PORT: several workers (HELLO_WORKERS) need a fixed port, not 0", 2),
        ({"HELLO_AUTH__TOKENS_FILE": "/nonexistent"}, "hello-server: HELLO_AUTH__TOKENS_FILE: no such file", 2),
        ({"HELLO_TLS__KEY_FILE": "{client_key}"}, "hello-server: HELLO_TLS__KEY_FILE:", 2),
    ],
    ids=["port-0", "no-tokens-file", "key-mismatch"],
)
def test_bad_configuration_is_still_one_line(pki: Pki, settings: dict[str, object], line: str, code: int) -> None:
    port, health, metrics = fixed_ports(3)
    values = {"HELLO_PORT": port, "HELLO_HEALTH_PORT": health, "HELLO_METRICS_PORT": metrics}
    values.update({k: str(v).format(client_key=pki.client_key) for k, v in settings.items()})
    result = run([str(BIN / "hello-server")], pki_env(pki, HELLO_WORKERS=2, **values), 60)
    assert result.returncode == code
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(line)


async def test_workers_stop_when_their_supervisor_is_killed(workers: tuple[ServerProcess, dict[str, int]]) -> None:
    supervisor, _ = workers
    pids = _serving_pids(supervisor)
    supervisor.signal(signal.SIGKILL)
    # Each worker notices within a second or so and stops; none outlives its supervisor.
    for _ in range(100):  # bounded: 10 s at most
        if not any(_alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_supervisor_imports_no_grpc() -> None:
    # Everything the supervisor runs, /metrics for its workers included, without grpc in the process.
    script = (
        "import sys\n"
        "import service.cli.hello_server, service.observability.logs\n"
        "import service.server.workers, service.server.metrics_http\n"
        "print(sorted(name for name in sys.modules if name == 'grpc' or name.startswith('grpc.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
