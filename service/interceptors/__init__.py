"""Server interceptors, one concern each; build_server orders them (outermost first)."""

from __future__ import annotations

from .access_log import AccessLogInterceptor
from .auth import AuthInterceptor
from .errors import ErrorInterceptor
from .limits import ConcurrencyLimitInterceptor, RateLimitInterceptor
from .metrics import MetricsInterceptor
from .request_id import RequestIdInterceptor
from .tracing import TracingInterceptor
from .wire import WireInterceptor

__all__ = [
    "AccessLogInterceptor",
    "AuthInterceptor",
    "ConcurrencyLimitInterceptor",
    "ErrorInterceptor",
    "MetricsInterceptor",
    "RateLimitInterceptor",
    "RequestIdInterceptor",
    "TracingInterceptor",
    "WireInterceptor",
]
