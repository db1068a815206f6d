"""What changes when a file is replaced: the test that file reloaders share."""

from __future__ import annotations

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
