"""Baseline (a): a bare grpc.aio server with our Hello servicer; no TLS, no interceptors, no health.

It runs on the event loop ours runs on by default (uvloop, when installed), so the ratio
measures the stack.

With --tls CERT KEY it serves over TLS (variant a' of make bench): the bare cost of TLS.

Usage: python -m tests.bench.bare_server PORT [--tls CERT KEY]
"""

from __future__ import annotations

import asyncio
import sys
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
    port, tls = int(sys.argv[1]), sys.argv[3:5] if sys.argv[2:3] == ["--tls"] else []
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(port, tls))
    else:
        uvloop.run(main(port, tls))
