"""YAML files a user hands the tool (spaces, profiles, task files): read them safely, and say
what is wrong with one in one line that names the file, the key and what is allowed.

Every YAML file the tool reads goes through :func:`read_yaml_file` (or :func:`read_yaml` for a
top-level mapping): PyYAML's ``SafeLoader`` (no tags that build Python objects), tightened by
:class:`StrictLoader` where PyYAML is silent or fails with a traceback:

- a key given twice in one mapping is an error naming the key and both lines (``safe_load``
  keeps the last one: a profile with ``providers:`` twice silently measured the second list);
- nesting deeper than :data:`MAX_DEPTH` levels is refused while composing (PyYAML's composer
  recurses once per level: 5000 ``[`` raised ``RecursionError``);
- aliases whose expansion exceeds :data:`MAX_NODES` values, or that refer to a collection
  containing them, are refused (a few lines of anchors can stand for billions of values, and
  whatever walks the result would run out of time or stack);
- a file that is not a regular file (a folder, a FIFO, ``/dev/zero``), larger than
  :data:`MAX_BYTES`, or not UTF-8 text is refused before it is parsed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError

from search.errors import ConfigError

# The largest file shipped is a few kB; a megabyte is far beyond any hand-written space.
MAX_BYTES = 1 << 20
# Spaces and profiles nest four or five levels; PyYAML's composer recurses once per level.
MAX_DEPTH = 64
# Values after aliases are expanded (a hand-written file holds hundreds).
MAX_NODES = 100_000
_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping gives one key twice (``yaml.safe_load`` would keep the last silently)."""

    def __init__(self, key: str, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=again)
        if first.line == again.line:
            self.where = f"twice on line {again.line + 1}"
        else:
            self.where = f"on lines {first.line + 1} and {again.line + 1}"
        self.key = key


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, deep nesting and alias bombs (see the
    module docstring); each refusal is a ``yaml.MarkedYAMLError`` with the line it concerns."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):  # a reference to an earlier node, not a level
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
            self._check_duplicates(node)
        return node

    def _check_duplicates(self, root: yaml.Node) -> None:
        """Refuse a mapping that gives one key twice, naming the key's path and both lines.
        Keys compare as the values they load as (``1`` and ``1.0`` collide in a dict)."""
        seen_nodes: set[int] = set()
        stack: list[tuple[yaml.Node, str]] = [(root, "")]
        while stack:
            node, where = stack.pop()
            if id(node) in seen_nodes:  # an alias of a node already checked
                continue
            seen_nodes.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend(
                    (n, f"{where}.{i}" if where else str(i)) for i, n in enumerate(node.value)
                )
                continue
            if not isinstance(node, yaml.MappingNode):
                continue
            first: dict[Any, yaml.Mark] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                    continue  # "<<: *base": keys given here override the base's, as meant
                key = self.construct_object(key_node)
                name = f"{where}.{key}" if where else str(key)
                stack.append((value_node, name))
                try:
                    earlier = first.setdefault(key, key_node.start_mark)
                except TypeError:  # unhashable: SafeLoader's own check names it
                    continue
                if earlier is not key_node.start_mark:
                    raise DuplicateKeyError(name, earlier, key_node.start_mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand past :data:`MAX_NODES` values or form a loop
    (iterative: the graph may be deeper than Python's stack)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(k)] for k in _children(node))
            if sizes[key] > MAX_NODES:
                problem = f"aliases expand to more than {MAX_NODES} values"
                raise ComposerError(None, None, problem, node.start_mark)
            continue
        if key in sizes:
            continue
        if key in open_:
            problem = "an alias refers to a collection that contains it"
            raise ComposerError(None, None, problem, node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in sizes)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What is wrong, with its line, in one line (PyYAML's own messages span several)."""
    if isinstance(e, yaml.reader.ReaderError):
        if isinstance(e.character, bytes):
            return "not a text file (YAML is UTF-8 text)"
        return f"character #x{e.character:04x} at position {e.position} is not allowed in YAML"
    if isinstance(e, DuplicateKeyError):
        return f"key {e.key!r} is given {e.where}; keep one of them"
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = " ".join(_one_line(t) for t in (e.context, e.problem) if t)
        return f"not valid YAML{where}: {what or type(e).__name__}"
    return f"not valid YAML: {_one_line(str(e))}"


def parse_yaml(text: str, *, source: str) -> Any:
    """``text`` parsed by :class:`StrictLoader`, or a one-line :class:`ConfigError` that starts
    with ``source`` (a file name) and names the problem and its line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_problem(e)}") from None
    except RecursionError:  # a path PyYAML recurses on that the depth check misses
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


def read_yaml_file(path: Path | str) -> Any:
    """The contents of a YAML file, parsed by :class:`StrictLoader` (whatever the top level).

    Raises:
        ConfigError: one line naming the file: missing, not a regular file (a folder, a FIFO,
            a device), unreadable, over :data:`MAX_BYTES`, not UTF-8 text, not valid YAML, a
            duplicate key, too deep, an alias bomb.
    """
    path = Path(path)
    try:
        info = os.stat(path)  # before open(): opening a FIFO would wait for a writer
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a folder, not a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file (a YAML file is expected)")
        if info.st_size > MAX_BYTES:
            raise ConfigError(
                f"{path}: {info.st_size} bytes is too large for a YAML settings file "
                f"(at most {MAX_BYTES})"
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {(e.strerror or str(e)).lower()}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: too large for a YAML settings file (at most {MAX_BYTES})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML is UTF-8 text)") from None
    return parse_yaml(text, source=str(path))


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (:func:`read_yaml_file`; an empty file is ``{}``).

    Raises:
        ConfigError: as :func:`read_yaml_file`, or the top level is not a mapping.
    """
    data = read_yaml_file(path)
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
