"""The standard health service, bounded: no name longer than any served, no Watch held on a name never served."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2

from ..status_details import abort, bad_request

Context = grpc.aio.ServicerContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]

SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
NOT_FOUND = "no service of that name here: ask for the whole server (an empty name) or a service it serves"


class Health(health.aio.HealthServicer):
    """grpc's aio health servicer, refusing the calls that could only hold memory.

    grpc's servicer keeps, for every name being watched, an asyncio.Condition and a count (freed
    with the name's last Watch) and answers a name it does not know with SERVICE_UNKNOWN, keeping
    the stream open until the name is set (the health protocol's rule). This server sets its names
    before it serves (the whole server and each service registered) and never later, so such a
    stream would wait for ever: it gets SERVICE_UNKNOWN, as the protocol says, then NOT_FOUND. A
    name longer than ``max_name_length`` cannot be served at all (the server refuses to start with
    one): INVALID_ARGUMENT, for Check too, before anything looks it up.
    """

    def __init__(self, max_name_length: int) -> None:
        super().__init__()
        self._max_name_length = max_name_length
        self._known = {health.OVERALL_HEALTH}

    async def set(self, service: str, status: int) -> None:
        """Set ``service``'s status (and so make it a name that may be watched)."""
        self._known.add(service)
        await super().set(service, status)

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Context) -> health_pb2.HealthCheckResponse:
        await self._refuse_unknown(request.service, context)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Context) -> None:
        service = request.service
        if len(service) <= self._max_name_length and service not in self._known:
            await context.write(health_pb2.HealthCheckResponse(status=SERVICE_UNKNOWN))
        await self._refuse_unknown(service, context)
        await super().Watch(request, context)

    async def _refuse_unknown(self, service: str, context: Context) -> None:
        if len(service) > self._max_name_length:
            rule = f"at most {self._max_name_length} characters, as the longest service a server may serve"
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"service: {rule}", bad_request("service", rule))
        if service not in self._known:
            await abort(context, grpc.StatusCode.NOT_FOUND, NOT_FOUND)
