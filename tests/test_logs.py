"""The logging set-up: JSON lines on the fast path, the timestamp format, and when lines reach the stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path
from select import PIPE_BUF
from typing import Any

import structlog

from service.config.settings import LogSettings
from service.observability.logs import (
    LoopFlushedLogger,
    configure_logging,
    dict_tracebacks_without_locals,
    json_line,
    utc_timestamper,
)

from .conftest import Pki
from .processes import BIN, pki_env

ROOT = Path(__file__).resolve().parents[1]
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _stream() -> tuple[io.BytesIO, io.TextIOWrapper]:
    raw = io.BytesIO()
    return raw, io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")  # type: ignore[arg-type]


def test_timestamps_are_iso_utc_with_microseconds_and_now() -> None:
    stamp = utc_timestamper()
    before = dt.datetime.now(dt.UTC)
    first = stamp(None, "info", {})["timestamp"]
    second = stamp(None, "info", {})["timestamp"]
    assert ISO_UTC.fullmatch(first)
    assert ISO_UTC.fullmatch(second)
    when = dt.datetime.fromisoformat(first.replace("Z", "+00:00"))
    assert abs((when - before).total_seconds()) < 2
    assert second >= first


def test_json_lines_carry_context_level_and_values_orjson_refuses() -> None:
    raw, stream = _stream()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(LogSettings(format="json", level="info"), stream=stream)
    try:
        structlog.contextvars.bind_contextvars(request_id="r-1")
        # Outside a running loop, a line is flushed at once.
        structlog.get_logger("t").info("certificate", serial=2**100, path=io)
        structlog.get_logger("t").debug("not shown")
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger("t").exception("failed")
        line, failure_line = raw.getvalue().decode().splitlines()
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
    event = json.loads(line)
    assert (event["event"], event["level"], event["request_id"]) == ("certificate", "info", "r-1")
    assert event["serial"] == 2**100  # beyond orjson's 64 bits: the stdlib encoder takes over
    assert event["path"].startswith("<module 'io'")
    assert ISO_UTC.fullmatch(event["timestamp"])
    assert "exception" not in event
    failure = json.loads(failure_line)
    assert failure["level"] == "error"
    [frame] = failure["exception"]
    assert (frame["exc_type"], frame["exc_value"]) == ("ValueError", "boom")


class _Custom:
    def __structlog__(self) -> str:
        return "custom form"


def test_the_fused_json_processor_writes_what_structlogs_own_chain_writes() -> None:
    # json_line stands in for merge_contextvars, add_log_level, a timestamper, dict_tracebacks (no locals) and
    # JSONRenderer; the two must agree on every field but the time.
    chain = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        dict_tracebacks_without_locals,
        structlog.processors.JSONRenderer(),
    ]

    def through_structlog(method: str, event: dict[str, Any]) -> dict[str, Any]:
        for processor in chain:
            event = processor(None, method, event)
        return dict(json.loads(event))  # type: ignore[arg-type]

    fused = json_line(trace_context=False)
    structlog.contextvars.bind_contextvars(request_id="r-9", principal="dev", shadowed="context")
    try:
        try:
            raise KeyError("gone")
        except KeyError as error:
            cases = [
                ("info", {"event": "rpc", "code": "OK", "shadowed": "event", "odd": io, "custom": _Custom()}),
                ("warn", {"event": "slow"}),
                ("exception", {"event": "failed", "exc_info": error}),
            ]
            for method, event in cases:
                ours = json.loads(fused(None, method, dict(event)))
                theirs = through_structlog(method, dict(event))
                assert ISO_UTC.fullmatch(ours.pop("timestamp"))
                theirs.pop("timestamp")
                assert ours == theirs
    finally:
        structlog.contextvars.clear_contextvars()


async def test_lines_logged_in_the_loop_are_out_by_the_end_of_the_iteration() -> None:
    raw = io.BytesIO()
    logger = LoopFlushedLogger(io.BufferedWriter(raw))  # type: ignore[arg-type]
    for number in range(3):
        logger.info(f"line {number}".encode())
    await asyncio.sleep(0)
    assert raw.getvalue().splitlines() == [b"line 0", b"line 1", b"line 2"]
    logger.error(b"line 3")
    await asyncio.sleep(0)
    assert raw.getvalue().splitlines()[-1] == b"line 3"


def test_lines_still_queued_at_exit_are_written(tmp_path: Path) -> None:
    # A child whose loop stops in the iteration that logged, so the scheduled flush never runs.
    script = (
        "import asyncio, structlog\n"
        "from service.observability.logs import configure_logging\n"
        "from service.config.settings import LogSettings\n"
        "configure_logging(LogSettings(format='json'))\n"
        "async def main():\n"
        "    structlog.get_logger('t').info('last words')\n"
        "    await asyncio.Future()\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.call_soon(loop.stop)\n"
        "loop.create_task(main())\n"
        "loop.run_forever()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    )
    # (asyncio then logs, through the stdlib, that the pending task was destroyed)
    assert json.loads(result.stdout.splitlines()[0])["event"] == "last words"


class _Writes(io.RawIOBase):
    """A raw stream that keeps each write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


async def test_an_iteration_of_lines_goes_out_in_whole_line_writes_of_at_most_pipe_buf() -> None:
    raw = _Writes()
    logger = LoopFlushedLogger(io.BufferedWriter(raw))
    lines = [f"line {n} ".encode() + b"x" * 300 for n in range(40)]  # about 12 KiB in one iteration
    for line in lines:
        logger.info(line)
    await asyncio.sleep(0)
    assert len(raw.writes) > 1
    assert all(len(write) <= PIPE_BUF and write.endswith(b"\n") for write in raw.writes)
    assert b"".join(raw.writes).splitlines() == lines


async def test_stdlib_records_keep_their_place_among_our_lines() -> None:
    raw, stream = _stream()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(LogSettings(format="json", level="info"), stream=stream)
    try:
        structlog.get_logger("ours").info("first")
        logging.getLogger("grpc._server").warning("second")  # as grpc's own code logs
        structlog.get_logger("ours").info("third")
        await asyncio.sleep(0)
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
    events = [json.loads(line) for line in raw.getvalue().decode().splitlines()]
    assert [e["event"] for e in events] == ["first", "second", "third"]
    assert (events[1]["logger"], events[1]["level"]) == ("grpc._server", "warning")


def test_a_reader_that_goes_away_costs_no_traceback(pki: Pki) -> None:
    # make run | jq, then Ctrl-C: jq is gone before the server logs its stop.
    server = subprocess.Popen(
        [str(BIN / "hello-server")], env=pki_env(pki), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert server.stdout is not None
    try:
        for line in server.stdout:
            if json.loads(line)["event"] == "serving":
                break
        server.stdout.close()
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0
    assert b"Traceback" not in stderr
    assert b"BrokenPipeError" not in stderr
