"""Instructions per call, counted by callgrind: what a server's own code costs, whatever the machine's load.

Calls per second on a shared 2-core machine move by a tenth from run to run; the instructions a
server executes for the same calls hardly do (runs mostly agree within 1 %; the loop batching calls
differently once gave an outlier of 5 %, so compare two or three runs). The server runs
under `valgrind --tool=callgrind` (every thread, user space: the kernel's share is not counted);
after a warm-up its counters are zeroed, h2load sends the calls, and the counters are dumped.

With --each-layer, ours is also counted once without each layer of its chain in turn: what a
layer costs is what its absence saves. The driver starts this module again as that server, with
BENCH_WITHOUT naming the layer to leave out.

The guard: instructions.json holds the counts committed with the code (`--record` writes it, on an
idle machine). make bench fails when ours/bare-tls has grown more than GROWTH over that figure, and
then counts each layer to name the one that grew; and when the figures were counted on another
grpcio release than the installed one (record them again after a bump).

Usage: python -m tests.bench.instructions [--calls N] [--each-layer] [--record] [VARIANT ...]
       (default: bare-tls ours)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from .bench import Bench, Server, Variant, new_bench, serve_with_layers

WITHOUT_ENV = "BENCH_WITHOUT"
NOTHING_LEFT_OUT = "(no layer left out)"
LAYERS = ("RequestId", "AccessLog", "Metrics", "ConcurrencyLimit", "Auth", "Wire")
WARM_UP = 300
# Under valgrind a server starts (imports, TLS set-up) some twenty times slower.
STARTUP_SECONDS = 300
COMMITTED = Path(__file__).with_name("instructions.json")
# How much ours/bare-tls may grow over the committed figure before make bench fails: runs of the
# same code agree within 1 %, with an outlier of 5 % once (the loop batching calls differently).
GROWTH = 0.05
VARIANTS = {
    "bare-tls": Variant("bare-tls", "(a') bare aio over TLS", plaintext=False),
    "ours": Variant("ours", "(c) ours", plaintext=False),
}


def _dumped(out: Path, before: set[Path], timeout: float = 60) -> int:
    """The instruction total of the dump file callgrind writes after ``before`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in set(out.parent.glob(f"{out.name}.*")) - before:
            match = re.search(r"^summary: (\d+)$", path.read_text(), re.MULTILINE)
            if match:
                return int(match.group(1))
        time.sleep(0.2)
    raise SystemExit(f"bench: callgrind wrote no dump next to {out} within {timeout}s")


def serve_without(layer: str) -> int:
    """Run hello-server (its settings from HELLO_*) with every layer of its chain but ``layer``."""
    return serve_with_layers(lambda layers: [each for each in layers if type(each).__name__ != layer])


def count(bench: Bench, variant: Variant, calls: int, without: str | None = None) -> dict[str, Any]:
    """Start ``variant`` under callgrind, warm it up, count the instructions of ``calls`` calls (h2load 4x32).

    ``without`` names a layer to leave out of ours' chain.
    """
    name = variant.name if without is None else f"{variant.name} without {without or NOTHING_LEFT_OUT}"
    out = bench.work / f"callgrind-{name.replace(' ', '-')}.out"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no", "--dump-instr=no"]
    if without is not None:
        variant = Variant("ours-without", name, plaintext=False)
    extra = None if without is None else {WITHOUT_ENV: without or NOTHING_LEFT_OUT}
    server: Server = bench.start(
        variant, pinned=False, extra_env=extra, wrapper=wrapper, startup_seconds=STARTUP_SECONDS
    )
    try:
        bench.h2load(server, 4, 32, WARM_UP, pinned=False)
        before = set(out.parent.glob(f"{out.name}.*"))
        subprocess.run(["callgrind_control", "--zero", str(server.proc.pid)], check=True, capture_output=True)
        done = bench.h2load(server, 4, 32, calls, pinned=False)
        subprocess.run(["callgrind_control", "--dump", str(server.proc.pid)], check=True, capture_output=True)
        instructions = _dumped(out, before)
    finally:
        server.stop()
    return {
        "variant": name,
        "calls": done["calls"],
        "failed": done["failed"],
        "instructions_per_call": instructions / max(done["calls"], 1),
    }


def report(counts: list[dict[str, Any]]) -> str:
    """A markdown table of instructions per call, each variant's ratio to the first, and what left-out layers cost."""
    first = counts[0]
    whole = [entry for entry in counts if entry["variant"] in (f"ours without {NOTHING_LEFT_OUT}", "ours")]
    ours = whole[-1]["instructions_per_call"] if whole else None
    lines = [
        f"Instructions per call (callgrind, every thread, user space; h2load 4x32, {first['calls']} calls "
        "after a warm-up; runs mostly agree within 1 %):",
        "",
        f"| variant | instructions per call | ratio to {first['variant']} | the left-out layer's share of ours |",
        "|---|---:|---:|---:|",
    ]
    for entry in counts:
        per_call = entry["instructions_per_call"]
        share = ""
        if ours is not None and " without " in entry["variant"] and not entry["variant"].endswith(NOTHING_LEFT_OUT):
            share = f"{ours - per_call:,.0f}"
        lines.append(
            f"| {entry['variant']} | {per_call:,.0f} | {per_call / first['instructions_per_call']:.2f} | {share} |"
        )
    return "\n".join(lines)


def layer_costs(counts: list[dict[str, Any]]) -> dict[str, float]:
    """What each layer costs per call: ours with every layer less ours without it (from --each-layer counts)."""
    per_call = {entry["variant"]: entry["instructions_per_call"] for entry in counts}
    whole = per_call.get(f"ours without {NOTHING_LEFT_OUT}")
    if whole is None:
        return {}
    return {layer: whole - per_call[f"ours without {layer}"] for layer in LAYERS if f"ours without {layer}" in per_call}


def figures(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """What --record commits: per-call counts of bare-tls and ours, their ratio, and each layer's cost."""
    per_call = {entry["variant"]: entry["instructions_per_call"] for entry in counts}
    return {
        "grpcio": grpc.__version__,
        "calls": counts[0]["calls"],
        "bare-tls": round(per_call["bare-tls"]),
        "ours": round(per_call["ours"]),
        "ratio": round(per_call["ours"] / per_call["bare-tls"], 4),
        "layers": {layer: round(cost) for layer, cost in layer_costs(counts).items()},
    }


def grown(counts: list[dict[str, Any]], committed: dict[str, Any]) -> float | None:
    """How much ours/bare-tls grew over ``committed`` (0.07: 7 %), or None when within GROWTH."""
    current = figures(counts)["ratio"]
    growth = current / committed["ratio"] - 1
    return growth if growth > GROWTH else None


def blame(counts: list[dict[str, Any]], committed: dict[str, Any]) -> str:
    """Which layer grew most since the committed counts, from the --each-layer counts in ``counts``."""
    changes = {layer: cost - committed["layers"].get(layer, 0) for layer, cost in layer_costs(counts).items()}
    if not changes:
        return "no per-layer counts to compare"
    worst = max(changes, key=lambda layer: changes[layer])
    listed = ", ".join(f"{layer} {change:+,.0f}" for layer, change in sorted(changes.items(), key=lambda i: -i[1]))
    if changes[worst] <= GROWTH * committed["layers"].get(worst, 0):
        return f"no layer grew by more than {GROWTH:.0%}: the chain, the server's set-up or grpc did ({listed})"
    return f"{worst} grew most ({listed} instructions per call)"


def guard(bench: Bench, counts: list[dict[str, Any]], calls: int) -> str | None:
    """None when ours/bare-tls is within GROWTH of the committed figure; else what grew, layer by layer."""
    if not COMMITTED.exists():
        return f"no committed figures in {COMMITTED.name}: record them (python -m tests.bench.instructions --record)"
    committed = json.loads(COMMITTED.read_text())
    if committed["grpcio"] != grpc.__version__:
        # Most of a call's instructions are grpc's: another release's figures measure nothing of ours.
        return (
            f"the committed figures were counted on grpcio {committed['grpcio']}, this is {grpc.__version__}: "
            "record them again (python -m tests.bench.instructions --record)"
        )
    growth = grown(counts, committed)
    if growth is None:
        return None
    each = [count(bench, VARIANTS["ours"], calls, without=layer) for layer in ("", *LAYERS)]
    counts.extend(each)
    return (
        f"ours/bare-tls instructions per call grew {growth:.1%} over the committed {committed['ratio']:.3f} "
        f"(limit {GROWTH:.0%}): {blame(each, committed)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--each-layer", action="store_true", help="also count ours without each layer in turn")
    parser.add_argument("--record", action="store_true", help=f"write the counts to {COMMITTED.name} (implies all)")
    parser.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args()
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"no such variant: {', '.join(sorted(unknown))} (choose from {', '.join(VARIANTS)})")
    if args.record or not args.variants:
        args.variants, args.each_layer = list(VARIANTS), args.each_layer or args.record
    bench = new_bench("hello-instructions-", duration=1.0)
    counts = [count(bench, VARIANTS[name], args.calls) for name in args.variants]
    if args.each_layer:
        # The same server started the way the ones without a layer are (this module, with its
        # imports), so that the difference is the layer's alone.
        counts += [count(bench, VARIANTS["ours"], args.calls, without=layer) for layer in ("", *LAYERS)]
    print(report(counts))
    if args.record:
        COMMITTED.write_text(json.dumps(figures(counts), indent=2) + "\n")
        print(f"recorded in {COMMITTED}")
    return 1 if any(entry["failed"] for entry in counts) else 0


if __name__ == "__main__":
    sys.exit(serve_without(os.environ[WITHOUT_ENV]) if os.environ.get(WITHOUT_ENV) else main())
