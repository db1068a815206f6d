"""The app: what the server serves, named by an import string (HELLO_APP) and registered by one function.

An app is any callable that takes the registration target (a Registry) and calls what grpc's
generated code calls on a server, e.g. ``orders_pb2_grpc.add_OrdersServicer_to_server(Orders(), server)``.
It may return nothing, an awaitable (async start-up work), or an async context manager: its
start-up runs before the server reports SERVING, its shutdown after the drain and the grace period
(Starlette's lifespan)::

    @contextlib.asynccontextmanager
    async def app(server):
        pool = await open_pool()
        orders_pb2_grpc.add_OrdersServicer_to_server(Orders(pool), server)
        yield
        await pool.close()
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog

from ..config.settings import env_name
from ..errors import ConfigError, StartupError
from ..registry import DuplicateService, Registry

App = Callable[[Registry], Any]
APP = env_name("app")

log = structlog.get_logger("hello.app")


def load_app(reference: str) -> App:
    """The callable ``reference`` ("package.module:attribute") names; each way it can be wrong is one ConfigError.

    As uvicorn's ``import_from_string``: the module comes from sys.path, the attribute may be dotted.
    """
    module_name, _, attributes = reference.partition(":")
    if not module_name or not attributes:
        raise ConfigError(APP, f'expected "package.module:attribute", got {reference!r}')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise ConfigError(APP, f"no module named {module_name!r} on the Python path (PYTHONPATH)") from None
        raise ConfigError(APP, f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(APP, f"importing {module_name!r} failed: {_said(exc)}") from None
    app: Any = module
    for attribute in attributes.split("."):
        try:
            app = getattr(app, attribute)
        except AttributeError:
            raise ConfigError(APP, f"module {module_name!r} has no attribute {attributes!r}") from None
    if not callable(app):
        raise ConfigError(APP, f"{reference} is a {type(app).__name__}, not a function taking the server")
    return app  # type: ignore[no-any-return]


# user:password@ in a URL (a database driver's message often holds its connection string).
_CREDENTIALS_IN_URL = re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]*@")


def _said(exc: BaseException) -> str:
    """An exception as one line: its type and its first line, never a traceback, and no password of a URL."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    first = _CREDENTIALS_IN_URL.sub("***@", first)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@asynccontextmanager
async def started(app: App, registry: Registry, name: str) -> AsyncIterator[Registry]:
    """Let ``app`` register its services and run its start-up; on leaving, its shutdown.

    Anything the app raises while starting is a ConfigError naming HELLO_APP (its message, no traceback).
    """
    lifespan: AbstractAsyncContextManager[Any] | None = None
    try:
        result = app(registry)
        if hasattr(result, "__aenter__") and hasattr(result, "__aexit__"):
            lifespan = result
            await result.__aenter__()
        elif inspect.isawaitable(result):
            await result
    except DuplicateService as exc:
        raise ConfigError(APP, f"{name}: {exc}") from None
    except StartupError:
        raise
    except Exception as exc:
        raise ConfigError(APP, f"{name} failed while starting: {_said(exc)}") from None
    try:
        if not registry.services:
            raise ConfigError(APP, f"{name} registered no service (call add_<Service>Servicer_to_server in it)")
        yield registry
    finally:
        if lifespan is not None:
            try:
                await lifespan.__aexit__(None, None, None)
            except Exception:
                log.exception("app shutdown failed", app=name)
