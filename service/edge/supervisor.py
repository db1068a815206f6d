"""hello-edge run: the server and Envoy in front of it, started together, watched, and stopped together.

Both run in process groups of their own, so a terminal's Ctrl-C reaches only this process, which
passes one SIGTERM to each: the server drains as under `make run`, Envoy stops. A second signal
stops the server at once. When either exits on its own, the other is stopped, with one line saying
which one ended and how. Both die with this process (PR_SET_PDEATHSIG), even when it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("hello.edge")
READY_SECONDS = 30.0
POLL_SECONDS = 0.05
# A SIGTERM this soon after the first is the same request (make forwards the one its group got).
SAME_SIGTERM_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when this process dies, however it dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Child:
    """A program to run: its name in log lines, and its command line."""

    name: str
    command: Sequence[str]


def _ended(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


async def poll(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Await ``check()`` until it is true, every POLL_SECONDS, for READY_SECONDS at most (then TimeoutError)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    while loop.time() < deadline:
        with contextlib.suppress(OSError):
            if await check():
                return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"{what} not ready within {READY_SECONDS:.0f} s")


async def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    return True


def _admin_address(admin_address_file: Path) -> str:
    """What Envoy wrote into its --admin-address-path file ("" before it has)."""
    return admin_address_file.read_text().strip() if admin_address_file.exists() else ""


async def envoy_live(admin_address_file: Path) -> bool:
    """Whether Envoy's admin interface (its address in the file Envoy writes) says LIVE on /ready."""
    address = _admin_address(admin_address_file)
    if not address:
        return False
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /ready HTTP/1.1\r\nhost: envoy\r\nconnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer.startswith(b"HTTP/1.1 200")


async def supervise(
    server: Child, envoy: Child, ready: Callable[[], Awaitable[None]], serving: Callable[[], None], stop_seconds: float
) -> int:
    """Run both until a signal or until one exits; the exit code is the server's after a signal, else 1.

    ``ready()`` is awaited once both have started (it raises TimeoutError when they are not ready in
    time), then ``serving()`` is called. Stopping waits ``stop_seconds`` for both, then kills them.
    """
    loop = asyncio.get_running_loop()
    processes: dict[str, asyncio.subprocess.Process] = {}
    for child in (server, envoy):
        processes[child.name] = await asyncio.create_subprocess_exec(
            *child.command, start_new_session=True, preexec_fn=_die_with_parent
        )
    signalled: list[tuple[signal.Signals, float]] = []
    failed: list[str] = []

    def signal_all(signum: signal.Signals) -> None:
        for process in processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    def on_signal(signum: signal.Signals) -> None:
        if not signalled:
            signalled.append((signum, loop.time()))
            log.info("stop signal: stopping the server and the edge", signal=signum.name)
            signal_all(signal.SIGTERM)
        elif signum is signalled[0][0] is signal.SIGTERM and loop.time() - signalled[0][1] < SAME_SIGTERM_SECONDS:
            return
        else:
            # What a second signal means to the server: stop now, without the rest of the grace period.
            log.warning("second stop signal: stopping now", signal=signum.name)
            signal_all(signal.SIGINT)

    async def announce() -> None:
        try:
            await ready()
        except TimeoutError as exc:
            failed.append(str(exc))
            log.error(f"{exc}: stopping")
            signal_all(signal.SIGTERM)
        else:
            serving()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    waits = {asyncio.ensure_future(process.wait()): name for name, process in processes.items()}
    announcing = asyncio.ensure_future(announce())
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        name = waits[done.pop()]
        if not signalled and not failed:
            others = " and ".join(other for other, process in processes.items() if process.returncode is None)
            log.error(f"{name} exited ({_ended(processes[name].returncode or 0)}): stopping {others or 'nothing'}")
            failed.append(name)
            signal_all(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*waits), stop_seconds)
        except TimeoutError:
            log.error("still running after the grace period: killed", seconds=stop_seconds)
            signal_all(signal.SIGKILL)
            await asyncio.gather(*waits)
    finally:
        announcing.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    code = processes[server.name].returncode
    return 1 if failed or code is None or code < 0 else code
