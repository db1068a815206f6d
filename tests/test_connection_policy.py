"""Connection policy: connections are recycled at their maximum age without failing a call."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from service.client import create_channel, say_hello

from .conftest import Pki, client_settings, running, server_settings

CALLS = 20


async def test_max_connection_age_recycles_connections_without_failed_calls(pki: Pki) -> None:
    policy = {"max_connection_age_seconds": 0.2, "max_connection_age_grace_seconds": 0.2}
    with capture_logs() as logs:
        async with running(server_settings(pki, grpc=policy)) as built:
            async with create_channel(client_settings(pki, built.port)) as channel:
                for i in range(CALLS):
                    assert await say_hello(channel, f"n{i}") == f"Hello, n{i}!"
                    await asyncio.sleep(0.05)  # a client's cadence: one call every 50 ms, for about a second
    peers = {entry["peer"] for entry in logs if entry["event"] == "rpc"}
    # Each new connection comes from a new client port: the server closed old ones as they aged.
    assert len(peers) >= 3, peers
