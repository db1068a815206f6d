"""The edge's Envoy bootstrap: one listener for JSON and gRPC-Web, the server behind it over HTTP/2 and TLS.

Built from the settings and from what the server serves (the services and their descriptor set), so a
team's service is on the edge with no edge work. Requests pass, in order: CORS (the allowed origins;
preflights are answered here), gRPC-Web (to gRPC), the JSON guard (unknown fields refused), the
gRPC-JSON transcoder (JSON to gRPC; unknown methods and query parameters refused), the router (only
the app's services: health and reflection are not on the edge). Certificates are read through
file-based SDS with a watched directory, so a rotated Secret reaches Envoy without a restart.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.settings import EdgeSettings

TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
HTTP_FILTERS = "type.googleapis.com/envoy.extensions.filters.http."
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
CONNECTIONS = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
CLUSTER = "server"
# What a browser may send and read: the gRPC-Web and Connect headers, the bearer token, our request id.
ALLOW_HEADERS = (
    "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout,x-request-id,"
    "connect-protocol-version,connect-timeout-ms"
)
EXPOSE_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin,grpc-retry-pushback-ms,retry-after,x-request-id"
# How long a call may take at most; a caller's grpc-timeout below it wins. Streams last at most this too.
MAX_CALL_SECONDS = 300


@dataclass(frozen=True)
class Upstream:
    """The server the edge forwards to, and the name its certificate must carry (None: plaintext, HELLO_INSECURE)."""

    host: str
    port: int
    server_name: str | None


@dataclass(frozen=True)
class Served:
    """What the server serves, as the edge needs it: every service, the ones it can transcode, their descriptors."""

    services: tuple[str, ...]
    transcoded: tuple[str, ...]
    descriptor_file: Path
    guard: str  # the JSON guard's Lua source


def _address(host: str, port: int) -> dict[str, Any]:
    host = host.strip("[]")
    return {"socket_address": {"address": host, "port_value": port, **({"ipv4_compat": True} if host == "::" else {})}}


def _has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (a container may have IPv6 off, and Envoy would then not start)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _listen(host: str, port: int) -> dict[str, Any]:
    """A listener's address (and, for "localhost", both loopback addresses where there are two)."""
    if host == "localhost":
        also = [{"address": _address("::1", port)}] if _has_ipv6_loopback() else []
        return {"address": _address("127.0.0.1", port), **({"additional_addresses": also} if also else {})}
    return {"address": _address(host, port)}


def _absolute(path: Path) -> Path:
    """``path`` from the root, its links left alone: a Secret volume's files are links that change on rotation."""
    return Path(os.path.abspath(path))


def _sds(name: str, directory: Path) -> dict[str, Any]:
    """A reference to the secret ``name``, read from its file in ``directory`` (written by secrets())."""
    source = {"path_config_source": {"path": str(directory / f"{name}.json")}, "resource_api_version": "V3"}
    return {"name": name, "sds_config": source}


def secrets(edge: EdgeSettings, upstream: Upstream) -> dict[str, dict[str, Any]]:
    """The SDS secret files (name -> file content) for the certificates the settings name."""
    found: dict[str, dict[str, Any]] = {}

    def watched(path: Path) -> dict[str, str]:
        # Kubernetes swaps a Secret volume's files by renaming a link in its folder: watch the folder.
        return {"path": str(_absolute(path).parent)}

    def certificate(cert: Path, key: Path) -> dict[str, Any]:
        return {
            "certificate_chain": {"filename": str(_absolute(cert))},
            "private_key": {"filename": str(_absolute(key))},
            "watched_directory": watched(cert),
        }

    if edge.cert_file is not None and edge.key_file is not None:
        found["listener"] = {"tls_certificate": certificate(edge.cert_file, edge.key_file)}
    if upstream.server_name is not None and edge.upstream_ca_file is not None:
        found["upstream-ca"] = {
            "validation_context": {
                "trusted_ca": {"filename": str(_absolute(edge.upstream_ca_file))},
                "watched_directory": watched(edge.upstream_ca_file),
            }
        }
    if edge.upstream_cert_file is not None and edge.upstream_key_file is not None:
        found["upstream-client"] = {"tls_certificate": certificate(edge.upstream_cert_file, edge.upstream_key_file)}
    return {name: {"resources": [{"@type": TLS + "Secret", "name": name, **secret}]} for name, secret in found.items()}


def _cors(edge: EdgeSettings) -> dict[str, Any]:
    # "http://localhost:*" is that host on any port; any other origin is matched exactly.
    matchers = [
        {"safe_regex": {"regex": _origin_regex(origin)}} if origin.endswith(":*") else {"exact": origin}
        for origin in edge.allowed_origins
    ]
    return {
        "@type": HTTP_FILTERS + "cors.v3.CorsPolicy",
        "allow_origin_string_match": matchers,
        "allow_methods": "GET,POST,PUT,PATCH,DELETE,OPTIONS",
        "allow_headers": ALLOW_HEADERS,
        "expose_headers": EXPOSE_HEADERS,
        "max_age": "600",
        # Bearer tokens, never cookies: nothing a browser would send by itself.
        "allow_credentials": False,
        # A preflight from an origin not allowed is answered here too, without CORS headers.
        "forward_not_matching_preflights": False,
    }


def _origin_regex(origin: str) -> str:
    return re.escape(origin.removesuffix(":*")) + r":[0-9]{1,5}"


def _routes(served: Served) -> list[dict[str, Any]]:
    # The app's services only: after the transcoder, a JSON call is a gRPC call to one of these paths.
    action = {
        "cluster": CLUSTER,
        "timeout": "0s",  # streams: bounded by max_stream_duration instead
        "max_stream_duration": {
            "max_stream_duration": f"{MAX_CALL_SECONDS}s",
            "grpc_timeout_header_max": f"{MAX_CALL_SECONDS}s",
        },
    }
    routes = [{"match": {"prefix": f"/{service}/"}, "route": action} for service in served.services]
    # Anything else (health, reflection, another path) is not on the edge.
    routes.append(
        {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "not found"}}}
    )
    return routes


def _http_filters(served: Served, edge: EdgeSettings) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [
        {"name": "envoy.filters.http.cors", "typed_config": {"@type": HTTP_FILTERS + "cors.v3.Cors"}},
        {"name": "envoy.filters.http.grpc_web", "typed_config": {"@type": HTTP_FILTERS + "grpc_web.v3.GrpcWeb"}},
    ]
    if served.transcoded:
        filters += [
            {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": HTTP_FILTERS + "lua.v3.Lua",
                    "default_source_code": {"inline_string": served.guard},
                },
            },
            {
                "name": "envoy.filters.http.grpc_json_transcoder",
                "typed_config": {
                    "@type": HTTP_FILTERS + "grpc_json_transcoder.v3.GrpcJsonTranscoder",
                    "proto_descriptor": str(served.descriptor_file),
                    "services": list(served.transcoded),
                    # POST /package.Service/Method for every method, beside the google.api.http routes.
                    "auto_mapping": True,
                    # A gRPC error becomes its HTTP status and a google.rpc.Status body with the details.
                    "convert_grpc_status": True,
                    "request_validation_options": {
                        "reject_unknown_method": True,
                        "reject_unknown_query_parameters": True,
                        "reject_binding_body_field_collisions": True,
                    },
                    "max_request_body_size": edge.max_request_bytes,
                    "max_response_body_size": edge.max_request_bytes,
                },
            },
        ]
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": HTTP_FILTERS + "router.v3.Router"}})
    return filters


def _connection_manager(served: Served, edge: EdgeSettings) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": "edge",
            "codec_type": "AUTO",
            # The edge is where callers arrive: their address is the connection's, not a header's.
            "use_remote_address": True,
            # x-request-id: a caller's own (the server keeps it when it is safe to log) or a new one,
            # sent to the server and returned with every reply.
            "preserve_external_request_id": True,
            "always_set_request_id_in_response": True,
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "request_headers_timeout": "10s",
            "stream_idle_timeout": "300s",
            "common_http_protocol_options": {
                "idle_timeout": "300s",
                "headers_with_underscores_action": "REJECT_REQUEST",
            },
            "http2_protocol_options": {
                "max_concurrent_streams": 100,
                "initial_stream_window_size": 65536,
                "initial_connection_window_size": 1048576,
            },
            "route_config": {
                "name": "edge",
                "virtual_hosts": [
                    {
                        "name": "edge",
                        "domains": ["*"],
                        "routes": _routes(served),
                        "typed_per_filter_config": {"envoy.filters.http.cors": _cors(edge)},
                    }
                ],
            },
            "http_filters": _http_filters(served, edge),
        },
    }


def _listener(served: Served, edge: EdgeSettings, secret_dir: Path) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [_connection_manager(served, edge)]}
    if edge.cert_file is not None:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS + "DownstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                    "tls_certificate_sds_secret_configs": [_sds("listener", secret_dir)],
                },
            },
        }
    return {
        "name": "edge",
        **_listen(edge.host, edge.port),
        # Bounds what Envoy buffers per connection (a JSON body is read whole): bigger bodies get 413.
        "per_connection_buffer_limit_bytes": edge.max_request_bytes,
        "filter_chains": [chain],
    }


def _health_listener(edge: EdgeSettings, port: int) -> dict[str, Any]:
    """GET /ready on plain HTTP for probes: 200 while Envoy serves, 503 once it is told to fail or drain."""
    return {
        "name": "health",
        **_listen(edge.host, port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "health",
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "health",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 404,
                                                    "body": {"inline_string": "not found"},
                                                },
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.health_check",
                                    "typed_config": {
                                        "@type": HTTP_FILTERS + "health_check.v3.HealthCheck",
                                        "pass_through_mode": False,
                                        "headers": [{"name": ":path", "string_match": {"exact": "/ready"}}],
                                    },
                                },
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": HTTP_FILTERS + "router.v3.Router"},
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _cluster(edge: EdgeSettings, upstream: Upstream, secret_dir: Path) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": CLUSTER,
        # DNS, so a name (localhost, a headless Service) works as an address does; every address it
        # resolves to is a backend, and calls are spread over them one by one.
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "lb_policy": "LEAST_REQUEST",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(upstream.host, upstream.port)}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                # gRPC is HTTP/2. The server lets clients ping every 10 s (HELLO_GRPC__MIN_PING_INTERVAL_SECONDS).
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "20s"}}
                },
            }
        },
        # The server's own cap on calls in flight (HELLO_RATE_LIMIT__MAX_CONCURRENT_CALLS) answers first.
        "circuit_breakers": {"thresholds": [{"max_requests": 10000, "max_pending_requests": 10000}]},
    }
    if upstream.server_name is not None:
        context: dict[str, Any] = {
            "alpn_protocols": ["h2"],
            "combined_validation_context": {
                # The server's certificate must be signed by the CA and carry the name.
                "default_validation_context": {
                    "match_typed_subject_alt_names": [
                        {"san_type": _san_type(upstream.server_name), "matcher": {"exact": upstream.server_name}}
                    ]
                },
                "validation_context_sds_secret_config": _sds("upstream-ca", secret_dir),
            },
        }
        if edge.upstream_cert_file is not None:
            context["tls_certificate_sds_secret_configs"] = [_sds("upstream-client", secret_dir)]
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS + "UpstreamTlsContext",
                "sni": upstream.server_name,
                "common_tls_context": context,
            },
        }
    return cluster


def _san_type(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return "DNS"
    return "IP_ADDRESS"


def bootstrap(served: Served, edge: EdgeSettings, upstream: Upstream, secret_dir: Path) -> dict[str, Any]:
    """The whole Envoy bootstrap for the edge."""
    listeners = [_listener(served, edge, secret_dir)]
    if edge.health_port != "off":
        listeners.append(_health_listener(edge, edge.health_port))
    return {
        "node": {"id": "hello-edge", "cluster": "hello-edge"},
        "admin": {"address": _address("127.0.0.1", edge.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": [_cluster(edge, upstream, secret_dir)]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": CONNECTIONS,
                        "max_active_downstream_connections": edge.max_connections,
                    },
                }
            ]
        },
    }
