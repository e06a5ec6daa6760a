"""The one YAML reader (spaces, profiles, task files): duplicate keys, nesting, aliases, files
that are not text or not files, each one line naming the file (``shared/cases/yaml-duplicate-
keys``, ``shared/cases/space-deep-nesting-traceback``)."""

from __future__ import annotations

import os

import pytest

from search.core.yaml_input import MAX_BYTES, MAX_DEPTH, parse_yaml, read_yaml, read_yaml_file
from search.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: 1\nb: 2\na: 3\n", "key 'a' is given on lines 1 and 3"),
        ("a: {b: 1, b: 2}\n", "key 'a.b' is given twice on line 1"),
        ("a:\n  b:\n    c: 1\n    c: 2\n", "key 'a.b.c' is given on lines 3 and 4"),
        ("l:\n  - {x: 1}\n  - {y: 1, y: 2}\n", "key 'l.1.y'"),
        ("1: a\n1.0: b\n", "key '1.0'"),  # one key once loaded
        ("true: a\nyes: b\n", "key 'True'"),  # YAML 1.1 booleans
        ("a: 1\n'a': 2\n", "key 'a'"),
    ],
)
def test_a_key_given_twice_names_the_key_and_both_lines(text, says):
    with pytest.raises(ConfigError, match="f.yaml: ") as e:
        parse_yaml(text, source="f.yaml")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_merge_keys_and_aliases_may_repeat_what_they_override():
    text = "base: &b {x: 1, y: 2}\nz:\n  <<: *b\n  x: 3\nw: *b\n"
    assert parse_yaml(text, source="f") == {
        "base": {"x": 1, "y": 2}, "z": {"x": 3, "y": 2}, "w": {"x": 1, "y": 2}
    }  # fmt: skip


def test_nesting_up_to_the_limit_loads_and_deeper_is_one_line():
    ok = "a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    assert parse_yaml(ok, source="f") is not None
    for depth in (MAX_DEPTH, 5000, 100_000):
        with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH} levels"):
            parse_yaml("a: " + "[" * depth + "]" * depth, source="f")
        with pytest.raises(ConfigError, match="nested deeper"):
            parse_yaml("a: " + "{b: " * depth + "1" + "}" * depth, source="f")


def test_aliases_that_expand_too_far_or_contain_themselves_are_refused():
    levels = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
        for p, n in zip("abcdef", "bcdefg", strict=True)
    )
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        parse_yaml(levels, source="f")
    for loop in ("a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [[[*a]]]\n"):
        with pytest.raises(ConfigError, match="refers to a collection that contains it"):
            parse_yaml(loop, source="f")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: 1\x00", "character #x0000"),
        ("a: \x1b[31m", "character #x001b"),
        ("a: !!python/object/apply:os.system [ls]\n", "could not determine a constructor"),
        ("a: [1\nb: 2\n", "not valid YAML at line"),
        ("\ta: 1\n", "not valid YAML at line 1"),
    ],
)
def test_what_yaml_refuses_is_one_line(text, says):
    with pytest.raises(ConfigError, match="f: ") as e:
        parse_yaml(text, source="f")
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"caf\xe9: 1\n", "not a text file"),
        ("a: 1\n".encode("utf-16"), "not a text file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
        (b"#" * (MAX_BYTES + 1), "too large"),
    ],
)
def test_files_that_are_not_yaml_text_are_one_line(tmp_path, content, says):
    path = tmp_path / "f.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=str(path)) as e:
        read_yaml_file(path)
    assert says in str(e.value)


def test_a_bom_and_an_empty_file_are_fine(tmp_path):
    (tmp_path / "bom.yaml").write_bytes("\ufeffa: 1\n".encode())
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "bom.yaml") == {"a": 1}
    assert read_yaml(tmp_path / "empty.yaml") == {}


def test_paths_that_are_not_files_are_one_line_and_never_block(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it would wait for a writer
    os.symlink("loop.yaml", tmp_path / "loop.yaml")
    cases = {
        tmp_path / "fifo.yaml": "not a regular file",
        "/dev/zero": "not a regular file",
        tmp_path: "is a folder",
        tmp_path / "loop.yaml": "too many levels of symbolic links",
        tmp_path / "missing.yaml": "no such file",
    }
    for path, says in cases.items():
        with pytest.raises(ConfigError, match=says):
            read_yaml_file(path)


def test_the_top_level_of_a_settings_file_is_a_mapping(tmp_path):
    (tmp_path / "l.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys, not a list"):
        read_yaml(tmp_path / "l.yaml")
    assert read_yaml_file(tmp_path / "l.yaml") == ["a"]  # read_yaml_file: whatever it holds
