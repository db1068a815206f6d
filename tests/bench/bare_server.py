"""Baselines: a bare grpc.aio server with our Hello servicer; no interceptors, no health, no layers.

Variant (a) is the server as a user writes it: asyncio's own loop, no TLS. Variant (a') runs on
uvloop, as ours does by default, and over TLS (--tls CERT KEY): ours against it is what our
layers cost, and nothing else.

Usage: python -m tests.bench.bare_server PORT [--loop asyncio|uvloop] [--tls CERT KEY]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc

from service.generated.rpc_package import helloworld_pb2_grpc
from service.hello import HelloServicer


async def main(port: int, tls: list[str]) -> int:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(HelloServicer(), server)
    if tls:
        cert, key = (Path(name).read_bytes() for name in tls)
        server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--tls", nargs=2, default=[], metavar=("CERT", "KEY"))
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args.port, args.tls))
    else:
        asyncio.run(main(args.port, args.tls))
