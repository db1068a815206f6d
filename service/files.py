"""Noticing that files were replaced: what the tokens and certificate reloaders share."""

from __future__ import annotations

import time
from pathlib import Path


def signature(paths: list[Path]) -> tuple[object, ...]:
    """Inode, modification time and size of each file (stat follows a Secret volume's symlinks)."""
    parts: list[object] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError as exc:
            parts.append(("missing", str(path), exc.errno))
        else:
            parts.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(parts)


class ChangeWatch:
    """Says whether files changed since it last said so, looking (a few stat calls) at most every
    ``interval`` seconds; a change is reported once, so a bad replacement is not re-read until it
    changes again."""

    def __init__(self, paths: list[Path], interval: float) -> None:
        self._paths, self._interval = paths, interval
        self._signature = signature(paths)
        self._next_check = time.monotonic() + interval

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self._interval
        current = signature(self._paths)
        if current == self._signature:
            return False
        self._signature = current
        return True
