"""YAML files a user hands the tool (spaces, profiles, task files): read them safely, and say
what is wrong with one in one line that names the file, the key and what is allowed."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from search.errors import ConfigError


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or a one-line :class:`ConfigError` naming the file
    and what is wrong (not YAML, unreadable, not text, not a mapping)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML is UTF-8 text)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {kind}")
    return data


def _fields(kind: Any) -> list[str] | None:
    """Field names of a pydantic model or a dataclass (a profile's measurement parts)."""
    if dataclasses.is_dataclass(kind):
        return [f.name for f in dataclasses.fields(kind)]
    fields_ = getattr(kind, "model_fields", None)
    return list(fields_) if fields_ is not None else None


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        origin = typing.get_origin(current)
        if origin in (list, tuple, dict):  # ``part`` is an index or a key: its item's type
            current = typing.get_args(current)[-1 if origin is dict else 0]
            continue
        names = _fields(current)
        if names is None or part not in names:
            return []
        current = _annotation(current, part)
    names = _fields(current)
    if not names:
        return []
    return sorted(k for k in names if k not in ("path", "name") or current is not model)


def _annotation(kind: Any, name: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return typing.get_type_hints(kind)[name]
    return kind.model_fields[name].annotation


def format_validation_error(path: Path, model: type[BaseModel], err: ValidationError) -> str:
    """One line: the file, the first bad key, what is wrong with it, what is allowed."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not str(p).startswith(("function-", "FloatRange")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = ", ".join(_allowed_keys(model, loc))
        return f"{path}: unknown key '{key}'; allowed keys here: {allowed}"
    msg = first["msg"].removeprefix("Value error, ")
    if not loc:  # a check of the whole file: the message names its keys
        return f"{path}: {msg}"
    if first["type"] == "literal_error":
        return f"{path}: {key}: {msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{path}: {key}: {msg}{shown}"
