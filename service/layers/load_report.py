"""Load report: every call's trailers carry this process's CPU utilization and call rate, as ORCA asks.

Clients balancing with grpc's weighted_round_robin read ``endpoint-load-metrics-bin`` (an
xds.data.orca.v3.OrcaLoadReport) and send each backend calls in proportion to its calls a second
over its utilization, so a busy backend gets fewer. The figures are sampled, at most once per
``sample_seconds`` and by the call that finds the sample old; a call in between only sends the last.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from .hooks import Call, Hooks, Method

KEY = "endpoint-load-metrics-bin"
_DOUBLE = struct.Struct("<d")


def orca_report(cpu_utilization: float, calls_per_second: float) -> bytes:
    """An OrcaLoadReport with cpu_utilization (field 1) and rps_fractional (field 6), serialized.

    Written by hand: two fixed-width doubles, each a one-byte tag and eight bytes. The message's
    Python code ships only in xds-protos, the whole envoy API (tens of MB) for two fields.
    """
    return b"\x09" + _DOUBLE.pack(cpu_utilization) + b"\x31" + _DOUBLE.pack(calls_per_second)


class LoadReport:
    """Adds the last sample's report to the trailers of every call, sampling when it is ``sample_seconds`` old.

    CPU utilization is the process's CPU time (every thread, grpc's own included) per second of
    wall time since the last sample: 1.0 is one core busy.
    """

    def __init__(
        self,
        sample_seconds: float,
        cpu_seconds: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._period, self._cpu_seconds, self._clock = sample_seconds, cpu_seconds, clock
        self._sampled_at, self._cpu_at, self._calls = clock(), cpu_seconds(), 0
        # No figures yet: weighted_round_robin ignores a report without a call rate.
        self._trailer: tuple[tuple[str, bytes], ...] = ((KEY, orca_report(0.0, 0.0)),)
        self._hooks = Hooks(exit=self._report)

    def hooks(self, _method: Method) -> Hooks:
        """The same for every method: every call is load."""
        return self._hooks

    def sample(self) -> tuple[float, float]:
        """Take a new sample now: (CPU utilization, calls a second) since the last one."""
        now, cpu = self._clock(), self._cpu_seconds()
        elapsed = max(now - self._sampled_at, 1e-6)
        utilization, rate = (cpu - self._cpu_at) / elapsed, self._calls / elapsed
        self._sampled_at, self._cpu_at, self._calls = now, cpu, 0
        self._trailer = ((KEY, orca_report(utilization, rate)),)
        return utilization, rate

    def _report(self, call: Call) -> None:
        self._calls += 1
        if self._clock() - self._sampled_at >= self._period:
            self.sample()
        context = call.context
        # Added to what the layers set (the request id, a refusal's details): setting replaces.
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), *self._trailer))
