"""The client library: ``create_channel(client_settings)`` and a function per HelloWorldService method."""

from __future__ import annotations

from .channel import (
    DEFAULT_TIMEOUT,
    MAX_EJECTION_PERCENT,
    REQUEST_ID,
    channel_options,
    check_health,
    create_channel,
    new_request_id,
    say_hello,
    say_hello_chat,
    say_hello_repeated,
    say_hello_to_many,
    service_config,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_EJECTION_PERCENT",
    "REQUEST_ID",
    "channel_options",
    "check_health",
    "create_channel",
    "new_request_id",
    "say_hello",
    "say_hello_chat",
    "say_hello_repeated",
    "say_hello_to_many",
    "service_config",
]
