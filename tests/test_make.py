"""The Makefile's promises to a newcomer: make help lists every target, make certs says what it did not
understand, and make run serves with the server's log lines alone on stdout and drains on one SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

from service.client import create_channel, say_hello
from service.config.settings import ClientSettings

from .processes import ServerProcess, clean_env

ROOT = Path(__file__).resolve().parent.parent


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_help_lists_every_documented_target() -> None:
    documented = [line.split(":", 1)[0] for line in (ROOT / "Makefile").read_text().splitlines() if " ## " in line]
    listed = re.findall(r"^  make (\S+)", _make("help").stdout, flags=re.MULTILINE)
    assert "k8s-secrets" in listed
    assert listed == documented


def test_make_certs_refuses_a_force_it_does_not_understand() -> None:
    result = _make("certs", "FORCE=maybe")
    assert result.returncode != 0
    assert "make certs: FORCE=maybe is not understood: FORCE=1 replaces the certificates" in result.stderr


async def test_make_run_logs_json_alone_on_stdout_and_drains_on_one_sigterm() -> None:
    # Ports 0 on 127.0.0.1: a developer's make run on 50051 may be up (and with port 0, the port is
    # free on 127.0.0.1, not necessarily on ::1); everything else is what make run does.
    env = clean_env(HELLO_HOST="127.0.0.1", HELLO_PORT=0, HELLO_HEALTH_PORT=0, HELLO_METRICS_PORT=0)
    server = ServerProcess(["make", "run"], env, cwd=ROOT, new_session=True)
    try:
        port = server.serving_port()
        settings = ClientSettings(
            target=f"127.0.0.1:{port}", ca_file=ROOT / "certs" / "ca.pem", token_file=ROOT / "certs" / "token"
        )
        async with create_channel(settings) as channel:
            assert await say_hello(channel, "make") == "Hello, make!"
        # What a terminal's process-group kill does: make and the server both get it, and make
        # forwards it to the server once more.
        os.killpg(server.proc.pid, signal.SIGTERM)
        await asyncio.to_thread(server.wait, 30)
        await asyncio.to_thread(server.wait_for, "stopped", 5)
    finally:
        server.stop()
    events = [event["event"] for event in server.events]
    assert "not json" not in events, [e for e in server.events if e["event"] == "not json"]
    assert events.count("stop signal: shutting down") == 1
    assert "second stop signal: stopping now" not in events
    assert server.events[-1]["exit_code"] == 0
