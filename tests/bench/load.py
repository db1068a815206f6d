"""Our async client as a load generator: C channels x M concurrent calls for a bounded time and count.

Usage: python -m tests.bench.load TARGET SECONDS CONNECTIONS STREAMS MAX_CALLS [--ca F --token-file F
       --cert F --key F | --plaintext]
Prints one JSON line: calls, ok, failed, seconds, p50_us, p99_us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import AsyncExitStack
from pathlib import Path

import grpc

from service.client import create_channel, say_hello
from service.config.settings import ClientSettings


async def run(args: argparse.Namespace) -> dict[str, float]:
    settings = ClientSettings(
        target=args.target,
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        token_file=args.token_file,
        plaintext=args.plaintext,
        timeout=10,
    )
    latencies: list[float] = []
    failed, budget = 0, args.max_calls
    deadline = 0.0  # set once the channels are warm, just before the workers start

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal failed, budget
        while budget > 0 and time.perf_counter() < deadline:
            budget -= 1
            started = time.perf_counter()
            try:
                await say_hello(channel, "bench")
            except grpc.aio.AioRpcError:
                failed += 1
                continue
            latencies.append(time.perf_counter() - started)

    async with AsyncExitStack() as stack:
        channels = [await stack.enter_async_context(create_channel(settings)) for _ in range(args.connections)]
        for channel in channels:
            await say_hello(channel, "warm-up")
        began = time.perf_counter()
        deadline = began + args.seconds
        await asyncio.gather(*(worker(ch) for ch in channels for _ in range(args.streams)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0.0

    return {
        "warm_up": len(channels),
        "calls": len(latencies) + failed,
        "ok": len(latencies),
        "failed": failed,
        "seconds": elapsed,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("seconds", type=float)
    parser.add_argument("connections", type=int)
    parser.add_argument("streams", type=int)
    parser.add_argument("max_calls", type=int)
    parser.add_argument("--ca", type=Path)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--plaintext", action="store_true")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
