"""The HelloWorldService servicer: the seed article's greeting, served asynchronously."""

from __future__ import annotations

import grpc

from .generated.rpc_package import helloworld_pb2, helloworld_pb2_grpc

SERVICE_NAME: str = helloworld_pb2.DESCRIPTOR.services_by_name["HelloWorldService"].full_name


class HelloServicer(helloworld_pb2_grpc.HelloWorldServiceServicer):
    """Answers SayHello with ``Hello, <name>!``, as the seed's server does."""

    async def SayHello(
        self, request: helloworld_pb2.HelloRequest, context: grpc.aio.ServicerContext
    ) -> helloworld_pb2.HelloReply:
        return helloworld_pb2.HelloReply(message=f"Hello, {request.name}!")
