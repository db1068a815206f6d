"""The chain itself: what happens when a layer fails, on a real server over TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from service.generated.rpc_package import helloworld_pb2 as pb
from service.generated.rpc_package import helloworld_pb2_grpc
from service.hello import HelloServicer
from service.layers import Chain, RequestId, Wire
from service.layers.hooks import Call, Hooks, Method
from service.registry import Registry

from .conftest import Pki


class Recorder:
    """A layer that notes the codes its exit hook saw."""

    def __init__(self) -> None:
        self.codes: list[grpc.StatusCode] = []

    def hooks(self, _method: Method) -> Hooks:
        return Hooks(exit=lambda call: self.codes.append(call.code))


class Broken:
    """A layer with a bug in its enter or its exit hook."""

    def __init__(self, where: str) -> None:
        self.where = where

    def hooks(self, _method: Method) -> Hooks:
        def fail(_call: Call) -> None:
            raise KeyError("a bug in a layer")

        return Hooks(enter=fail) if self.where == "enter" else Hooks(exit=fail)


@asynccontextmanager
async def stub_for(pki: Pki, chain: Chain) -> AsyncIterator[helloworld_pb2_grpc.HelloWorldServiceStub]:
    server = grpc.aio.server()
    registry = Registry()
    helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(HelloServicer(), registry)
    chain.serve(server, registry)
    credentials = grpc.ssl_server_credentials([(pki.server_key.read_bytes(), pki.server.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        channel_credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{port}", channel_credentials) as channel:
            yield helloworld_pb2_grpc.HelloWorldServiceStub(channel)
    finally:
        await server.stop(None)


async def test_a_failing_exit_hook_changes_nothing_for_the_caller_or_the_other_layers(pki: Pki) -> None:
    outer, inner = Recorder(), Recorder()
    chain = Chain([RequestId(), outer, Broken("exit"), inner, Wire(4096)])
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with stub_for(pki, chain) as stub:
            reply = await stub.SayHello(pb.HelloRequest(name="Ann"), metadata=(("x-request-id", "r-exit"),))
    assert reply.message == "Hello, Ann!"
    assert outer.codes == inner.codes == [grpc.StatusCode.OK]
    [failure] = [e for e in logs if e["event"] == "layer failed at the end of a call"]
    assert (failure["log_level"], failure["request_id"], failure["code"]) == ("error", "r-exit", "OK")


async def test_a_failing_enter_hook_is_internal_and_the_layers_outside_it_see_that(pki: Pki) -> None:
    outer, inner = Recorder(), Recorder()
    chain = Chain([RequestId(), outer, Broken("enter"), inner, Wire(4096)])
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with stub_for(pki, chain) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.SayHello(pb.HelloRequest(name="Ann"), metadata=(("x-request-id", "r-enter"),))
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error (request id r-enter)"
    assert "bug" not in error.value.details()
    assert outer.codes == [grpc.StatusCode.INTERNAL]
    assert inner.codes == []  # never entered
    [failure] = [e for e in logs if e["event"] == "unhandled exception in handler"]
    assert failure["request_id"] == "r-enter"


def _pending_call_requests() -> list[str]:
    """The names of grpc.aio's tasks waiting for the next call (one per method registered by name, one generic)."""
    names = [getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()]
    return sorted(name.rsplit(".", 1)[-1] for name in names if "request" in name and "call" in name)


async def _pending_on_a_bare_server(register: Callable[[grpc.aio.Server], None]) -> list[str]:
    server = grpc.aio.server()
    register(server)
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return _pending_call_requests()
    finally:
        await server.stop(None)


async def test_methods_are_served_without_a_pending_request_per_method(pki: Pki) -> None:
    # grpc.aio 1.84 and later wait on every pending request for each call they accept, one per
    # method registered by name (grpc 1.78 registers none: its add_registered_method_handlers does
    # nothing). The chain registers no method by name, so it waits on what one generic handler
    # does, on every release, and the calls still work.
    async with stub_for(pki, Chain([RequestId()])) as stub:
        reply = await stub.SayHello(pb.HelloRequest(name="Ann"))
        pending = _pending_call_requests()
    generic_only = await _pending_on_a_bare_server(
        lambda server: server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("x.Y", {}),))
    )
    usual = await _pending_on_a_bare_server(
        lambda server: helloworld_pb2_grpc.add_HelloWorldServiceServicer_to_server(HelloServicer(), server)
    )
    assert reply.message == "Hello, Ann!"
    assert pending == generic_only
    # A server registered the usual way (the bare baseline's) has one more per method where grpc keeps them.
    assert len(usual) in (len(generic_only), len(generic_only) + 4)
