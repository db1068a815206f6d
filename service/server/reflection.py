"""Server reflection under both names clients ask: grpc.reflection.v1 (current grpcurl, Postman, grpcui) and v1alpha.

grpcio-reflection ships only v1alpha. The two protocols are the same messages on the wire under
another package name, so v1 is served by the same servicer with v1alpha's (de)serializers, and its
descriptor, needed to describe v1 itself, is v1alpha's renamed and added to protobuf's default pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from ..registry import Registry

V1ALPHA = reflection.SERVICE_NAME
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)


def _add_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto into the default pool, made from v1alpha's (once per process)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1.rsplit('.', 1)[0]}."
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", new.strip(".")
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


def register_reflection(registry: Registry, services: Sequence[str]) -> None:
    """Serve reflection for ``services`` (and reflection itself) under the v1 and v1alpha names."""
    _add_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer(tuple(services) + SERVICE_NAMES)
    # types-grpcio-reflection has no stub for reflection_pb2_grpc.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, registry)  # type: ignore[no-untyped-call]
    # v1: the same handler, registered under the v1 service name.
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    registry.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1, {"ServerReflectionInfo": handler}),))
    registry.add_registered_method_handlers(V1, {"ServerReflectionInfo": handler})
