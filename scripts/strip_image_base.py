"""Remove the shells and pip that an image's base brings: the service runs neither (deploy/Dockerfile)."""

from __future__ import annotations

import glob
import os
import shutil

# Both bases are Debian bookworm (merged /usr: /bin is /usr/bin); python:*-slim adds its own pip under
# /usr/local, Debian keeps the wheel that ensurepip and venv install. Only what exists is removed.
PATTERNS = [
    *(f"{folder}/{shell}" for folder in ("/bin", "/usr/bin") for shell in ("sh", "dash", "bash", "rbash")),
    "/usr/local/bin/pip*",
    "/usr/local/lib/python3*/site-packages/pip",
    "/usr/local/lib/python3*/site-packages/pip-*.dist-info",
    "/usr/local/lib/python3*/ensurepip/_bundled/pip-*.whl",
    "/usr/share/python-wheels/pip-*.whl",
]


def main() -> None:
    """Delete every path the patterns match, each once (through /bin or /usr/bin alike)."""
    found = {
        os.path.join(os.path.realpath(os.path.dirname(m)), os.path.basename(m)) for p in PATTERNS for m in glob.glob(p)
    }
    for path in sorted(found):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        print("removed", path)


if __name__ == "__main__":
    main()
