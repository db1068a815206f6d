"""The edge as the tests drive it: `hello-edge run` (the server and Envoy) on free ports, called over plain HTTP.

JSON calls and gRPC-Web calls (binary and text) are made with the standard library, by hand, so the
tests see the bytes a browser or curl would: the HTTP status, the headers, each gRPC-Web frame.
"""

from __future__ import annotations

import base64
import json
import queue
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conftest import CAPTURED, Pki
from .processes import BIN, STARTUP_TIMEOUT, pki_env
from .test_workers import fixed_ports

# What `make run-edge` allows (config/dev.env): any port of localhost and of 127.0.0.1.
DEV_ORIGINS = "http://localhost:*,http://127.0.0.1:*"


def _lines(stream: Any, into: list[dict[str, Any]], ready: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = {"event": "text", "line": line.rstrip("\n")}
        into.append(event)
        ready.put(event)
    ready.put(None)


class EdgeProcess:
    """`hello-edge run` in a process group of its own: the server's JSON lines (stdout) and the edge's (stderr)."""

    def __init__(self, pki: Pki, *, cwd: Path | None = None, env_file: Path | None = None, **settings: object) -> None:
        self.server_port, self.port = fixed_ports(2)
        values: dict[str, object] = {
            "HELLO_PORT": self.server_port,
            "HELLO_EDGE__HOST": "127.0.0.1",
            "HELLO_EDGE__PORT": self.port,
            "HELLO_EDGE__UPSTREAM_CA_FILE": pki.ca,
            "HELLO_EDGE__ALLOWED_ORIGINS": DEV_ORIGINS,
            "HELLO_EDGE__HEALTH_PORT": "off",
            "HELLO_EDGE__ADMIN_PORT": 0,
            "HELLO_SHUTDOWN_GRACE_SECONDS": 1,
        }
        values.update(settings)
        command = [str(BIN / "hello-edge"), *(["--env-file", str(env_file)] if env_file else []), "run"]
        self.proc = subprocess.Popen(
            command,
            env=pki_env(pki, **values),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.server_events: list[dict[str, Any]] = []
        self.edge_events: list[dict[str, Any]] = []
        self._server_lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._edge_lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(
            target=_lines, args=(self.proc.stdout, self.server_events, self._server_lines), daemon=True
        ).start()
        threading.Thread(
            target=_lines, args=(self.proc.stderr, self.edge_events, self._edge_lines), daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_for(self, event: str, timeout: float = STARTUP_TIMEOUT, *, server: bool = False) -> dict[str, Any]:
        """The first ``event`` line the edge (or with ``server``, the server) logs from now on."""
        lines = self._server_lines if server else self._edge_lines
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {event!r} within {timeout}s: {self.edge_events} {self.server_events}"
                ) from None
            if line is None:
                raise AssertionError(f"exited before {event!r}: {self.edge_events} {self.server_events}")
            if line.get("event") == event:
                return line

    def access_line(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        """The server's access-log line of the call with ``request_id`` (waits for it, bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.server_events):
                if event.get("event") == "rpc" and event.get("request_id") == request_id:
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no access line with request id {request_id}: {self.server_events[-5:]}")

    def reached_server(self, request_id: str) -> bool:
        """Whether any access line names ``request_id``; ask after a later call's line is in."""
        return any(event.get("request_id") == request_id for event in self.server_events)

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # The processes' own output joins what the end-of-session secret scan reads.
        CAPTURED.append(json.dumps(self.server_events))
        CAPTURED.append(json.dumps(self.edge_events))
        return self.proc.returncode


@contextmanager
def running_edge(pki: Pki, **settings: object) -> Iterator[EdgeProcess]:
    """``with running_edge(pki, HELLO_X=...) as edge``: both its processes ready; stopped on leaving."""
    edge = EdgeProcess(pki, **settings)
    try:
        edge.wait_for("edge serving")
        yield edge
    finally:
        edge.stop()


@dataclass
class Reply:
    """An HTTP reply: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, method: str = "POST", body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    assert url.startswith("http://127.0.0.1:"), url  # only the edge on this machine
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def _base(edge: EdgeProcess | str) -> str:
    return edge if isinstance(edge, str) else edge.url


def json_call(
    edge: EdgeProcess | str, path: str, payload: Any = None, *, token: str | None, method: str = "POST", **headers: str
) -> Reply:
    """A JSON call, as curl makes it: ``payload`` (or raw bytes) as the body, the token as a bearer header."""
    sent = dict(headers)
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    body = payload if isinstance(payload, bytes) or payload is None else json.dumps(payload).encode()
    if body is not None:
        sent.setdefault("content-type", "application/json")
    return http(_base(edge) + path, method, body, sent)


def frames(messages: list[bytes]) -> bytes:
    """gRPC's length-prefixed messages (flag 0: data)."""
    return b"".join(b"\0" + struct.pack(">I", len(m)) + m for m in messages)


def _unbase64(text: bytes) -> bytes:
    """grpc-web-text: base64 in pieces, each of which may end in its own padding."""
    out, start = b"", 0
    for index in range(len(text)):
        if text[index : index + 1] == b"=" and (index + 1 == len(text) or text[index + 1 : index + 2] != b"="):
            out += base64.b64decode(text[start : index + 1])
            start = index + 1
    return out + (base64.b64decode(text[start:]) if start < len(text) else b"")


@dataclass
class GrpcWebReply:
    """A gRPC-Web reply: the HTTP status and headers, each data message, and the trailers (from the trailer frame)."""

    status: int
    headers: dict[str, str]
    messages: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_status(self) -> int:
        """The gRPC status: from the trailer frame, or from the headers (a trailers-only reply)."""
        return int(self.trailers.get("grpc-status", self.headers.get("grpc-status", "-1")))

    def metadata(self, key: str) -> str | None:
        return self.trailers.get(key, self.headers.get(key))


def grpc_web_call(
    edge: EdgeProcess | str, path: str, messages: list[bytes], *, token: str | None, text: bool = False, **headers: str
) -> GrpcWebReply:
    """A gRPC-Web call as a browser library makes it (binary, or with ``text`` base64: grpc-web-text)."""
    kind = "application/grpc-web-text" if text else "application/grpc-web+proto"
    # grpc-web's text mode asks for a text reply too (Envoy answers in binary otherwise).
    sent = {"content-type": kind, "accept": kind, "x-grpc-web": "1"}
    sent.update(headers)
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    body = frames(messages)
    reply = http(_base(edge) + path, "POST", base64.b64encode(body) if text else body, sent)
    assert reply.headers.get("content-type", kind).startswith(kind), reply.headers
    payload = _unbase64(reply.body) if text else reply.body
    result = GrpcWebReply(reply.status, reply.headers)
    index = 0
    while index < len(payload):
        flag, size = payload[index], struct.unpack(">I", payload[index + 1 : index + 5])[0]
        data, index = payload[index + 5 : index + 5 + size], index + 5 + size
        if flag & 0x80:
            for line in data.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    result.trailers[key.strip().lower()] = value.strip()
        else:
            result.messages.append(data)
    return result
