"""Input rules for the Hello messages; each problem is a sentence that names the field and the rule."""

from __future__ import annotations

import unicodedata

DEFAULT_MAX_NAME_LENGTH = 256


def name_rule(name: str, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> str | None:
    """The rule ``name`` breaks, or None: it must be 1..max_length code points, no Cc/Cf characters."""
    if not name:
        return "must not be empty"
    if len(name) > max_length:
        return f"must be at most {max_length} characters (got {len(name)})"
    for position, char in enumerate(name):
        if unicodedata.category(char) in ("Cc", "Cf"):
            return f"must not contain control or format characters (U+{ord(char):04X} at position {position})"
    return None
