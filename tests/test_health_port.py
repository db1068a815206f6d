"""The plaintext health port for the kubelet's grpc probes: health only, same statuses as the TLS port."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client import check_health, create_channel, say_hello
from service.config.settings import ClientSettings
from service.errors import StartupError
from service.generated.rpc_package import helloworld_pb2 as pb
from service.generated.rpc_package import helloworld_pb2_grpc
from service.server.factory import BuiltServer

from .conftest import Pki, build_hello, client_settings, running, server_settings
from .processes import BIN, ServerProcess, clean_env, pki_env, run


def client_settings_plain(port: int | None) -> ClientSettings:
    assert port
    return ClientSettings(target=f"127.0.0.1:{port}", plaintext=True, timeout=5)


@pytest.mark.parametrize("service", ["", "rpc_package.HelloWorldService"])
async def test_health_port_serves_health_in_plaintext(server: BuiltServer, service: str) -> None:
    async with create_channel(client_settings_plain(server.health_port)) as channel:
        assert await check_health(channel, service) == "SERVING"


async def test_hello_and_reflection_are_not_on_the_health_port(server: BuiltServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await helloworld_pb2_grpc.HelloWorldServiceStub(channel).SayHello(pb.HelloRequest(name="x"), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in call(iter([b""]), timeout=5):
                pass
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_both_ports_flip_together_and_watchers_see_it(pki: Pki) -> None:
    async with running(server_settings(pki)) as built:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.health_port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            await built.health.enter_graceful_shutdown()
            second = await watch.read()
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
        async with create_channel(client_settings(pki, built.port)) as channel:
            assert await check_health(channel) == "NOT_SERVING"
            # Draining: health says go away, but calls are still served.
            assert await say_hello(channel, "draining") == "Hello, draining!"


async def test_health_port_off(pki: Pki) -> None:
    built = await build_hello(server_settings(pki, health_port="off"))
    assert built.health_server is None
    assert built.health_port is None
    await built.server.stop(None)


async def test_health_port_in_use(server: BuiltServer, pki: Pki) -> None:
    with pytest.raises(StartupError, match=f"HELLO_HEALTH_PORT: cannot listen on 127.0.0.1:{server.health_port}"):
        await build_hello(server_settings(pki, health_port=server.health_port))


async def test_cli_health_on_both_ports_during_drain(pki: Pki) -> None:
    server = ServerProcess([str(BIN / "hello-server")], pki_env(pki, HELLO_DRAIN_SECONDS=30))
    try:
        port = await asyncio.to_thread(server.serving_port)
        health_port = int(server.events[-1]["health_port"])
        plain = [str(BIN / "hello-client"), "--plaintext", "--target", f"127.0.0.1:{health_port}", "health"]
        tls = [str(BIN / "hello-client"), "--target", f"localhost:{port}", "--ca", str(pki.ca), "health"]
        for command in (plain, tls):
            result = await asyncio.to_thread(run, command, clean_env(), 30)
            assert (result.returncode, result.stdout) == (0, "SERVING\n")
        server.signal(signal.SIGTERM)
        await server.await_event("draining")
        for command in (plain, tls):
            result = await asyncio.to_thread(run, command, clean_env(), 30)
            assert (result.returncode, result.stdout) == (1, "NOT_SERVING\n")
    finally:
        server.stop()
