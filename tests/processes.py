"""Real server processes for tests: started with a clean HELLO_* environment, read through their JSON log."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 30.0


def clean_env(**settings: object) -> dict[str, str]:
    """The test process's environment without HELLO_* (and GRPC_VERBOSITY), plus ``settings``.

    GRPC_VERBOSITY goes too, so child processes run with the defaults a user gets.
    """
    # make's own variables go too: under `make test` a child `make run` would think itself a
    # sub-make and print "Entering directory" lines, which a user's shell never sees.
    dropped = {"GRPC_VERBOSITY", "MAKELEVEL", "MAKEFLAGS", "MFLAGS"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELLO_") and k not in dropped}
    env.update({key: str(value) for key, value in settings.items()})
    return env


def pki_env(pki: Any, *, mtls: bool = False, **settings: object) -> dict[str, str]:
    """Settings for hello-server on 127.0.0.1:0 with TLS and the PKI's token; JSON logs."""
    values: dict[str, object] = {
        "HELLO_HOST": "127.0.0.1",
        "HELLO_PORT": 0,
        "HELLO_HEALTH_PORT": 0,
        "HELLO_METRICS_PORT": 0,
        "HELLO_TLS__CERT_FILE": pki.server,
        "HELLO_TLS__KEY_FILE": pki.server_key,
        "HELLO_AUTH__TOKENS_FILE": pki.token_file,
        "HELLO_LOG__FORMAT": "json",
    }
    if mtls:
        values["HELLO_TLS__CLIENT_CA_FILE"] = pki.ca
    values.update(settings)
    return clean_env(**values)


class ServerProcess:
    """A server in a child process; its stdout JSON lines are collected by a reader thread."""

    def __init__(
        self, command: list[str], env: dict[str, str], cwd: Path | None = None, *, new_session: bool = False
    ) -> None:
        # new_session: a process group of its own, to be signalled as a terminal or a shell would.
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
        )
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "not json", "line": line}
            self.events.append(event)
            self._lines.put(event)
        self._lines.put(None)

    def wait_for(self, event: str, timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
        """Block until the server logs ``event``; fail if it exits or stays silent for ``timeout``."""
        while True:
            line = self.next_line(timeout, event)
            if line.get("event") == event:
                return line

    def next_line(self, timeout: float = STARTUP_TIMEOUT, awaited: str = "a line") -> dict[str, Any]:
        """The next line the server logs; fail if it exits or stays silent for ``timeout``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {awaited!r} line within {timeout}s; saw {self.events}") from None
        if line is None:
            raise AssertionError(f"server exited before {awaited!r}: {self.stderr()} {self.events}")
        return line

    async def await_event(self, event: str, timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait_for, event, timeout)

    def serving_port(self) -> int:
        return int(self.wait_for("serving")["port"])

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        """The exit code, once the process has ended and every line it wrote is in ``events``."""
        code = self.proc.wait(timeout=timeout)
        self._read_to_the_end()
        return code

    def _read_to_the_end(self, timeout: float = 10) -> None:
        # The process has exited, but its last lines may still be in the pipe: a test reading
        # events right after wait() would miss them. The reader ends at end of file (bounded: a
        # child of the process may still hold the pipe open).
        self._reader.join(timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGTERM first: a supervisor then stops its workers; SIGKILL only if it will not stop.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._read_to_the_end()
        # The server's own output joins what the end-of-session secret scan reads.
        from .conftest import CAPTURED

        CAPTURED.append(json.dumps(self.events))
        CAPTURED.append(self.stderr())
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (``VmHWM``: its peak so far) in MiB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, f"no {field} in /proc/{pid}/status"
    return int(match.group(1)) / 1024


def run(
    command: list[str], env: dict[str, str], timeout: float = 60, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
