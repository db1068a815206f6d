"""make bench: our server against a bare grpc.aio server and the seed's, in one run, as ratios.

Variants, each started fresh for every run and interleaved (a b c d a b c d ...):
  bare   (a) a bare grpc.aio server with our servicer as a user writes it: asyncio's loop, no TLS, no layers
  bare-tls (a') the same on uvloop and over TLS, pinned only: ours/bare-tls is what our layers cost
  seed   (b) the seed article's server exactly as written (sync, 10 threads, insecure, port 50000)
  ours   (c) hello-server as the README's production settings run it: TLS, tokens, JSON access log to
             a file, health port, reflection, request ids, validation, metrics
  mtls   (d) the same with mutual TLS (h2load cannot present a client certificate: our client only)
  workers(e) ours with HELLO_WORKERS=2: CPU per call should match one worker's
Loads: h2load at 1 in-flight call and at 4 connections x 32 streams, and our async client at 4 x 32.
Modes: pinned (server on core 0, load on core 1) and unpinned.

Every run is bounded by a call count sized from a warm-up, and checked: for our server, the
server's own count of OK calls (grpc_server_handled_total) must equal the calls h2load completed.
Last, ours once more with each layer's hooks timed inside the server (tests/bench/layers.py), and
the instructions per call of bare-tls and ours under callgrind (tests/bench/instructions.py): the
run fails when ours/bare-tls grew more than 5 % over the committed figure, naming the layer.

With --grpcio A[,B...] (make bench GRPCIO=1.75.0,1.85.3) every variant runs on each of those grpcio
releases (tests/bench/runtimes.py), interleaved, and the report has the ratios per release and the
same variant across releases.

Usage: python -m tests.bench.bench [--quick] [--repetitions N] [--soak-calls N] [--layer-calls N]
       [--instruction-calls N] [--grpcio A[,B...]] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_tools import protoc

from service.generated.rpc_package import helloworld_pb2
from service.security.dev_pki import write_dev_pki

from .runtimes import Runtime, prepare

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SEED_PORT = 50000
METHOD = "/rpc_package.HelloWorldService/SayHello"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until the server accepts connections (bounded); fails if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on {port} after {timeout}s")


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) if match else 0
    return total / 1024


@dataclass
class Pki:
    dir: Path
    token: str


@dataclass
class Variant:
    name: str
    label: str
    plaintext: bool
    mtls: bool = False
    h2load: bool = True
    client: bool = True
    unpinned: bool = True
    # The grpcio release it runs on; None: the one installed here.
    runtime: Runtime | None = None

    @property
    def kind(self) -> str:
        """What it is, without the release: "ours@1.75.0" is "ours"."""
        return self.name.split("@", 1)[0]

    @property
    def root(self) -> Path:
        """The source tree it runs from."""
        return self.runtime.root if self.runtime else ROOT

    def command(self, port: int, pki: Path) -> list[str]:
        python = str(self.runtime.python) if self.runtime else sys.executable
        if self.kind == "bare":
            return [python, "-m", "tests.bench.bare_server", str(port), "--loop", "asyncio"]
        if self.kind == "bare-tls":
            tls = [str(pki / "server.pem"), str(pki / "server-key.pem")]
            return [python, "-m", "tests.bench.bare_server", str(port), "--loop", "uvloop", "--tls", *tls]
        if self.kind == "seed":
            return [python, str(self.root / "tests" / "seed" / "hello_server.py")]
        if self.kind == "layers":
            return [python, "-m", "tests.bench.layers"]  # hello-server with its hooks timed
        if self.kind == "ours-without":
            return [python, "-m", "tests.bench.instructions"]  # hello-server less one layer
        return [python, "-m", "service"] if self.runtime else [str(BIN / "hello-server")]


@dataclass
class Server:
    variant: Variant
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log: Any
    # OK calls the load generators saw from this server so far (warm-ups included).
    answered: int = 0

    def settled_ok_calls(self) -> float | None:
        """The server's OK count once it reaches ``answered``, or as it stands after two seconds.

        Workers hand their counts to the supervisor every half second; one process counts at once.
        """
        ok = self.ok_calls()
        for _ in range(10):
            if ok is None or ok == self.answered:
                break
            time.sleep(0.2)
            ok = self.ok_calls()
        return ok

    def ok_calls(self) -> float | None:
        if self.metrics_port is None:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        pattern = r'^grpc_server_handled_total\{[^}]*grpc_code="OK"[^}]*grpc_method="SayHello"[^}]*\} ([0-9.e+]+)$'
        return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT if self.variant.kind == "seed" else signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class Bench:
    pki: Pki
    seed_path: Path
    work: Path
    duration: float
    results: list[dict[str, Any]] = field(default_factory=list)

    def start(
        self,
        variant: Variant,
        pinned: bool,
        extra_env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        startup_seconds: float = 30,
    ) -> Server:
        """Start ``variant`` (under ``wrapper``, a command such as valgrind, if given) and wait until it listens."""
        port = SEED_PORT if variant.kind == "seed" else free_port()
        metrics_port = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELLO_")} | (extra_env or {})
        env["GRPC_VERBOSITY"] = "NONE"
        if variant.runtime is not None:
            env["PYTHONPATH"] = str(variant.root)
        if variant.kind == "seed":
            env["PYTHONPATH"] = str(variant.runtime.seed if variant.runtime else self.seed_path)
        elif not variant.kind.startswith("bare"):
            metrics_port = free_port()
            env.update(
                HELLO_HOST="127.0.0.1",
                HELLO_PORT=str(port),
                HELLO_HEALTH_PORT=str(free_port()),
                HELLO_METRICS_PORT=str(metrics_port),
                HELLO_TLS__CERT_FILE=str(self.pki.dir / "server.pem"),
                HELLO_TLS__KEY_FILE=str(self.pki.dir / "server-key.pem"),
                HELLO_AUTH__TOKENS_FILE=str(self.pki.dir / "token"),
                HELLO_LOG__FORMAT="json",
                HELLO_SHUTDOWN_GRACE_SECONDS="1",
            )
            if variant.mtls:
                env["HELLO_TLS__CLIENT_CA_FILE"] = str(self.pki.dir / "ca.pem")
            if variant.kind == "workers":
                env["HELLO_WORKERS"] = "2"
        command = [*(wrapper or []), *variant.command(port, self.pki.dir)]
        if pinned:
            command = ["taskset", "-c", "0", *command]
        log = (self.work / f"{variant.name}-access.log").open("ab")
        proc = subprocess.Popen(command, env=env, cwd=variant.root, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(port, proc, startup_seconds)
        server = Server(variant, proc, port, metrics_port, log)
        if metrics_port is not None:
            wait_listening(metrics_port, proc, startup_seconds)
        return server

    def h2load(self, server: Server, connections: int, streams: int, calls: int, pinned: bool) -> dict[str, Any]:
        scheme = "http" if server.variant.plaintext else "https"
        body = self.work / "request.bin"
        message = helloworld_pb2.HelloRequest(name="bench").SerializeToString()
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
        log_file = self.work / "h2load.log"
        log_file.unlink(missing_ok=True)  # h2load appends
        command = ["h2load", "-n", str(calls), "-c", str(connections), "-m", str(streams)]
        command += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
        command += ["--log-file", str(log_file)]
        if not server.variant.plaintext:
            command += ["-H", f"authorization: Bearer {self.pki.token}"]
        command.append(f"{scheme}://127.0.0.1:{server.port}{METHOD}")
        if pinned:
            command = ["taskset", "-c", "1", *command]
        output = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False).stdout
        match = re.search(r"finished in ([0-9.]+)(ms|s),", output)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
        if not match or not done:
            raise SystemExit(f"bench: h2load said:\n{output}")
        seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
        latencies = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line)
        return {
            "calls": int(done.group(2)),
            "failed": int(done.group(1)) - int(done.group(2)) + int(done.group(3)),
            "seconds": seconds,
            "p50_us": latencies[len(latencies) // 2] if latencies else 0,
            "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0,
        }

    def client(self, server: Server, connections: int, streams: int, calls: int, pinned: bool) -> dict[str, Any]:
        command = [sys.executable, "-m", "tests.bench.load", f"127.0.0.1:{server.port}", "120"]
        command += [str(connections), str(streams), str(calls)]
        if server.variant.plaintext:
            command.append("--plaintext")
        else:
            command += ["--ca", str(self.pki.dir / "ca.pem"), "--token-file", str(self.pki.dir / "token")]
        if server.variant.mtls:
            command += ["--cert", str(self.pki.dir / "client.pem"), "--key", str(self.pki.dir / "client-key.pem")]
        if pinned:
            command = ["taskset", "-c", "1", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
        if result.returncode != 0:
            raise SystemExit(f"bench: load generator failed:\n{result.stderr}")
        report = json.loads(result.stdout)
        return {
            "calls": report["ok"],
            "extra_calls": report["warm_up"],
            "failed": report["failed"],
            "seconds": report["seconds"],
            "p50_us": report["p50_us"],
            "p99_us": report["p99_us"],
        }

    def measure(self, server: Server, load: str, pinned: bool, repetition: int) -> None:
        connections, streams = (1, 1) if load == "h2load 1x1" else (4, 32)
        run = self.h2load if load.startswith("h2load") else self.client
        # A short warm-up sizes the measured run to about `duration` seconds, whatever the speed.
        warm = run(server, connections, streams, 200 if connections == 1 else 1000, pinned)
        server.answered += warm["calls"] + warm.get("extra_calls", 0)
        calls = max(200, int(warm["calls"] / warm["seconds"] * self.duration))
        before_ok = server.settled_ok_calls()
        before_cpu = cpu_seconds(server.proc.pid)
        result = run(server, connections, streams, calls, pinned)
        cpu = cpu_seconds(server.proc.pid) - before_cpu
        expected_ok = result["calls"] + result.get("extra_calls", 0)
        server.answered += expected_ok
        after_ok = server.settled_ok_calls()
        valid = result["failed"] == 0 and (before_ok is None or after_ok - before_ok == expected_ok)
        self.results.append(
            {
                "variant": server.variant.name,
                "load": load,
                "mode": "pinned" if pinned else "unpinned",
                "repetition": repetition,
                "calls_per_s": result["calls"] / result["seconds"],
                "p50_us": result["p50_us"],
                "p99_us": result["p99_us"],
                "cpu_us_per_call": cpu / max(result["calls"], 1) * 1e6,
                "rss_mib": rss_mib(server.proc.pid),
                "calls": result["calls"],
                "server_ok_calls": None if after_ok is None else after_ok - before_ok,
                "valid": valid,
            }
        )
        print(
            f"  {server.variant.name:8} {load:12} {'pinned' if pinned else 'unpinned':8} "
            f"{result['calls'] / result['seconds']:9.0f} calls/s  p50 {result['p50_us']:7.0f} us"
            f"{'' if valid else '  INVALID'}",
            flush=True,
        )

    def soak(self, variant: Variant, calls: int) -> dict[str, float]:
        """RSS of our server idle, after 10k calls and after ``calls`` calls (h2load, 4 x 32)."""
        server = self.start(variant, pinned=False)
        try:
            idle = rss_mib(server.proc.pid)
            self.h2load(server, 4, 32, 10_000, pinned=False)
            after_10k = rss_mib(server.proc.pid)
            self.h2load(server, 4, 32, max(calls - 10_000, 1), pinned=False)
            after_all = rss_mib(server.proc.pid)
        finally:
            server.stop()
        return {"idle_mib": idle, "after_10k_mib": after_10k, "after_all_mib": after_all, "calls": calls}


def seed_stubs(directory: Path) -> Path:
    package = directory / "rpc_package"
    package.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "seed" / "helloworld.proto", package / "helloworld.proto")
    args = ["protoc", f"-I{directory}", f"--python_out={directory}", f"--grpc_python_out={directory}"]
    if protoc.main([*args, str(package / "helloworld.proto")]) != 0:
        raise SystemExit("bench: could not generate the seed's stubs")
    (package / "__init__.py").write_text("")
    return directory


def new_bench(prefix: str, duration: float) -> Bench:
    """A Bench in a new temporary folder, with a development PKI (and token) and the seed's stubs."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    write_dev_pki(work / "pki")
    token = next(line.split(":", 1)[1] for line in (work / "pki" / "token").read_text().splitlines() if ":" in line)
    return Bench(Pki(work / "pki", token), seed_stubs(work / "seed"), work, duration)


def serve_with_layers(change: Callable[[list[Any]], list[Any]]) -> int:
    """Run hello-server (its settings from HELLO_*) with ``change`` applied to the layers of each chain it builds.

    For bench servers only: the chain build_server makes is replaced in this process, nowhere else.
    """
    import service.server.factory
    from service.cli.hello_server import main

    chain = service.server.factory.Chain

    class Changed(chain):  # type: ignore[misc, valid-type]
        def __init__(self, layers: Iterable[Any], *args: Any, **kwargs: Any) -> None:
            super().__init__(change(list(layers)), *args, **kwargs)

    service.server.factory.Chain = Changed  # type: ignore[misc]
    return main([])


def median_of(results: list[dict[str, Any]], variant: str, load: str, mode: str, key: str) -> float | None:
    values = [r[key] for r in results if (r["variant"], r["load"], r["mode"]) == (variant, load, mode)]
    return statistics.median(values) if values else None


def ratio(results: list[dict[str, Any]], a: str, b: str, load: str, mode: str, key: str) -> float | None:
    """Median over repetitions of a/b, pairing the runs of the same repetition."""
    pairs = []
    for rep in sorted({r["repetition"] for r in results}):
        left = [
            r[key] for r in results if (r["variant"], r["load"], r["mode"], r["repetition"]) == (a, load, mode, rep)
        ]
        right = [
            r[key] for r in results if (r["variant"], r["load"], r["mode"], r["repetition"]) == (b, load, mode, rep)
        ]
        if left and right and right[0]:
            pairs.append(left[0] / right[0])
    return statistics.median(pairs) if pairs else None


# (variant a, variant b, measure, load, mode, target as "<op> <value>" or a note in parentheses)
RATIOS = [
    ("ours", "seed", "calls/s", "h2load 4x32", "unpinned", ">= 1.0"),
    ("ours", "bare", "calls/s", "h2load 4x32", "pinned", ">= 0.95"),
    ("ours", "bare-tls", "calls/s", "h2load 4x32", "pinned", ">= 0.85"),
    ("ours", "bare-tls", "p50", "h2load 1x1", "pinned", "<= 1.2"),
    ("bare-tls", "bare", "calls/s", "h2load 4x32", "pinned", "(what uvloop and TLS change)"),
    ("ours", "bare", "calls/s", "client 4x32", "pinned", ""),
    ("mtls", "ours", "calls/s", "client 4x32", "pinned", ""),
    ("workers", "ours", "cpu", "h2load 4x32", "unpinned", "<= 1.10"),
]
# The same variant on two releases: what the release changed.
ACROSS_RELEASES = [("bare", "calls/s", "h2load 4x32", "pinned"), ("ours", "calls/s", "h2load 4x32", "pinned")]
KEYS = {"calls/s": "calls_per_s", "p50": "p50_us", "cpu": "cpu_us_per_call"}
IDLE_RSS_MIB, RSS_GROWTH_MIB = 75, 5


def _of_medians(results: list[dict[str, Any]], a: str, b: str, load: str, mode: str, key: str) -> str:
    left, right = median_of(results, a, load, mode, key), median_of(results, b, load, mode, key)
    return f"{left / right:.2f}" if left is not None and right else ""


def _ratio_rows(results: list[dict[str, Any]], suffix: str) -> list[str]:
    rows = []
    for a, b, measure, load, mode, goal in RATIOS:
        value = ratio(results, a + suffix, b + suffix, load, mode, KEYS[measure])
        if value is None:
            continue
        op, _, number = goal.partition(" ")
        target = float(number) if op in (">=", "<=") else None
        what = f"{a}/{b} {measure}, {load.replace('client', 'our client')}, {mode}"
        what += f" (target {goal})" if target is not None else (f" {goal}" if goal else "")
        meets = "" if target is None else ("yes" if (value >= target if op == ">=" else value <= target) else "NO")
        medians = _of_medians(results, a + suffix, b + suffix, load, mode, KEYS[measure])
        rows.append(f"| {what}{suffix and f' on grpcio {suffix[1:]}'} | {value:.2f} | {medians} | {meets} |")
    return rows


def report(bench: Bench, soak: dict[str, float] | None, header: dict[str, Any], releases: list[str]) -> str:
    """The tables of a run; ``releases`` are the grpcio releases given with --grpcio (none: the installed one)."""
    results = bench.results
    lines = [
        f"grpcio {header['grpcio']}, nproc {header['nproc']}, {header['date']}; medians of {header['repetitions']} "
        f"interleaved runs; command: `{header['command']}`",
        "",
        "| variant | load | mode | calls/s | p50 µs | p99 µs | server CPU µs/call | RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["variant"], r["load"], r["mode"]) for r in results}, key=lambda k: (k[2], k[1], k[0]))
    for variant, load, mode in keys:
        m = {k: median_of(results, variant, load, mode, k) for k in (*KEYS.values(), "p99_us", "rss_mib")}
        lines.append(
            f"| {variant} | {load} | {mode} | {m['calls_per_s']:.0f} | {m['p50_us']:.0f} | {m['p99_us']:.0f} "
            f"| {m['cpu_us_per_call']:.0f} | {m['rss_mib']:.1f} |"
        )
    suffixes = [f"@{release}" for release in releases] or [""]
    # Both columns, so that a reader who divides two rows of the table above finds their figure: with
    # noisy runs the median of the paired ratios (what the targets are judged on) can differ from it.
    lines += [
        "",
        "| ratio | median of per-repetition pairs | of the medians above | meets target |",
        "|---|---:|---:|---|",
    ]
    for suffix in suffixes:
        lines += _ratio_rows(results, suffix)
    for first, other in itertools.pairwise(suffixes):
        for variant, measure, load, mode in ACROSS_RELEASES:
            value = ratio(results, variant + first, variant + other, load, mode, KEYS[measure])
            if value is not None:
                medians = _of_medians(results, variant + first, variant + other, load, mode, KEYS[measure])
                what = f"{variant}{first} / {variant}{other} {measure}, {load}, {mode}"
                lines.append(f"| {what} | {value:.2f} | {medians} | |")
    if soak:
        growth = soak["after_all_mib"] - soak["after_10k_mib"]
        idle_ok = "meets" if soak["idle_mib"] <= IDLE_RSS_MIB else "MISSES"
        growth_ok = "meets" if growth <= RSS_GROWTH_MIB else "MISSES"
        lines += [
            "",
            f"RSS of ours: idle {soak['idle_mib']:.1f} MiB ({idle_ok} the target <= {IDLE_RSS_MIB}), "
            f"after 10k calls {soak['after_10k_mib']:.1f} MiB, "
            f"after {soak['calls'] // 1000}k calls {soak['after_all_mib']:.1f} MiB "
            f"(growth {growth:+.1f} MiB: {growth_ok} the target within {RSS_GROWTH_MIB}).",
        ]
    invalid = [r for r in results if not r["valid"]]
    if invalid:
        lines += ["", f"INVALID runs (a non-OK call, or the server's OK count differs from the load's): {len(invalid)}"]
    return "\n".join(lines)


def _variants(runtime: Runtime | None) -> list[Variant]:
    """Every variant, on ``runtime``'s grpcio (named "ours@1.75.0") or on the installed one ("ours")."""
    suffix = f"@{runtime.grpcio}" if runtime else ""
    variants = [
        Variant("bare", "(a) bare aio", plaintext=True),
        Variant("bare-tls", "(a') bare aio, uvloop and TLS", plaintext=False, client=False, unpinned=False),
        Variant("seed", "(b) seed", plaintext=True),
        Variant("ours", "(c) ours", plaintext=False),
        Variant("mtls", "(d) ours, mTLS", plaintext=False, mtls=True, h2load=False),
        Variant("workers", "(e) ours, 2 workers", plaintext=False),
    ]
    for variant in variants:
        variant.name, variant.label, variant.runtime = variant.name + suffix, variant.label + suffix, runtime
    return variants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one repetition, short runs, no soak, no callgrind: under a minute"
    )
    # Three, the least, to keep the default run under five minutes on these machines (five
    # took seven). The figure that repeats from run to run is the callgrind count, not calls/s.
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per measured run")
    parser.add_argument("--soak-calls", type=int, default=200_000)
    parser.add_argument("--layer-calls", type=int, default=20_000, help="calls for the per-layer timing")
    parser.add_argument("--instruction-calls", type=int, default=2000, help="calls counted under callgrind (0: none)")
    parser.add_argument("--grpcio", default="", help="grpcio releases to run every variant on, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    if args.quick:
        args.repetitions, args.duration, args.soak_calls, args.layer_calls, args.instruction_calls = 1, 0.7, 0, 3000, 0
    for tool in ("h2load", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is missing (make bench installs nghttp2-client)")

    bench = new_bench("hello-bench-", args.duration)
    work = bench.work
    releases = [release.strip() for release in args.grpcio.split(",") if release.strip()]
    # The installed release needs no virtualenv of its own.
    runtimes = [None if release == grpc.__version__ else prepare(release, work) for release in releases]
    variants = [variant for runtime in runtimes or [None] for variant in _variants(runtime)]
    for runtime, release in zip(runtimes, releases, strict=True):
        if runtime is None:  # the installed release, under its release's name like the others
            for variant in variants:
                if variant.runtime is None:
                    variant.name, variant.label = f"{variant.name}@{release}", f"{variant.label}@{release}"
    started = time.monotonic()
    for repetition in range(args.repetitions):
        for pinned in (True, False):
            for variant in variants:
                if variant.kind == "workers" and pinned:
                    continue  # two workers pinned to one core measure nothing
                if not (pinned or variant.unpinned):
                    continue
                print(f"repetition {repetition + 1}, {variant.label}", flush=True)
                server = bench.start(variant, pinned)
                try:
                    loads = ["h2load 1x1", "h2load 4x32"] if variant.h2load else []
                    if variant.client and (not variant.plaintext or variant.kind == "bare"):
                        loads.append("client 4x32")
                    for load in loads:
                        bench.measure(server, load, pinned, repetition)
                finally:
                    server.stop()
    # Soak, per-layer timing and callgrind counts: on the installed release.
    ours = Variant("ours", "(c) ours", plaintext=False)
    soak = bench.soak(ours, args.soak_calls) if args.soak_calls else None
    from .layers import measure as measure_layers
    from .layers import report as layers_report

    print("ours, every layer's hooks timed", flush=True)
    layers = measure_layers(bench, args.layer_calls)
    from .instructions import VARIANTS as UNDER_CALLGRIND
    from .instructions import count as count_instructions
    from .instructions import guard
    from .instructions import report as instructions_report

    instructions = []
    for name in UNDER_CALLGRIND if args.instruction_calls else ():
        print(f"{name} under callgrind", flush=True)
        instructions.append(count_instructions(bench, UNDER_CALLGRIND[name], args.instruction_calls))
    grew = guard(bench, instructions, args.instruction_calls) if instructions else None
    header = {
        "grpcio": grpc.__version__,
        "nproc": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "repetitions": args.repetitions,
        "command": "make bench"
        + (" QUICK=1" if args.quick else "")
        + (" INSTRUCTIONS=0" if not (args.quick or args.instruction_calls) else "")
        + (f" GRPCIO={','.join(releases)}" if releases else ""),
        "seconds": round(time.monotonic() - started),
    }
    table = "\n\n".join(
        [
            report(bench, soak, header, releases),
            layers_report(layers),
            *([instructions_report(instructions)] if instructions else []),
            *([f"GUARD FAILED: {grew}"] if grew else []),
        ]
    )
    args.out.mkdir(exist_ok=True)
    (args.out / "bench.md").write_text(table + "\n")
    (args.out / "bench.json").write_text(
        json.dumps(
            {"header": header, "runs": bench.results, "soak": soak, "layers": layers, "instructions": instructions},
            indent=2,
        )
    )
    print("\n" + table)
    shutil.rmtree(work, ignore_errors=True)
    failed = layers["failed"] or any(entry["failed"] for entry in instructions) or grew is not None
    return 1 if failed or any(not r["valid"] for r in bench.results) else 0


if __name__ == "__main__":
    sys.exit(main())
