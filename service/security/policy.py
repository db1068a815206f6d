"""Authorization policy: which methods each principal may call, from a small TOML file.

    # policy.toml: principal = [patterns]; a pattern is "*", "pkg.Service/*" or "pkg.Service/Method".
    [allow]
    dev = ["*"]                                           # a token's name
    "spiffe://example.org/ns/jobs/sa/report" = ["rpc_package.HelloWorldService/SayHello"]
    "dns:reporting.example.org" = ["rpc_package.HelloWorldService/SayHello"]
    "cn:hello-client" = ["rpc_package.HelloWorldService/*"]
    "*" = ["grpc.reflection.v1alpha.ServerReflection/*"]   # any principal not listed above

Without a policy file every authenticated principal may call every method. With one, a principal
gets its own entry, else the "*" entry, else nothing. A principal no caller can have (a ':' in
a form authenticators.py never makes) is an error, as an unknown method is.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .authenticators import principal_problem


class PolicyError(ValueError):
    """The policy file breaks the format or names a method the server does not have."""


@dataclass(frozen=True)
class _Grant:
    everything: bool
    services: frozenset[str]
    methods: frozenset[str]

    def allows(self, method: str) -> bool:
        # method is "/pkg.Service/Method"
        if self.everything or method[1:] in self.methods:
            return True
        return method[1:].split("/", 1)[0] in self.services


class Policy:
    """Answers whether a principal may call a method, in constant time per call."""

    def __init__(self, grants: dict[str, _Grant]) -> None:
        self._grants = grants
        self._default = grants.get("*", _Grant(False, frozenset(), frozenset()))

    def allows(self, principal: str, method: str) -> bool:
        """Whether ``principal`` may call ``method`` ("/pkg.Service/Method")."""
        return self._grants.get(principal, self._default).allows(method)

    @classmethod
    def from_file(cls, path: Path, known_methods: Iterable[str]) -> Policy:
        """Parse ``path``; ``known_methods`` ("pkg.Service/Method") catch typos at start-up."""
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"not valid TOML: {exc}") from None
        allow = document.get("allow")
        if not isinstance(allow, dict) or set(document) != {"allow"}:
            raise PolicyError("expected one [allow] table of principal = [patterns]")
        methods = frozenset(known_methods)
        services = frozenset(m.split("/", 1)[0] for m in methods)
        grants = {}
        for principal, patterns in allow.items():
            if problem := principal_problem(principal):
                raise PolicyError(f"{principal}: {problem}")
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise PolicyError(f"{principal}: expected a list of method patterns")
            grants[principal] = _grant(principal, patterns, services, methods)
        return cls(grants)


def _grant(principal: str, patterns: list[str], services: frozenset[str], methods: frozenset[str]) -> _Grant:
    everything, granted_services, granted_methods = False, set(), set()
    for pattern in patterns:
        service, _, method = pattern.partition("/")
        if pattern == "*":
            everything = True
        elif method == "*" and service in services:
            granted_services.add(service)
        elif pattern in methods:
            granted_methods.add(pattern)
        else:
            raise PolicyError(f"{principal}: {pattern!r} is not '*', a known 'service/*' or a known 'service/method'")
    return _Grant(everything, frozenset(granted_services), frozenset(granted_methods))
