"""Instructions per call, counted by callgrind: what a server's own code costs, whatever the machine's load.

Calls per second on a shared 2-core machine move by a tenth from run to run; the instructions a
server executes for the same calls do not (two runs agree within about 0.3 %). The server runs
under `valgrind --tool=callgrind` (every thread, user space: the kernel's share is not counted);
after a warm-up its counters are zeroed, h2load sends the calls, and the counters are dumped.

Usage: python -m tests.bench.instructions [--calls N] [VARIANT ...]   (default: bare-tls ours)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from service.certs import write_dev_pki

from .bench import Bench, Pki, Server, Variant, seed_stubs

WARM_UP = 300
# Under valgrind a server starts (imports, TLS set-up) some twenty times slower.
STARTUP_SECONDS = 300
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


def count(bench: Bench, variant: Variant, calls: int) -> dict[str, Any]:
    """Start ``variant`` under callgrind, warm it up, count the instructions of ``calls`` calls (h2load 4x32)."""
    out = bench.work / f"callgrind-{variant.name}.out"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no", "--dump-instr=no"]
    server: Server = bench.start(variant, pinned=False, wrapper=wrapper, startup_seconds=STARTUP_SECONDS)
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
        "variant": variant.name,
        "calls": done["calls"],
        "failed": done["failed"],
        "instructions_per_call": instructions / max(done["calls"], 1),
    }


def report(counts: list[dict[str, Any]]) -> str:
    """A markdown table of instructions per call, and each variant's ratio to the first."""
    first = counts[0]
    lines = [
        f"Instructions per call (callgrind, every thread, user space; h2load 4x32, {first['calls']} calls "
        "after a warm-up; repeatable within about 0.3 %):",
        "",
        f"| variant | instructions per call | ratio to {first['variant']} |",
        "|---|---:|---:|",
    ]
    for entry in counts:
        ratio = entry["instructions_per_call"] / first["instructions_per_call"]
        lines.append(f"| {entry['variant']} | {entry['instructions_per_call']:,.0f} | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hello-instructions-"))
    write_dev_pki(work / "pki")
    token = next(line.split(":", 1)[1] for line in (work / "pki" / "token").read_text().splitlines() if ":" in line)
    bench = Bench(Pki(work / "pki", token), seed_stubs(work / "seed"), work, duration=1.0)
    counts = [count(bench, VARIANTS[name], args.calls) for name in args.variants]
    print(report(counts))
    return 1 if any(entry["failed"] for entry in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
