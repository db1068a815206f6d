"""Bearer tokens: the tokens-file format, and a lookup from token to principal by the token's digest."""

from __future__ import annotations

import hashlib
import math
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config.files import ChangeWatch

# A token must make guessing pointless on its own: the failed-auth throttle never refuses a valid
# token (a caller behind a shared address would pay for a guesser's failures), so a guesser is
# bounded only by the time a call takes, and 2**128 guesses outlast any such bound.
MIN_TOKEN_LENGTH = 32
MIN_TOKEN_BITS = 128
# Variety: the entropy of the token's own character counts, times its length. Random tokens of 32
# characters score 90 or more (hex 92 at the least in 200,000 draws); "new-token-xxxx..." 60.
MIN_VARIETY_BITS = 64
# The alphabet a token is taken to be drawn from: the classes it uses, each whole; any character
# outside them counts as one of the 32 ASCII punctuation characters.
_CLASSES = tuple(frozenset(chars) for chars in (string.digits, string.ascii_lowercase, string.ascii_uppercase))
_CLASSED = frozenset(string.digits + string.ascii_letters)
_OTHERS = 32
TOKEN_RULE = (
    f"at least {MIN_TOKEN_LENGTH} characters; {MIN_TOKEN_BITS} bits as length times log2 of its alphabet (the"
    " classes it uses: digits 10, a-z 26, A-Z 26, any other 32); characters varied enough that their counts'"
    f" entropy times the length is {MIN_VARIETY_BITS} bits; and not one shorter string repeated"
)


class TokenFileError(ValueError):
    """The tokens file breaks the format; the message names the line, never the token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _bits(token: str) -> float:
    """Length times log2 of the alphabet the token's characters come from (an upper bound of its strength)."""
    used = set(token)
    alphabet = sum(len(members) for members in _CLASSES if used & members) + (_OTHERS if used - _CLASSED else 0)
    return len(token) * math.log2(alphabet) if alphabet else 0.0


def _variety(token: str) -> float:
    """The Shannon entropy of the token's character counts times its length: 0 for one repeated character."""
    n = len(token)
    return sum(count * math.log2(n / count) for count in Counter(token).values())


def _strong(token: str) -> bool:
    """Whether the token meets TOKEN_RULE; what a person types ("aaaa...", "abab...", 36 digits) does not."""
    return (
        len(token) >= MIN_TOKEN_LENGTH
        and _bits(token) >= MIN_TOKEN_BITS
        and _variety(token) >= MIN_VARIETY_BITS
        # A string is a shorter one repeated exactly when it occurs inside itself doubled, off the ends.
        and token not in (token + token)[1:-1]
    )


def parse_tokens(text: str) -> list[tuple[str, str]]:
    """Parse a tokens file into (principal, token) pairs, in file order.

    Format: one token a line, optionally ``name:token`` (split at the first ``:``); blank
    lines and lines starting with ``#`` are ignored. A token without a name gets a principal
    derived from its digest, so logs can tell callers apart without revealing the token. Each
    token must meet TOKEN_RULE; an error names the line and the principal, never the token.
    """
    entries: list[tuple[str, str]] = []
    seen: dict[bytes, int] = {}
    # Editors on Windows save UTF-8 with a byte-order mark; it would begin the first principal's name.
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = "", line
        elif not name or any(ch.isspace() for ch in name):
            raise TokenFileError(f"line {number}: the name before ':' is empty or contains whitespace")
        # Not the digest-derived name of an unnamed token: for a weak token it would help guess it.
        where = f"line {number} (principal {name})" if name else f"line {number} (a token without a name)"
        if any(ch.isspace() for ch in token):
            raise TokenFileError(f"{where}: the token contains whitespace")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenFileError(f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters")
        if not _strong(token):
            raise TokenFileError(f"{where}: the token is too weak; a token needs {TOKEN_RULE}")
        digest = _digest(token)
        if digest in seen:
            raise TokenFileError(f"{where}: the same token as line {seen[digest]}")
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
