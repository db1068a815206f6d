"""Settings problems in an operator's words: the variable as the README names it, what it accepts, one line each."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

# Relative paths in settings are opened as given, so they resolve against the working directory.
RELATIVE = "relative paths are resolved against the working directory"


def _bounds(metadata: Iterable[Any]) -> str:
    low = high = ""
    for item in metadata:
        if isinstance(item, Ge):
            low = f"at least {item.ge}"
        elif isinstance(item, Gt):
            low = f"more than {item.gt}"
        elif isinstance(item, Le):
            high = f"at most {item.le}"
        elif isinstance(item, Lt):
            high = f"less than {item.lt}"
    if low.startswith("at least") and high.startswith("at most"):
        return f"from {low.removeprefix('at least ')} to {high.removeprefix('at most ')}"
    return " and ".join(part for part in (low, high) if part)


def accepted(annotation: Any, metadata: Iterable[Any] = ()) -> str:
    """What a field of this type accepts, as the README would say it: "a whole number at least 0, or off"."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return ", or ".join(accepted(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin is Annotated:
        base, *extra = get_args(annotation)
        inner = [m for item in extra for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        if base is Path and any(getattr(item, "path_type", None) == "file" for item in inner):
            return f"the path of an existing file ({RELATIVE})"
        return accepted(base, [*metadata, *inner])
    if origin is Literal:
        values = [str(value) for value in get_args(annotation)]
        return values[0] if len(values) == 1 else f"one of {', '.join(values)}"
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        kind = "a whole number" if annotation is int else "a number"
        bounds = _bounds(metadata)
        return f"{kind} {bounds}" if bounds else kind
    return "text"


def _field(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[str, ...], FieldInfo | None]:
    """The field path of an error's location (without pydantic's union tags), and the field it ends at."""
    path: list[str] = []
    current: Any = model
    info = None
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            break
        path.append(part)
        info = fields[part]
        current = info.annotation
    return tuple(path), info


def problems(exc: ValidationError, model: type[BaseModel], name: Any) -> list[tuple[str, str]]:
    """One (variable, problem) per setting that is wrong; ``name(*path)`` spells a field's variable."""
    by_setting: dict[tuple[str, ...], list[Any]] = {}
    for error in exc.errors():
        path, _ = _field(model, tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            path = tuple(str(part) for part in error["loc"])
        by_setting.setdefault(path, []).append(error)
    found = []
    for path, errors in by_setting.items():
        variable = name(*path)
        first = errors[0]
        value = first.get("input")
        if first["type"] == "extra_forbidden":
            known = [name(*path[:-1], field) for field in _field(model, path[:-1])[1].annotation.model_fields]  # type: ignore[union-attr]
            guess = difflib.get_close_matches(variable, known, n=1)
            found.append((variable, f"not a setting{f'; did you mean {guess[0]}?' if guess else ''}"))
            continue
        if first["type"] == "path_not_file":
            where = "" if Path(str(value)).is_absolute() else f" ({RELATIVE}, here {Path.cwd()})"
            found.append((variable, f"no such file: {value}{where}"))
            continue
        if first["type"] == "value_error":
            # A validator of ours: its message already says what is wrong and what to write.
            found.append((variable, str(first["ctx"]["error"])))
            continue
        _, info = _field(model, path)
        expected = accepted(info.annotation, info.metadata) if info is not None else first["msg"]
        # Echo the value to help the operator, except anything that may be a secret.
        shown = "" if "token" in variable.lower() or not isinstance(value, str | int | float) else f"{value!r}: "
        if first["type"] == "missing":
            found.append((variable, f"required: {expected}"))
        else:
            found.append((variable, f"{shown}expected {expected}"))
    return found


def unknown_variables(
    variables: Iterable[str], known: Iterable[str], prefix: str, refused: Iterable[str] = ()
) -> list[str]:
    """One warning per ``prefix``* variable no program reads, naming the closest known one.

    Names starting with a ``refused`` prefix (HELLO_TLS__) are left out: their model refuses a
    misspelling itself, with an error.
    """
    names = sorted(set(known))
    warnings = []
    for variable in sorted(set(variables)):
        if not variable.startswith(prefix) or variable in names or variable.startswith(tuple(refused)):
            continue
        guess = difflib.get_close_matches(variable, names, n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        warnings.append(f"{variable} is not a setting and is ignored{hint}")
    return warnings
