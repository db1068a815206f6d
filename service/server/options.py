"""The grpc server's channel arguments, from the settings: message sizes, keepalive, connection age, streams."""

from __future__ import annotations

from ..config.settings import Settings


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _connection_policy(settings: Settings, shared_port: bool) -> list[tuple[str, int]]:
    """What every listener holds a connection to: keepalive, pings, idle time, age, streams, handshake."""
    policy = settings.grpc
    return [
        # grpc turns SO_REUSEPORT on, which lets a second server silently share a busy port; only
        # the workers of one supervisor share theirs (the supervisor checked the port was free).
        ("grpc.so_reuseport", int(shared_port)),
        ("grpc.keepalive_time_ms", _ms(policy.keepalive_time_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(policy.keepalive_timeout_seconds)),
        # Let clients keep idle connections warm with pings no more often than the interval.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", _ms(policy.min_ping_interval_seconds)),
        ("grpc.max_connection_idle_ms", _ms(policy.max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", _ms(policy.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", _ms(policy.max_connection_age_grace_seconds)),
        ("grpc.max_concurrent_streams", policy.max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", _ms(policy.handshake_timeout_seconds)),
    ]


def server_options(settings: Settings, shared_port: bool) -> list[tuple[str, int]]:
    """What ``grpc.aio.server(options=...)`` takes; ``shared_port`` for the workers of one supervisor."""
    return [
        *_connection_policy(settings, shared_port),
        # grpc refuses bigger requests itself (RESOURCE_EXHAUSTED, before any Python code runs);
        # the wire layer checks replies first, so they fail with a clear message.
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]


def health_port_options(settings: Settings, shared_port: bool) -> list[tuple[str, int]]:
    """The plaintext health listener's: the main port's connection policy, and messages no bigger than a name."""
    # It answers anyone who reaches the node, without credentials: the same bounds on idle, old
    # and crowded connections as the main port, or it would be the cheap way in.
    return [
        *_connection_policy(settings, shared_port),
        # A request holds one service name: room for the longest one allowed, 4 bytes a code point at
        # worst, and its field's tag and length; bigger ones grpc refuses itself (RESOURCE_EXHAUSTED).
        ("grpc.max_receive_message_length", max(4096, 4 * settings.health.max_service_name_length + 8)),
    ]
