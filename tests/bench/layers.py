"""Where our server's time per call goes: each layer's hooks, timed inside a real hello-server under load.

Throughput ratios on a shared machine move by a tenth between runs, so a change worth a few
microseconds per call cannot be seen in them. This times the hooks themselves: a hello-server
with production settings whose chain wraps every hook of SayHello in a timer, driven by h2load,
then stopped; its totals come back as JSON. A pseudo-layer with empty hooks, first in the
chain, shows what the timer itself adds to each figure.

Usage: python -m tests.bench.layers [--calls N]
(The driver starts this module again as the server, with BENCH_LAYER_TIMES naming the totals file.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.layers.hooks import Hooks

from .bench import METHOD, Bench, Variant, cpu_seconds, new_bench, serve_with_layers

OUT_ENV = "BENCH_LAYER_TIMES"
TIMER = "(timer itself)"
# The Hooks fields a unary call runs: once each per call.
TIMED = ("enter", "exit", "decode", "encode")


class _Empty:
    """A layer whose hooks do nothing: the timer's own cost, measured where the others are."""

    def hooks(self, _method: Any) -> Hooks:
        return Hooks(enter=lambda _call: None, exit=lambda _call: None)


class _Timed:
    """A layer whose hooks for METHOD add their time and count to ``totals[name][hook]``."""

    def __init__(self, layer: Any, name: str, totals: dict[str, dict[str, list[int]]]) -> None:
        self._layer, self._name, self._totals = layer, name, totals

    def hooks(self, method: Any) -> Any:
        hooks = self._layer.hooks(method)
        if hooks is None or method.name != METHOD:
            return hooks
        timed = {field: self._timer(field, getattr(hooks, field)) for field in TIMED if getattr(hooks, field)}
        return dataclasses.replace(hooks, **timed)

    def _timer(self, field: str, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        total = self._totals.setdefault(self._name, {}).setdefault(field, [0, 0])  # [ns, calls]
        clock = time.perf_counter_ns

        def timed(argument: Any) -> Any:
            started = clock()
            try:
                return hook(argument)
            finally:
                total[0] += clock() - started
                total[1] += 1

        return timed


def serve(out: Path) -> int:
    """Run hello-server (its settings from HELLO_*) with every layer timed; write the totals to ``out``."""
    totals: dict[str, dict[str, list[int]]] = {}

    def timed(layers: list[Any]) -> list[Any]:
        named = [(TIMER, _Empty()), *((type(layer).__name__, layer) for layer in layers)]
        return [_Timed(layer, name, totals) for name, layer in named]

    code = serve_with_layers(timed)
    out.write_text(json.dumps(totals))
    return code


WARM_UP = 1000


def measure(bench: Bench, calls: int) -> dict[str, Any]:
    """Start the timed server pinned to core 0, send ``calls`` with h2load from core 1, stop; the figures."""
    out = bench.work / "layer-times.json"
    variant = Variant("layers", "ours, hooks timed", plaintext=False)
    server = bench.start(variant, pinned=True, extra_env={OUT_ENV: str(out)})
    try:
        bench.h2load(server, 4, 32, WARM_UP, pinned=True)
        before = cpu_seconds(server.proc.pid)
        done = bench.h2load(server, 4, 32, calls, pinned=True)
        cpu_us = (cpu_seconds(server.proc.pid) - before) / max(done["calls"], 1) * 1e6
    finally:
        server.stop()
    totals = json.loads(out.read_text())
    timed_calls = totals[TIMER]["enter"][1]
    layers = {
        name: {field: ns / count / 1000 for field, (ns, count) in hooks.items() if count}
        for name, hooks in totals.items()
    }
    return {
        "calls": done["calls"],
        "failed": done["failed"],
        "timed_calls": timed_calls,  # warm-up included: every call that reached the chain
        "cpu_us_per_call": cpu_us,
        "layers": layers,
    }


def report(figures: dict[str, Any]) -> str:
    """A markdown table: microseconds per call in each layer's hooks, and their sum."""
    lines = [
        f"In-server time per call in each layer's hooks (h2load 4x32, pinned, {figures['calls']} calls; "
        f"server CPU {figures['cpu_us_per_call']:.0f} µs per call; each figure includes the timer's own cost, "
        "shown first):",
        "",
        "| layer | " + " | ".join(f"{field} µs" for field in TIMED) + " | per call µs |",
        "|---|" + "---:|" * (len(TIMED) + 1),
    ]
    timer = figures["layers"].get(TIMER, {})
    per_hook = sum(timer.values()) / max(len(timer), 1)
    total = 0.0
    for name, hooks in figures["layers"].items():
        per_call = sum(hooks.values())
        if name != TIMER:
            total += per_call - per_hook * len(hooks)
        cells = " | ".join(f"{hooks[field]:.1f}" if field in hooks else "" for field in TIMED)
        lines.append(f"| {name} | {cells} | {per_call:.1f} |")
    lines += ["", f"All layers' hooks, less the timer's cost: {total:.0f} µs per call."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    figures = measure(new_bench("hello-layers-", duration=1.0), args.calls)
    print(report(figures))
    return 0 if figures["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(serve(Path(os.environ[OUT_ENV])) if os.environ.get(OUT_ENV) else main())
