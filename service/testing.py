"""Test your service on the real stack, in-process: every layer, TLS with throwaway certificates, a token, the lifespan.

    from service.testing import serve

    async def test_get_order() -> None:
        async with serve("orders.app:app") as stack:
            stub = stack.stub(orders_pb2_grpc.OrdersServiceStub)
            reply = await stub.GetOrder(orders_pb2.GetOrderRequest(id="1"))

With pytest, the ``hello_stack`` fixture (service/pytest_plugin.py) serves the app your
``hello_app`` fixture names. Nothing here is a mock: the server is the one hello-server runs,
on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from .client import create_channel
from .config.settings import ClientSettings, Settings
from .registry import Registry
from .security.dev_pki import write_dev_pki
from .security.tokens import parse_tokens
from .server.app import App, load_app, started
from .server.factory import BuiltServer, build_server
from .server.lifecycle import start, stop

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Stub = TypeVar("Stub")
# What hello-server serves when HELLO_APP is not set, read from the setting (not repeated here).
DEFAULT_APP: str = Settings.model_fields["app"].default


@dataclass(frozen=True)
class Pki:
    """Development certificates and a token in ``dir``, as ``hello-certs`` writes them (never for production)."""

    dir: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        """A new CA, server and client certificates (for localhost and 127.0.0.1) and a token in ``directory``."""
        write_dev_pki(directory)
        return cls(directory)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def client(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client-key.pem"

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    @property
    def token(self) -> str:
        """The token the server accepts (its principal is "dev")."""
        return parse_tokens(self.token_file.read_text())[0][1]


def server_settings(pki: Pki, *, mtls: bool = False, **overrides: Any) -> Settings:
    """Settings for a test server on 127.0.0.1, free ports, TLS from ``pki``, its token; no shutdown grace.

    ``overrides`` are Settings fields; a dict for a group (``auth={"policy_file": ...}``) is merged
    into the group's values here, anything else replaces them.
    """
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "tls": {"cert_file": pki.server, "key_file": pki.server_key, "client_ca_file": pki.ca if mtls else None},
        "auth": {"tokens_file": pki.token_file},
        "health_port": 0,
        "metrics_port": 0,
        "shutdown_grace_seconds": 0,
    }
    for key, value in overrides.items():
        merge = isinstance(value, dict) and isinstance(values.get(key), dict)
        values[key] = {**values[key], **value} if merge else value
    return Settings(**values)


def client_settings(pki: Pki, port: int, **overrides: Any) -> ClientSettings:
    """Client settings for 127.0.0.1:``port``, trusting ``pki``'s CA and sending its token; ``overrides`` win."""
    values: dict[str, Any] = {"target": f"127.0.0.1:{port}", "ca_file": pki.ca, "token": pki.token, "timeout": 5}
    values.update(overrides)
    return ClientSettings(**values)


class Stack:
    """A started server: what it serves (``built``), its settings and certificates, and channels to it.

    ``channel`` is open while the stack serves (TLS, the token); new_channel makes others.
    """

    def __init__(self, built: BuiltServer, settings: Settings, pki: Pki, channel: grpc.aio.Channel) -> None:
        self.built, self.settings, self.pki, self.channel = built, settings, pki, channel
        self.port = built.port

    def client_settings(self, **overrides: Any) -> ClientSettings:
        """Client settings for this server (TLS, the token); ``overrides`` win (``token=None``: send none)."""
        return client_settings(self.pki, self.port, **overrides)

    def new_channel(self, **overrides: Any) -> AbstractAsyncContextManager[grpc.aio.Channel]:
        """``async with stack.new_channel(token=None) as channel``: a channel of its own, as create_channel makes it."""
        return create_channel(self.client_settings(**overrides))

    def stub(self, stub_class: Callable[[grpc.aio.Channel], Stub]) -> Stub:
        """``stack.stub(orders_pb2_grpc.OrdersServiceStub)``: a stub on ``channel``."""
        return stub_class(self.channel)


@asynccontextmanager
async def serving(
    app: App, settings: Settings, *, tracer: TracerProvider | None = None, name: str = DEFAULT_APP
) -> AsyncIterator[BuiltServer]:
    """``app`` served with exactly ``settings``, as hello-server serves it, until the block ends.

    The app registers its services and runs its start-up before the server starts, its shutdown
    after the server stopped. Start-up problems raise service.errors.StartupError (the line
    hello-server would print, naming ``name`` for the app's own).
    """
    async with started(app, Registry(settings), name) as registry:
        built = await build_server(settings, registry, tracer=tracer)
        await start(built)
        try:
            yield built
        finally:
            await stop(built, None)


@asynccontextmanager
async def serve(
    app: App | str = DEFAULT_APP,
    *,
    pki: Pki | None = None,
    mtls: bool = False,
    tracer: TracerProvider | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """Serve ``app`` (a function taking the server, or "package.module:attribute") until the block ends.

    ``settings`` are Settings fields over server_settings' (``rate_limit={"per_second": 1}``,
    ``auth={"policy_file": path}``); ``pki`` defaults to throwaway certificates made now; ``mtls``
    asks callers for client certificates too. The lifespan runs as under serving().
    """
    async with contextlib.AsyncExitStack() as exits:
        if pki is None:
            pki = Pki.create(Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="hello-testing-"))))
        configured = server_settings(pki, mtls=mtls, **settings)
        name = app if isinstance(app, str) else getattr(app, "__qualname__", repr(app))
        loaded = load_app(app) if isinstance(app, str) else app
        built = await exits.enter_async_context(serving(loaded, configured, tracer=tracer, name=name))
        channel = await exits.enter_async_context(create_channel(client_settings(pki, built.port)))
        yield Stack(built, configured, pki, channel)
