"""The loop's watch: a warning that says where, when something blocks the event loop (blocking work in ``async def``).

A blocked loop serves nobody: not health, not any other call. asyncio's debug mode reports slow
callbacks too, but it costs every call; this costs none: the loop notes the time every INTERVAL
seconds, and a thread that finds the note more than BLOCKED_SECONDS late logs the frames the
loop's thread is in (file, line, function: never a variable's value). So a stall of more than
about INTERVAL + BLOCKED_SECONDS is always reported, and shorter ones often. Ten wake-ups a second
on each side cost about 2 ms of CPU a second, busy or idle (measured on 2 loaded cores; uvloop
and asyncio alike), and nothing per call.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from typing import Any

import structlog

# asyncio's slow_callback_duration: a step of the loop longer than this stalls every other call.
BLOCKED_SECONDS = 0.1
INTERVAL = 0.1
# One line for a stall, then at most one this often; the stalls in between are counted in the next.
QUIET_SECONDS = 10.0
FRAMES = 4


class LoopWatch:
    """Watches the running loop from a daemon thread between start() and stop()."""

    def __init__(self, log: Any = None, blocked_seconds: float = BLOCKED_SECONDS) -> None:
        self._log = log if log is not None else structlog.get_logger("hello.loop")
        self._blocked = blocked_seconds
        self._beat = time.monotonic()
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin, on the loop to watch."""
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._note()
        self._thread = threading.Thread(target=self._watch, name="hello-loop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the watch (on the loop), waiting for the thread's next look: nothing is reported after this."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._thread.join(2 * INTERVAL)

    def _note(self) -> None:
        self._beat = time.monotonic()
        self._timer = self._loop.call_later(INTERVAL, self._note)

    def _watch(self) -> None:
        reported_beat, last_report, unreported = 0.0, float("-inf"), 0
        while True:
            slept = time.monotonic()
            time.sleep(INTERVAL)  # one system call: the cheapest wait there is
            if self._stopped:
                return  # the beats stopped too: an old beat now says nothing
            now, beat = time.monotonic(), self._beat
            if now - slept > INTERVAL + self._blocked:
                # This thread woke late too: the process, not the loop, was kept waiting (a busy machine).
                reported_beat = beat
                continue
            late = now - beat - INTERVAL
            if late < self._blocked or beat == reported_beat:
                continue
            reported_beat = beat  # one report a stall, however long it lasts
            if time.monotonic() - last_report < QUIET_SECONDS:
                unreported += 1
                continue
            frame = sys._current_frames().get(self._loop_thread)
            stack = traceback.extract_stack(frame)[-FRAMES:] if frame is not None else []
            where = [f"{f.filename}:{f.lineno} in {f.name}" for f in stack]
            self._log.warning(
                "event loop blocked",
                hint="no call is served meanwhile: blocking work goes in a def handler, or asyncio.to_thread",
                # So far: the report is made while the loop is still stuck.
                blocked_seconds=round(late, 3),
                where=where,
                stalls_not_logged=unreported,
            )
            last_report, unreported = time.monotonic(), 0
