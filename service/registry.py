"""The registry: the one place that knows what the server serves, filled by the app's own registration calls.

grpc's generated ``add_<Service>Servicer_to_server(servicer, server)`` calls ``add_generic_rpc_handlers``
and ``add_registered_method_handlers`` on whatever it is given; so does a hand-written registration.
The registry accepts exactly those calls and remembers what they named, so that health, reflection,
the policy and the metrics are derived from it instead of from lists typed beside it (as grpc-go's
reflection asks the server what is registered).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import descriptor_pool

if TYPE_CHECKING:
    from .config.settings import Settings


class DuplicateService(ValueError):
    """A service was registered twice: the second registration would silently shadow or be shadowed."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} is registered twice")
        self.service = service


class Registry:
    """A registration target for grpc's generated code: every service registered, and its handlers.

    ``settings`` (the server's) and ``env_file`` (the file they were read from, if any) are there
    for an app to read: its own pydantic-settings model can read the same env file.
    """

    def __init__(self, settings: Settings | None = None, env_file: Path | None = None) -> None:
        self.settings = settings
        self.env_file = env_file
        # "/pkg.Service/Method" -> the handler, as add_registered_method_handlers gave it.
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        # Asked, in order, for any method not in ``handlers``.
        self.generic: list[grpc.GenericRpcHandler] = []
        self._services: dict[str, None] = {}  # insertion-ordered set
        # Generated code registers each service both ways; each way may name a service only once.
        self._by_method: set[str] = set()
        self._by_generic: set[str] = set()

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """What grpc's generated code calls for a service's methods (grpcio >= 1.62)."""
        self._note(service, self._by_method)
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """What generated code (every grpcio release) and hand-written registrations call."""
        for handler in handlers:
            if isinstance(handler, grpc.ServiceRpcHandler):
                self._note(handler.service_name(), self._by_generic)
            self.generic.append(handler)

    def _note(self, service: str, seen: set[str]) -> None:
        if service in seen:
            raise DuplicateService(service)
        seen.add(service)
        self._services[service] = None

    @property
    def as_server(self) -> grpc.aio.Server:
        """This registry, typed as what generated ``add_<Service>Servicer_to_server`` functions are typed to take.

        They call only the two registration methods above, which is all the registry has; their
        stubs name grpc's servers. ``add_FooServicer_to_server(servicer, registry.as_server)``.
        """
        return cast("grpc.aio.Server", self)

    @property
    def services(self) -> tuple[str, ...]:
        """Every service registered, by full name, in the order of registration."""
        return tuple(self._services)

    def methods(self) -> list[str]:
        """Every method ("pkg.Service/Method") of every registered service.

        From protobuf's default pool, where the generated ``_pb2`` module put the service's descriptor;
        a service without one (a hand-written generic handler) has the methods it registered by name.
        """
        pool = descriptor_pool.Default()
        methods: list[str] = []
        for service in self.services:
            try:
                descriptor = pool.FindServiceByName(service)
            except KeyError:
                methods += [name[1:] for name in self.handlers if name.startswith(f"/{service}/")]
            else:
                methods += [f"{service}/{method.name}" for method in descriptor.methods]
        return methods
