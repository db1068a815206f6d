"""Baseline (a): a bare grpc.aio server with our Hello servicer; no TLS, no interceptors, no health.

It runs on the event loop ours runs on by default (uvloop, when installed), so the ratio
measures the stack.

Usage: python -m tests.bench.bare_server PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from service.generated.rpc_package import helloworld_pb2_grpc
from service.hello import HelloServicer


async def main(port: int) -> int:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(HelloServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()
    return 0


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        uvloop.run(main(int(sys.argv[1])))
