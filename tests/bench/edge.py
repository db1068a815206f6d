"""What the edge adds per call: h2load at the server alone and through Envoy (gRPC-Web, JSON), interleaved.

`hello-edge run` with the production settings of the server (TLS, a token, the JSON access log to a
file) and Envoy in front (one worker thread, plain HTTP/2 to it, HTTP/2 over TLS behind it). Loads:
h2load at 1 call in flight (latency) and at 4 connections x 32 streams (throughput), each variant in
turn, repeated; medians reported. The server's own count of OK SayHello calls must equal the calls
h2load completed (h2load counts a gRPC error in a 200 as a success; the server does not).

Usage: python -m tests.bench.edge [--repetitions 3] [--calls 20000]   (make bench-edge; about two minutes)
Writes bench-results/edge.md and edge.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from service.generated.rpc_package import helloworld_pb2
from service.security.dev_pki import write_dev_pki
from service.security.tokens import parse_tokens

from .bench import cpu_seconds, free_port, process_tree

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
METHOD = "/rpc_package.HelloWorldService/SayHello"
VARIANTS = {
    "server alone (gRPC, TLS)": "application/grpc",
    "edge, gRPC-Web": "application/grpc-web+proto",
    "edge, JSON": "application/json",
}
LOADS = {"1x1": (1, 1), "4x32": (4, 32)}
STARTUP_SECONDS = 60


def _start(work: Path) -> tuple[subprocess.Popen[str], dict[str, int]]:
    ports = {"server": free_port(), "edge": free_port(), "metrics": free_port()}
    pki = work / "pki"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELLO_")}
    env.update(
        HELLO_HOST="127.0.0.1",
        HELLO_PORT=str(ports["server"]),
        HELLO_HEALTH_PORT="off",
        HELLO_METRICS_PORT=str(ports["metrics"]),
        HELLO_TLS__CERT_FILE=str(pki / "server.pem"),
        HELLO_TLS__KEY_FILE=str(pki / "server-key.pem"),
        HELLO_AUTH__TOKENS_FILE=str(pki / "token"),
        HELLO_LOG__FORMAT="json",
        HELLO_EDGE__HOST="127.0.0.1",
        HELLO_EDGE__PORT=str(ports["edge"]),
        HELLO_EDGE__UPSTREAM_CA_FILE=str(pki / "ca.pem"),
        HELLO_EDGE__HEALTH_PORT="off",
        HELLO_EDGE__ADMIN_PORT="0",
        HELLO_EDGE__CONCURRENCY="1",
    )
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "hello-edge"), "run"], env=env, stdout=log, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"edge serving"' in line:
            return proc, ports
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"bench-edge: the edge did not start: {proc.stderr.read()}")


def _children(pid: int) -> dict[str, int]:
    """The pids of hello-edge's two processes, by name."""
    found = {}
    for child in process_tree(pid)[1:]:
        command = Path(f"/proc/{child}/cmdline").read_bytes()
        found["envoy" if b"envoy/_bin/envoy" in command else "server"] = child
    return found


def _ok_calls(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = r'grpc_server_handled_total\{[^}]*grpc_code="OK"[^}]*grpc_method="SayHello"[^}]*\} ([0-9.e+]+)'
    return sum(float(value) for value in re.findall(pattern, text))


def _h2load(
    url: str, content_type: str, body: Path, token: str, log: Path, connections: int, streams: int, calls: int
) -> dict[str, float]:
    log.unlink(missing_ok=True)  # h2load appends
    command = ["h2load", "-n", str(calls), "-c", str(connections), "-m", str(streams), "-d", str(body)]
    command += ["-H", f"content-type: {content_type}", "-H", f"authorization: Bearer {token}", "--log-file", str(log)]
    if content_type == "application/grpc":
        command += ["-H", "te: trailers"]
    output = subprocess.run([*command, url], capture_output=True, text=True, timeout=300, check=False).stdout
    finished = re.search(r"finished in ([0-9.]+)(ms|s),", output)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
    if not finished or not done:
        raise SystemExit(f"bench-edge: h2load said:\n{output}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line)
    return {
        "calls": int(done.group(2)),
        "calls_per_s": int(done.group(2)) / seconds,
        "p50_us": latencies[len(latencies) // 2],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per 4x32 run (1x1 runs make a tenth)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    write_dev_pki(work / "pki")
    token = parse_tokens((work / "pki" / "token").read_text())[0][1]
    message = helloworld_pb2.HelloRequest(name="bench").SerializeToString()
    (work / "grpc.bin").write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    (work / "json.bin").write_bytes(b'{"name": "bench"}')
    proc, ports = _start(work)
    results: list[dict[str, Any]] = []
    try:
        before = _ok_calls(ports["metrics"])
        pids = _children(proc.pid)
        for repetition in range(args.repetitions):
            for variant, content_type in VARIANTS.items():
                url = (
                    f"https://127.0.0.1:{ports['server']}{METHOD}"
                    if content_type == "application/grpc"
                    else f"http://127.0.0.1:{ports['edge']}{METHOD}"
                )
                body = work / ("json.bin" if content_type == "application/json" else "grpc.bin")
                for load, (connections, streams) in LOADS.items():
                    calls = args.calls if connections > 1 else args.calls // 10
                    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    run = _h2load(url, content_type, body, token, work / "h2load.log", connections, streams, calls)
                    for name, pid in pids.items():
                        run[f"{name}_cpu_us"] = (cpu_seconds(pid) - cpu[name]) / run["calls"] * 1e6
                    results.append({"variant": variant, "load": load, "repetition": repetition, **run})
        ok = _ok_calls(ports["metrics"]) - before
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    completed = sum(r["calls"] for r in results)
    if ok != completed:
        raise SystemExit(f"bench-edge: h2load completed {completed} calls, the server counted {ok} OK: invalid run")

    def median(variant: str, load: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["variant"] == variant and r["load"] == load)

    alone = "server alone (gRPC, TLS)"
    lines = [
        f"bench-edge, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"medians of {args.repetitions}, every call counted OK by the server ({int(ok)})",
        "",
        "| | calls/s (4 x 32) | vs alone | p50 at 1 in flight | added | CPU per call: server | Envoy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        rate, p50 = median(variant, "4x32", "calls_per_s"), median(variant, "1x1", "p50_us")
        lines.append(
            f"| {variant} | {rate:,.0f} | {rate / median(alone, '4x32', 'calls_per_s'):.2f} | {p50:,.0f} µs | "
            f"{p50 - median(alone, '1x1', 'p50_us'):+,.0f} µs | {median(variant, '4x32', 'server_cpu_us'):,.0f} µs | "
            f"{median(variant, '4x32', 'envoy_cpu_us'):,.0f} µs |"
        )
    report = "\n".join(lines)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "edge.md").write_text(report + "\n")
    (out / "edge.json").write_text(json.dumps(results, indent=2))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
