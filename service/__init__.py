"""The seed article's HelloWorldService, grown up: TLS/mTLS, token auth, access log, health, reflection."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hello-grpc-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
