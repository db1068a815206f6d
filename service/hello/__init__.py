"""The default app (HELLO_APP=service.hello:register): the seed article's HelloWorldService and its input rules."""

from __future__ import annotations

from .servicer import HelloServicer, register

__all__ = ["HelloServicer", "register"]
