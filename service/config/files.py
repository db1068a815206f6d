"""Files the settings name: loading one with a clear start-up error, and noticing it was replaced."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError

T = TypeVar("T")


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


def load_setting_file(setting: str, path: Path, load: Callable[[Path], T], malformed: type[Exception]) -> T:
    """``load(path)``; a file that cannot be read or parsed is the start-up error naming ``setting``."""
    try:
        return load(path)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
    except (malformed, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"{path}: {exc}") from None
