"""Hand-written generic handlers on the stack: a catch-all serving any name a caller sends gets the layers,
but not series, span names or cache entries of its own per invented name; aborts keep our request id."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from grpc_status import rpc_status

from service.client import create_channel, say_hello
from service.hello import register as register_hello
from service.layers.chain import MAX_CACHED
from service.registry import Registry
from service.server.factory import BuiltServer

from .conftest import Pki, client_settings, running, secret, server_settings

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


class CatchAll(grpc.GenericRpcHandler):
    """Serves any method a caller names, with a new handler object each call, bytes in and out."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        method = str(details.method)

        async def echo(request: bytes, context: Any) -> bytes:
            if method.endswith("/AbortWithStatus"):
                await context.abort_with_status(
                    rpc_status.to_status(status_pb2.Status(code=FAILED_PRECONDITION.value[0], message="no"))
                )
            if method.endswith("/AbortEmpty"):
                await context.abort(FAILED_PRECONDITION, "no", [])
            return request

        return grpc.unary_unary_rpc_method_handler(echo)


def _app(registry: Registry) -> None:
    register_hello(registry)
    registry.add_generic_rpc_handlers((CatchAll(),))


REPORTING_TOKEN = secret("reporting-token-0123456789abcdef")


@pytest.fixture
async def served(pki: Pki, tmp_path: Path) -> AsyncIterator[BuiltServer]:
    tokens, policy = tmp_path / "tokens", tmp_path / "policy.toml"
    tokens.write_text(f"dev:{pki.token}\nreporting:{REPORTING_TOKEN}\n")
    policy.write_text('[allow]\ndev = ["*"]\nreporting = ["rpc_package.HelloWorldService/*"]\n')
    settings = server_settings(pki, auth={"tokens_file": tokens, "policy_file": policy})
    async with running(settings, app=_app) as built:
        yield built


async def _call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryCall[Any, Any]:
    call = channel.unary_unary(method)(b"hi", timeout=5)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return call


async def test_invented_names_share_one_series_and_do_not_grow_the_cache(served: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, served.port)) as channel:
        for index in range(MAX_CACHED + 50):
            call = await _call(channel, f"/invented.S{index}/M")
            assert await call.code() is grpc.StatusCode.OK
    samples = [s for metric in served.metrics.registry.collect() for s in metric.samples]
    methods = {s.labels.get("grpc_method") for s in samples if s.name == "grpc_server_handled_total"}
    assert not any(str(m).startswith("M") for m in methods), methods
    unknown = {"grpc_type": "unary", "grpc_service": "unknown", "grpc_method": "unknown", "grpc_code": "OK"}
    assert served.metrics.registry.get_sample_value("grpc_server_handled_total", unknown) == MAX_CACHED + 50
    assert len(served.chain._wrapped) <= MAX_CACHED


async def test_an_undeclared_name_is_authorized_only_by_a_grant_of_everything(served: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, served.port, token=REPORTING_TOKEN)) as channel:
        assert await say_hello(channel, "Ann") == "Hello, Ann!"
        call = await _call(channel, "/invented.S/M")
        assert await call.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("method", ["/probe.P/AbortWithStatus", "/probe.P/AbortEmpty"])
async def test_aborts_keep_one_request_id(served: BuiltServer, pki: Pki, method: str) -> None:
    async with create_channel(client_settings(pki, served.port)) as channel:
        call = await _call(channel, method)
        trailing = list(await call.trailing_metadata() or ())
    assert await call.code() is FAILED_PRECONDITION
    assert [key for key, _value in trailing].count("x-request-id") == 1, trailing


async def test_an_invalid_argument_reply_carries_one_request_id(server: BuiltServer, pki: Pki) -> None:
    async with create_channel(client_settings(pki, server.port)) as channel:
        call = channel.unary_unary("/rpc_package.HelloWorldService/SayHello")(b"", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    trailing = list(refused.value.trailing_metadata() or ())
    assert [key for key, _value in trailing].count("x-request-id") == 1, trailing
