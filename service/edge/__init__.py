"""The Envoy edge: JSON (REST) and gRPC-Web in front of the server, configured from what the server serves."""

from __future__ import annotations
