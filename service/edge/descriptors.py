"""The edge's descriptor set: what the server serves, as protoc --include_imports would write it, plus google.rpc.

Envoy's transcoder reads a FileDescriptorSet. The generated ``_pb2`` modules an app imports put each
file's descriptor into protobuf's default pool; the registry names the services. Their files and
every file they import, dependencies first, make the set; ``google/rpc/status.proto`` and
``error_details.proto`` join it because ``convert_grpc_status`` can only render the details it has
descriptors for (without them it sends an empty body).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

# Imported for their side effect: their files enter the default pool.
from google.rpc import error_details_pb2, status_pb2

ERROR_FILES = (status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)


def service_descriptors(services: Iterable[str]) -> tuple[list[ServiceDescriptor], list[str]]:
    """The descriptors of ``services`` found in the default pool, and the names of those without one.

    A service registered by a hand-written generic handler has no descriptor: gRPC-Web still reaches
    it (the edge forwards its bytes), JSON cannot (there is nothing to transcode with).
    """
    pool = descriptor_pool.Default()
    found, missing = [], []
    for name in services:
        try:
            found.append(pool.FindServiceByName(name))
        except KeyError:
            missing.append(name)
    return found, missing


def _with_imports(files: Iterable[FileDescriptor]) -> list[FileDescriptor]:
    """``files`` and everything they import, each once, every file after the files it imports."""
    ordered: dict[str, FileDescriptor] = {}

    def visit(file: FileDescriptor) -> None:
        if file.name in ordered:
            return
        for dependency in file.dependencies:
            visit(dependency)
        ordered[file.name] = file

    for file in files:
        visit(file)
    return list(ordered.values())


def _post_at_grpc_path(file: descriptor_pb2.FileDescriptorProto, services: set[str]) -> None:
    """Give each method of ``services`` with google.api.http rules the POST /package.Service/Method route too.

    The transcoder maps that path itself (auto_mapping) only for methods without rules; with this
    binding every method is at its gRPC path, as clients of the edge are told.
    """
    for service in file.service:
        name = f"{file.package}.{service.name}" if file.package else service.name
        if name not in services:
            continue
        for method in service.method:
            if not method.options.HasExtension(annotations_pb2.http):
                continue
            rule = method.options.Extensions[annotations_pb2.http]
            path = f"/{name}/{method.name}"
            if all(binding.post != path for binding in (rule, *rule.additional_bindings)):
                rule.additional_bindings.add(post=path, body="*")


def descriptor_set(services: Iterable[ServiceDescriptor]) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet of the files defining ``services``, with their imports and google.rpc's errors."""
    services = list(services)
    names = {service.full_name for service in services}
    files = _with_imports([*(service.file for service in services), *ERROR_FILES])
    # serialized_pb is the file as protoc compiled it, options (google.api.http) included.
    protos = [descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb) for file in files]
    for proto in protos:
        _post_at_grpc_path(proto, names)
    return descriptor_pb2.FileDescriptorSet(file=protos)
