"""Server interceptors, one concern each."""

from __future__ import annotations

from .access_log import AccessLogInterceptor
from .auth import AuthInterceptor

__all__ = ["AccessLogInterceptor", "AuthInterceptor"]
