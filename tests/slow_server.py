"""hello-server's serve() with a servicer whose SayHello takes ``name`` seconds (e.g. "1.5"): shutdown tests.

Run as a script; everything but the servicer is what hello-server does.
"""

from __future__ import annotations

import asyncio
import os
import sys

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
import structlog

from service.config.settings import Settings, load
from service.generated.rpc_package import helloworld_pb2
from service.generated.rpc_package.helloworld_pb2_grpc import add_HelloWorldServiceServicer_to_server
from service.hello import HelloServicer
from service.observability.logs import configure_logging
from service.server.lifecycle import serve


class SlowHello(HelloServicer):
    async def SayHello(
        self, request: helloworld_pb2.HelloRequest, context: grpc.aio.ServicerContext
    ) -> helloworld_pb2.HelloReply:
        structlog.get_logger("test").info("slow call started", seconds=request.name)
        await asyncio.sleep(float(request.name))
        return await super().SayHello(request, context)


if __name__ == "__main__":
    settings = load(Settings)
    configure_logging(settings.log)
    sys.exit(
        asyncio.run(serve(settings, app=lambda server: add_HelloWorldServiceServicer_to_server(SlowHello(), server)))
    )
