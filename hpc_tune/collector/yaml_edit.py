"""Edit a user's YAML file in place: ruamel.yaml round-trip, so that comments, key order, quoting and layout
of everything untouched survive (``hpctune next`` writes the next study from the user's own hpctune.yaml).

ruamel keeps the full-line comments that follow a block on the block's last entry. A key appended to that
block, or a block value replaced, would leave them stranded before the new key or lose them: ``put`` and
``drop`` move them so that they still follow the block they followed.

New values are written as PyYAML writes them (``default_flow_style=None``: collections of scalars on one
line) and floats as PyYAML reads them back (``1.0e-05``: for PyYAML, ``1e-05`` is a string), since
``load_config`` reads the file with PyYAML.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.tokens import CommentToken

__all__ = ["dump", "drop", "flow", "load", "put"]

WIDTH = 110
_OPENER = re.compile(r"[^#\s-][^#]*:\s*(#.*)?$")  # `key:` with its value on the next lines

Container = CommentedMap | CommentedSeq
# Where ruamel keeps the comment after an entry: a mapping's key at position 2, a sequence's index at 0.
Entry = tuple[Container, Any, int]


def load(text: str) -> tuple[Any, YAML]:
    """The document and the YAML instance that writes it back with the file's own indentation."""
    mapping, offset = _indents(text)
    rt = YAML(typ="rt")
    rt.width = WIDTH
    rt.preserve_quotes = True
    rt.allow_duplicate_keys = True  # PyYAML keeps the last one; so did the config that loaded
    rt.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    rt.representer.add_representer(float, _represent_float)
    return rt.load(text), rt


def dump(doc: Any, rt: YAML) -> str:
    out = io.StringIO()
    rt.dump(doc, out)
    return out.getvalue()


def put(mapping: CommentedMap, key: str, value: Any) -> None:
    """``mapping[key] = value``, the comments that followed the entry (or the block) still after it."""
    if key in mapping:
        trailing = _detach(_last_entry_of(mapping, key)) if _is_block(mapping[key]) else None
    else:
        trailing = _detach(_last_entry(mapping))
    mapping[key] = value
    if trailing:
        _attach(_last_entry_of(mapping, key), trailing)


def drop(mapping: CommentedMap, key: str) -> None:
    """``del mapping[key]``; the full-line comments that followed it now follow the entry before it."""
    keys = list(mapping)
    trailing = _detach(_last_entry_of(mapping, key))
    del mapping[key]
    before = keys[keys.index(key) - 1] if keys.index(key) > 0 else None
    if trailing and before is not None:
        _attach(_last_entry_of(mapping, before), trailing)


def flow(value: Any) -> Any:
    """A new value in the style PyYAML's ``default_flow_style=None`` writes: collections of scalars on one
    line (``{type: float, low: 0.001, high: 0.1}``, ``[adam, sgd]``), the others as blocks."""
    if isinstance(value, Mapping):
        out = CommentedMap((k, flow(v)) for k, v in value.items())
        if not any(isinstance(v, Mapping | list | tuple) for v in value.values()):
            out.fa.set_flow_style()
        return out
    if isinstance(value, list | tuple):
        seq = CommentedSeq(flow(v) for v in value)
        if not any(isinstance(v, Mapping | list | tuple) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


# --------------------------------------------------------------------------------------------- comments
def _is_block(value: Any) -> bool:
    return isinstance(value, CommentedMap | CommentedSeq) and len(value) > 0 and not value.fa.flow_style()


def _last_entry_of(container: Container, key: Any) -> Entry:
    """The entry the block of ``container[key]`` ends with (itself for a scalar or a flow collection)."""
    value = container[key]
    if _is_block(value):
        return _last_entry(value) or (container, key, _position(container))
    return container, key, _position(container)


def _last_entry(node: Container) -> Entry | None:
    if not _is_block(node):
        return None
    last = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
    return _last_entry_of(node, last)


def _position(container: Container) -> int:
    return 2 if isinstance(container, CommentedMap) else 0


def _detach(entry: Entry | None) -> str | None:
    """The full-line comments after ``entry`` (its own end-of-line comment stays), taken off it."""
    if entry is None:
        return None
    container, key, position = entry
    tokens = container.ca.items.get(key)
    token = tokens[position] if tokens and len(tokens) > position else None
    if token is None:
        return None
    own, newline, rest = token.value.partition("\n")
    if not rest.strip():
        return None
    if own.strip():
        token.value = own + newline
    else:
        tokens[position] = None
    return rest


def _attach(entry: Entry, comments: str) -> None:
    container, key, position = entry
    tokens = container.ca.items.setdefault(key, [None, None, None, None])
    while len(tokens) <= position:
        tokens.append(None)
    token = tokens[position]
    if token is None:
        tokens[position] = CommentToken("\n" + comments, CommentMark(0), None)
    else:
        token.value = token.value.rstrip("\n") + "\n" + comments


# --------------------------------------------------------------------------------------------- style
def _indents(text: str) -> tuple[int, int]:
    """The file's mapping indent and the offset of its sequences' dashes, so that the blocks ruamel writes
    again look as the user wrote them (ruamel does not guess the two apart)."""
    mapping: int | None = None
    offset: int | None = None
    opener: int | None = None  # the indent of the last `key:` whose block follows
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "---", "...")):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if opener is not None:
            if stripped.startswith("- ") and offset is None and indent >= opener:
                offset = indent - opener
            elif not stripped.startswith("-") and mapping is None and indent > opener:
                mapping = indent - opener
        opener = indent if _OPENER.match(stripped) else None
        if mapping is not None and offset is not None:
            break
    return mapping or 2, offset or 0


def _represent_float(representer: RoundTripRepresenter, value: float) -> Any:
    text = yaml.safe_dump(value).split("\n", 1)[0]
    return representer.represent_scalar("tag:yaml.org,2002:float", text)
