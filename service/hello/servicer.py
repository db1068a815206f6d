"""The HelloWorldService servicer: the seed article's greeting, plus streaming variants, with input rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from ..generated.rpc_package import helloworld_pb2 as pb
from ..generated.rpc_package import helloworld_pb2_grpc
from ..status_details import abort, bad_request
from .validation import DEFAULT_MAX_NAME_LENGTH, name_rule

if TYPE_CHECKING:
    from ..registry import Registry

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["HelloWorldService"].full_name
MAX_REPEAT = 100
MAX_NAMES_PER_STREAM = 100


def greeting(names: list[str]) -> str:
    """'Hello, Ann!', 'Hello, Ann and Bob!', 'Hello, Ann, Bob and Cy!'."""
    joined = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"Hello, {joined}!"


async def invalid(context: grpc.aio.ServicerContext[Any, Any], field: str, rule: str, *, alone: bool = False) -> None:
    """INVALID_ARGUMENT and a BadRequest naming ``field`` and ``rule``; the text is "field: rule" (``alone``: rule)."""
    await abort(
        context, grpc.StatusCode.INVALID_ARGUMENT, rule if alone else f"{field}: {rule}", bad_request(field, rule)
    )


class HelloServicer(helloworld_pb2_grpc.HelloWorldServiceServicer):
    """Greets valid names; anything else is INVALID_ARGUMENT with a message naming the field and the rule."""

    def __init__(self, max_name_length: int = DEFAULT_MAX_NAME_LENGTH) -> None:
        self._max_name_length = max_name_length

    async def _check_name(self, name: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        rule = name_rule(name, self._max_name_length)
        if rule is not None:
            await invalid(context, "name", rule)

    async def SayHello(
        self, request: pb.HelloRequest, context: grpc.aio.ServicerContext[pb.HelloRequest, pb.HelloReply]
    ) -> pb.HelloReply:
        await self._check_name(request.name, context)
        return pb.HelloReply(message=greeting([request.name]))

    async def SayHelloRepeated(
        self,
        request: pb.SayHelloRepeatedRequest,
        context: grpc.aio.ServicerContext[pb.SayHelloRepeatedRequest, pb.SayHelloRepeatedResponse],
    ) -> AsyncIterator[pb.SayHelloRepeatedResponse]:
        await self._check_name(request.name, context)
        if not 1 <= request.count <= MAX_REPEAT:
            await invalid(context, "count", f"must be 1 to {MAX_REPEAT}")
        message = greeting([request.name])
        for index in range(1, request.count + 1):
            yield pb.SayHelloRepeatedResponse(message=message, index=index)

    async def SayHelloToMany(
        self,
        request_iterator: AsyncIterator[pb.SayHelloToManyRequest],
        context: grpc.aio.ServicerContext[pb.SayHelloToManyRequest, pb.SayHelloToManyResponse],
    ) -> pb.SayHelloToManyResponse:
        names: list[str] = []
        async for request in request_iterator:
            await self._check_name(request.name, context)
            if len(names) == MAX_NAMES_PER_STREAM:
                await invalid(context, "name", f"at most {MAX_NAMES_PER_STREAM} names per stream", alone=True)
            names.append(request.name)
        if not names:
            await invalid(context, "name", "send at least one name", alone=True)
        return pb.SayHelloToManyResponse(message=greeting(names), count=len(names))

    async def SayHelloChat(
        self,
        request_iterator: AsyncIterator[pb.SayHelloChatRequest],
        context: grpc.aio.ServicerContext[pb.SayHelloChatRequest, pb.SayHelloChatResponse],
    ) -> AsyncIterator[pb.SayHelloChatResponse]:
        async for request in request_iterator:
            await self._check_name(request.name, context)
            yield pb.SayHelloChatResponse(message=greeting([request.name]))


def register(server: Registry) -> None:
    """The default app (HELLO_APP=service.hello:register): the HelloWorld service, with HELLO_MAX_NAME_LENGTH."""
    max_name_length = server.settings.max_name_length if server.settings is not None else DEFAULT_MAX_NAME_LENGTH
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(HelloServicer(max_name_length), server.as_server)
