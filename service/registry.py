"""The registry: the one place that knows what the server serves, filled by the app's own registration calls.

grpc's generated ``add_<Service>Servicer_to_server(servicer, server)`` calls ``add_generic_rpc_handlers``
and ``add_registered_method_handlers`` on whatever it is given; so does a hand-written registration.
The registry accepts exactly those calls and remembers what they named, so that health, reflection,
the policy and the metrics are derived from it instead of from lists typed beside it (as grpc-go's
reflection asks the server what is registered). An app adds its own layers here too (add_layer).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import descriptor_pool

if TYPE_CHECKING:
    from .config.settings import Settings
    from .layers.hooks import Layer


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
        # The app's own layers, outermost first (add_layer).
        self.layers: list[Layer] = []

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """What grpc's generated code calls for a service's methods (grpcio >= 1.62)."""
        self._note(service, self._by_method, sys._getframe(1).f_globals.get("__name__"))
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """What generated code (every grpcio release) and hand-written registrations call."""
        caller = sys._getframe(1).f_globals.get("__name__")
        for handler in handlers:
            if isinstance(handler, grpc.ServiceRpcHandler):
                self._note(handler.service_name(), self._by_generic, caller)
            self.generic.append(handler)

    def add_layer(self, layer: Layer) -> None:
        """Put ``layer`` about every call of the main port, after auth (and the rate limit), before the wire layer.

        Layers added earlier are outer. See service.layers.hooks: Layer, Hooks, Call, Refusal.
        """
        self.layers.append(layer)

    def _note(self, service: str, seen: set[str], registering_module: str | None) -> None:
        if service in seen:
            raise DuplicateService(service)
        seen.add(service)
        self._services[service] = None
        _load_descriptor(service, registering_module)

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


def _load_descriptor(service: str, registering_module: str | None) -> None:
    """Import the ``_pb2`` module beside the ``_pb2_grpc`` one that registered ``service``, unless the pool knows it.

    Generated ``add_<Service>Servicer_to_server`` functions register from their ``x_pb2_grpc``
    module, whose ``x_pb2`` sibling holds the service's descriptor. A proto file of services only
    (its methods take and return imported messages) gives an ``x_pb2_grpc`` that never imports
    ``x_pb2``: without this, reflection, the policy and the metrics would not know the service.
    """
    if registering_module is None or not registering_module.endswith("_pb2_grpc"):
        return
    try:
        descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        importlib.import_module(registering_module.removesuffix("_grpc"))
