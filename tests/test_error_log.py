"""A failure's log lines carry the exception's type, message and frames, and never a variable's value.

A real hello-server serves tests/failing_app.py, whose handler fails holding a card number (the
request's name) and the caller's bearer token. Every line that carries the exception is read: ours
(the stack's INTERNAL), the app's own structlog calls (``log.exception``, ``exc_info=True``), a
stdlib logger's, and the app's failed shutdown; as JSON on a pipe and as console text on a terminal.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from service.client import create_channel, say_hello

from . import failing_app
from .conftest import CAPTURED, Pki, client_settings, secret
from .processes import BIN, STARTUP_TIMEOUT, pki_env

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = os.path.abspath(failing_app.__file__)
_lines, _first = inspect.getsourcelines(failing_app.charge)
RAISE_LINE = _first + next(n for n, line in enumerate(_lines) if "raise PaymentDeclined" in line)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SERVING = re.compile(r"^(?=[^\n]*\bserving\b)[^\n]*?\bport\W+(\d+)", re.MULTILINE)  # JSON or console
# The handler's failure, logged four ways; the app's failed shutdown; each with its traceback.
HANDLER_LINES = ("charge failed", "charge failed, exc_info", "charge failed, stdlib", "unhandled exception in handler")
SHUTDOWN_LINE = "app shutdown failed"
# The old lines held the token's first characters: no run of this many of them may appear.
TOKEN_PIECE = 8
CARD_PIECE = 12


class _Output:
    """All that a child process writes to one descriptor (a pipe or a terminal), read by a thread."""

    def __init__(self, fd: int) -> None:
        self._fd, self._data, self._closed = fd, b"", False
        self._more = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:  # a terminal's reader gets EIO once the last writer is gone
                chunk = b""
            with self._more:
                self._data += chunk
                self._closed = not chunk
                self._more.notify_all()
            if not chunk:
                os.close(self._fd)
                return

    def text(self, colours: bool = False) -> str:
        text = self._data.decode(errors="replace")
        return text if colours else ANSI.sub("", text)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fail if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._more:
            while not (found := pattern.search(self.text())):
                remaining = deadline - time.monotonic()
                assert not self._closed, f"the output closed without {pattern.pattern!r}"
                assert remaining > 0, f"no {pattern.pattern!r} within {timeout}s"
                self._more.wait(remaining)
        return found

    def all(self, timeout: float) -> str:
        """Everything written, with its colours, once the writer has closed its end."""
        with self._more:
            assert self._more.wait_for(lambda: self._closed, timeout), "the output stayed open"
        return self.text(colours=True)


@contextmanager
def _failing_server(pki: Pki, terminal: bool) -> Iterator[tuple[subprocess.Popen[bytes], _Output]]:
    env = pki_env(pki, HELLO_APP="tests.failing_app:register", PYTHONPATH=ROOT, HELLO_SHUTDOWN_GRACE_SECONDS=0)
    if terminal:
        del env["HELLO_LOG__FORMAT"]  # on a terminal the server picks console text, in colour
        reader, writer = os.openpty()
        tty.setraw(writer)  # the lines as written, without the terminal's \r\n
    else:
        reader, writer = os.pipe()
    server = subprocess.Popen([str(BIN / "hello-server")], env=env, cwd=ROOT, stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    try:
        yield server, _Output(reader)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def _leaks(output: str, card_number: str, token: str) -> list[str]:
    """What of the secrets the output holds, named without their values."""
    found = []
    if any(card_number[i : i + CARD_PIECE] in output for i in range(len(card_number) - CARD_PIECE + 1)):
        found.append("the card number")
    if any(token[i : i + TOKEN_PIECE] in output for i in range(len(token) - TOKEN_PIECE + 1)):
        found.append("part of the bearer token")
    return found


def _check_json(output: str) -> None:
    events = [json.loads(line) for line in output.splitlines()]
    failures = {event["event"]: event for event in events if "exception" in event}
    assert set(failures) == {*HANDLER_LINES, SHUTDOWN_LINE}
    assert failures["charge failed, stdlib"]["logger"] == "tests.failing_app"  # through the stdlib
    for event, line in failures.items():
        [stack] = line["exception"]
        frames = stack["frames"]
        assert all(set(frame) == {"filename", "lineno", "name"} for frame in frames), event
        if event == SHUTDOWN_LINE:
            assert stack["exc_type"] == "RuntimeError"
            assert stack["exc_value"] == "the payment pool did not close (16 digits pending)"
            assert (frames[-1]["filename"], frames[-1]["name"]) == (APP_FILE, "_lifespan")
        else:
            assert (stack["exc_type"], stack["exc_value"]) == ("PaymentDeclined", "declined by the bank"), event
            assert frames[-1] == {"filename": APP_FILE, "lineno": RAISE_LINE, "name": "charge"}, event
            assert "SayHello" in [frame["name"] for frame in frames]


def _check_console(output: str) -> None:
    for event in (*HANDLER_LINES, SHUTDOWN_LINE):
        assert event in output
    assert output.count("Traceback (most recent call last):") == len(HANDLER_LINES) + 1
    assert output.count("PaymentDeclined: declined by the bank") == len(HANDLER_LINES)
    assert output.count(f'File "{APP_FILE}", line {RAISE_LINE}, in charge') == len(HANDLER_LINES)
    assert output.count(", in SayHello") == len(HANDLER_LINES)
    assert "RuntimeError: the payment pool did not close (16 digits pending)" in output


@pytest.mark.parametrize("terminal", [False, True], ids=["json-on-a-pipe", "console-on-a-terminal"])
async def test_a_failure_is_logged_with_its_frames_and_no_variable_value(pki: Pki, terminal: bool) -> None:
    card_number = secret(f"4{secrets.randbelow(10**15):015d}")
    with _failing_server(pki, terminal) as (server, output):
        port = int(output.wait_for(SERVING, STARTUP_TIMEOUT).group(1))
        async with create_channel(client_settings(pki, port)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await say_hello(channel, card_number)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
        everything = output.all(timeout=10)
    CAPTURED.extend((everything, stderr.decode()))  # the session's end-of-run secret scan reads them too
    assert server.returncode == 0  # a failed app shutdown is logged, and changes no exit code
    assert _leaks(everything + stderr.decode(), card_number, pki.token) == []
    if terminal:
        assert ANSI.search(everything)  # the server saw a terminal: console text, in colour
        _check_console(ANSI.sub("", everything))
    else:
        _check_json(everything)
