"""The seed article's HelloWorldService, grown up: TLS/mTLS, token auth, access log, health, reflection.

The public face: the names in ``__all__``, imported as ``from service import create_channel``. Every
other module is internal and may move. Each name is imported on first use (PEP 562): ``import service``
stays light for the CLI, and the workers' supervisor, which imports no grpc, can import the package.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("hello-grpc-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from .client import (
        check_health,
        create_channel,
        say_hello,
        say_hello_chat,
        say_hello_repeated,
        say_hello_to_many,
        service_config,
    )
    from .config.settings import ClientSettings, Settings
    from .errors import ConfigError, StartupError
    from .registry import DuplicateService, Registry
    from .server.app import App
    from .server.factory import BuiltServer, build_server
    from .server.lifecycle import Lifecycle, capture_signals, serve


__all__ = [
    "App",
    "BuiltServer",
    "ClientSettings",
    "ConfigError",
    "DuplicateService",
    "Lifecycle",
    "Registry",
    "Settings",
    "StartupError",
    "__version__",
    "build_server",
    "capture_signals",
    "check_health",
    "create_channel",
    "say_hello",
    "say_hello_chat",
    "say_hello_repeated",
    "say_hello_to_many",
    "serve",
    "service_config",
]

# The module that defines each name of __all__ (the imports above say the same to type checkers).
_MODULE = {
    "check_health": ".client",
    "create_channel": ".client",
    "say_hello": ".client",
    "say_hello_chat": ".client",
    "say_hello_repeated": ".client",
    "say_hello_to_many": ".client",
    "service_config": ".client",
    "ClientSettings": ".config.settings",
    "Settings": ".config.settings",
    "ConfigError": ".errors",
    "StartupError": ".errors",
    "DuplicateService": ".registry",
    "Registry": ".registry",
    "App": ".server.app",
    "build_server": ".server.factory",
    "BuiltServer": ".server.factory",
    "Lifecycle": ".server.lifecycle",
    "capture_signals": ".server.lifecycle",
    "serve": ".server.lifecycle",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use; the module stays in sys.modules, the name in this namespace."""
    try:
        module = _MODULE[name]
    except KeyError:
        raise AttributeError(f"module 'service' has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
