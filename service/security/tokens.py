"""Bearer tokens: the tokens-file format, and a lookup from token to principal by the token's digest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config.files import ChangeWatch

MIN_TOKEN_LENGTH = 16


class TokenFileError(ValueError):
    """The tokens file breaks the format; the message names the line, never the token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str) -> list[tuple[str, str]]:
    """Parse a tokens file into (principal, token) pairs, in file order.

    Format: one token a line, optionally ``name:token`` (split at the first ``:``); blank
    lines and lines starting with ``#`` are ignored. A token without a name gets a principal
    derived from its digest, so logs can tell callers apart without revealing the token.
    """
    entries: list[tuple[str, str]] = []
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = "", line
        elif not name or any(ch.isspace() for ch in name):
            raise TokenFileError(f"line {number}: the name before ':' is empty or contains whitespace")
        if any(ch.isspace() for ch in token):
            raise TokenFileError(f"line {number}: the token contains whitespace")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenFileError(f"line {number}: the token is shorter than {MIN_TOKEN_LENGTH} characters")
        digest = _digest(token)
        if digest in seen:
            raise TokenFileError(f"line {number}: the same token as line {seen[digest]}")
        seen[digest] = number
        entries.append((name or f"token-{digest.hex()[:8]}", token))
    if not entries:
        raise TokenFileError("no tokens in the file (only blank or comment lines)")
    return entries


class TokenStore:
    """The accepted tokens, kept as SHA-256 digests and looked up by the digest of the presented one."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        # Only each token's digest is kept. A lookup by digest takes the same time whichever token
        # (if any) was presented: what a dict's hashing and comparing could reveal is about the
        # digest, and a digest tells an attacker nothing about a token.
        self._by_digest = {_digest(token): principal for principal, token in entries}

    @classmethod
    def from_file(cls, path: Path) -> TokenStore:
        """Read and validate a tokens file; raises OSError or TokenFileError."""
        return cls(parse_tokens(path.read_text(encoding="utf-8")))

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal_for(self, token: str) -> str | None:
        """The principal whose token this is, or None."""
        return self._by_digest.get(_digest(token))


class TokenFile:
    """The tokens file, re-read when it changes (as a Kubernetes Secret volume does), checked lazily.

    A change is noticed at the first call at least ``interval`` seconds after the last check, so
    added tokens work and removed ones stop working within ``interval`` seconds of the change. A
    replacement that cannot be read or parsed keeps the last good set and is reported once.
    """

    def __init__(self, path: Path, interval: float, log: Any) -> None:
        self._path, self._log = path, log
        self._watch = ChangeWatch([path], interval)
        self._store = TokenStore.from_file(path)

    def current(self) -> TokenStore:
        """The tokens in force, re-read first when the file changed."""
        if self._watch.changed():
            self._reload()
        return self._store

    def _reload(self) -> None:
        try:
            store = TokenStore.from_file(self._path)
        except (OSError, TokenFileError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else str(exc)
            self._log.error("tokens file rejected; keeping the last good tokens", path=str(self._path), problem=problem)
            return
        self._store = store
        self._log.info("tokens file reloaded", path=str(self._path), tokens=len(store))
