"""A Hello servicer that records which handlers were entered, and streams with context.write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from service.generated.rpc_package import helloworld_pb2 as pb
from service.hello import HelloServicer


class SpyServicer(HelloServicer):
    """HelloServicer that notes each handler it enters; SayHelloRepeated writes with context.write."""

    def __init__(self) -> None:
        super().__init__()
        self.entered: list[str] = []

    async def SayHello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        self.entered.append("SayHello")
        return await super().SayHello(request, context)

    async def SayHelloRepeated(self, request: Any, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        # The reader/writer style: no yield, each response written through the context.
        self.entered.append("SayHelloRepeated")
        for index in range(1, request.count + 1):
            await context.write(pb.SayHelloRepeatedResponse(message=f"Hello, {request.name}!", index=index))

    async def SayHelloToMany(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        self.entered.append("SayHelloToMany")
        return await super().SayHelloToMany(request_iterator, context)

    async def SayHelloChat(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        self.entered.append("SayHelloChat")
        async for reply in super().SayHelloChat(request_iterator, context):
            yield reply


class FailingServicer(HelloServicer):
    """SayHello raises an unexpected exception carrying a would-be secret."""

    async def SayHello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        if request.name == "boom":
            raise RuntimeError("database password is hunter2")
        return await super().SayHello(request, context)
