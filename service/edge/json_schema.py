"""What a JSON body may hold, per route, for the edge's guard (strict_json.lua): every message's field names.

Envoy's transcoder drops JSON fields its message does not have; the guard refuses them instead, and
needs to know, for each route the transcoder serves, which message its body is and which names each
message's fields answer to (protobuf's JSON accepts the lowerCamelCase ``json_name`` and the proto name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor

# Well-known types whose JSON is not an object of their fields (a string, a number, or anything at all).
OPAQUE = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        *(
            f"google.protobuf.{name}Value"
            for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
        ),
    }
)
# A field's kind, as the guard reads it: True (any JSON value), a message's name, or {"map": name}.
Kind = bool | str | dict[str, str]


@dataclass(frozen=True)
class Route:
    """A JSON route of the transcoder: its HTTP method, its path (exact, or a template), and what its body is."""

    method: str
    path: str
    body: Kind | None  # None: the route takes no body


def _message(field: FieldDescriptor) -> Descriptor:
    """The message a message field holds (for a map field: the message of its values)."""
    message = field.message_type
    assert message is not None, field.full_name
    return _message(message.fields_by_name["value"]) if message.GetOptions().map_entry else message


def _kind(field: FieldDescriptor) -> Kind:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return True
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value = entry.fields_by_name["value"]
        return {"map": _message(value).full_name} if _kind(value) is not True else True
    message = _message(field)
    return True if message.full_name in OPAQUE else message.full_name


def messages(roots: Iterable[Descriptor]) -> dict[str, dict[str, Kind]]:
    """Every message reachable from ``roots`` (not opaque ones): each accepted JSON name and that field's kind."""
    found: dict[str, dict[str, Kind]] = {}
    pending = [root for root in roots if root.full_name not in OPAQUE]
    while pending:
        message = pending.pop()
        if message.full_name in found:
            continue
        fields: dict[str, Kind] = {}
        for field in message.fields:
            kind = fields[field.name] = fields[field.json_name] = _kind(field)
            if kind is not True:
                pending.append(_message(field))
        found[message.full_name] = fields
    return found


def _body_kind(method: MethodDescriptor, body: str) -> Kind | None:
    """The kind of a rule's ``body``: "*" is the whole request, "" none, else the field it names."""
    if not body:
        return None
    if body == "*":
        return method.input_type.full_name
    message, kind = method.input_type, None
    for name in body.split("."):
        field = message.fields_by_name[name]
        kind = _kind(field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            message = _message(field)
    return kind


def _rules(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    for binding in rule.additional_bindings:
        yield from _rules(binding)


def routes(services: Iterable[ServiceDescriptor]) -> list[Route]:
    """Each method's auto-mapped route (POST /package.Service/Method) and those of its google.api.http rules."""
    found = []
    for service in services:
        for method in service.methods:
            found.append(Route("POST", f"/{service.full_name}/{method.name}", method.input_type.full_name))
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            for rule in _rules(options.Extensions[annotations_pb2.http]):
                pattern = rule.WhichOneof("pattern")
                if pattern is None:
                    continue
                verb, path = (
                    (rule.custom.kind, rule.custom.path)
                    if pattern == "custom"
                    else (pattern.upper(), getattr(rule, pattern))
                )
                found.append(Route(verb, path, _body_kind(method, rule.body)))
    return found


def _lua_pattern(template: str) -> str | None:
    """A path template (/v1/{name=shelves/*}/books/{book}:verb) as an anchored Lua pattern; None: no variable in it."""
    if "{" not in template and "*" not in template:
        return None
    template, _, verb = template.partition(":") if ":" in template.rsplit("/", 1)[-1] else (template, "", "")
    # A variable is its pattern ("*" when it names none); then each segment: * one, ** any number.
    expanded = re.sub(r"\{[^}=]+(?:=([^}]*))?\}", lambda m: m.group(1) or "*", template)
    parts = []
    for segment in expanded.split("/"):
        if segment == "**":
            parts.append(".*")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.sub(r"([^\w])", r"%\1", segment))
    suffix = "%:" + re.sub(r"([^\w])", r"%\1", verb) if verb else ""
    return "^" + "/".join(parts) + suffix + "$"


def _lua(value: object) -> str:
    """``value`` (dicts, lists, strings, booleans, None) as a Lua literal."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"not printable ASCII: {value!r}")
        return json.dumps(value)  # for printable ASCII, a JSON string is a Lua string
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    raise TypeError(type(value))


def guard(services: Iterable[ServiceDescriptor]) -> str:
    """The Lua source of the edge's JSON guard for ``services``."""
    services = list(services)
    found = routes(services)
    roots = [descriptor_pool.Default().FindMessageTypeByName(r.body) for r in found if isinstance(r.body, str)]
    roots += [descriptor_pool.Default().FindMessageTypeByName(r.body["map"]) for r in found if isinstance(r.body, dict)]
    schema = messages(roots)
    # Each route: method, exact path (or nil), Lua pattern (or nil), body kind (false: none).
    rows = []
    for route in found:
        pattern = _lua_pattern(route.path)
        rows.append(
            [route.method, None if pattern else route.path, pattern, False if route.body is None else route.body]
        )
    source = resources.files(__package__).joinpath("strict_json.lua").read_text()
    return source.replace("__MESSAGES__", _lua(schema)).replace("__ROUTES__", _lua(rows))
