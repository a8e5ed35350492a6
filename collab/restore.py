"""Restore: the edits that make a live document equal to another version of it. No I/O.

A restore must be a forward change. Written over the stored state, an old version would
be merged back away by every connected client's copy. So it is computed as ordinary edits
on a copy of the live document, root by root: what the two share at the start and the end
stays, the rest is deleted and the version's content inserted, formatting included. The
result is one update, which a room applies, stores and broadcasts like any client's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pycrdt

from collab.content import read_root
from collab.protocol import EMPTY_UPDATE
from collab.roots import RootType, root_types

Unit = tuple[Any, str]  # (a character or an embed, its attributes as sorted JSON)


class RootTypeConflict(ValueError):
    """A root has one type in the live document and another in the version."""


def restore_update(
    live_state: bytes, version_state: bytes, hints: Mapping[str, RootType] | None = None
) -> bytes:
    """The update that makes a document at `live_state` equal to `version_state`.

    Raises:
        RootTypeConflict: a root's type differs between the two.
        UpdateFormatError: a state cannot be read.
    """
    live_types = root_types(live_state, hints)
    version_types = root_types(version_state, hints)
    work: pycrdt.Doc[Any] = pycrdt.Doc()
    work.apply_update(live_state)
    version: pycrdt.Doc[Any] = pycrdt.Doc()
    version.apply_update(version_state)
    updates: list[bytes] = []
    work.observe(lambda event: updates.append(event.update))
    with work.transaction():
        for name in sorted(live_types.keys() | version_types.keys()):
            live_kind, version_kind = live_types.get(name), version_types.get(name)
            if live_kind and version_kind and live_kind != version_kind:
                raise RootTypeConflict(f"root {name!r} is {live_kind} now, {version_kind} then")
            kind = version_kind or live_kind
            if kind is None:
                continue
            source = read_root(version, name, kind) if version_kind else None
            _EQUALIZERS[kind](read_root(work, name, kind), source)
    return pycrdt.merge_updates(*updates) if updates else EMPTY_UPDATE


# --- text


def _units(delta: Sequence[tuple[Any, dict[str, Any] | None]]) -> list[Unit]:
    units: list[Unit] = []
    for chunk, attributes in delta:
        key = json.dumps(attributes or {}, sort_keys=True)
        if isinstance(chunk, str):
            units.extend((char, key) for char in chunk)
        else:
            units.append((_Embed(chunk), key))
    return units


class _Embed:
    """An embedded value in a text, compared by content."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._key = json.dumps(value, sort_keys=True, default=repr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Embed) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)


def _width(units: Sequence[Unit]) -> int:
    """Length in pycrdt's text offsets: UTF-8 bytes, 1 for an embed."""
    return sum(len(char.encode()) if isinstance(char, str) else 1 for char, _ in units)


def _common_ends(old: Sequence[Any], new: Sequence[Any]) -> tuple[int, int]:
    """Lengths of the common prefix and the common suffix (not overlapping)."""
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return prefix, suffix


def _equal_text(live: Any, source: Any) -> None:
    old = _units(live.diff())
    new = _units(source.diff()) if source is not None else []
    prefix, suffix = _common_ends(old, new)
    start = _width(old[:prefix])
    removed = _width(old[prefix : len(old) - suffix])
    if removed:
        del live[start : start + removed]
    _insert_units(live, start, new[prefix : len(new) - suffix])


def _insert_units(text: Any, at: int, units: Sequence[Unit]) -> None:
    """Insert runs of units, each with its attributes given explicitly: an insert without
    attributes would take on the formatting of the text before it."""
    index = 0
    while index < len(units):
        char, key = units[index]
        attributes = json.loads(key)
        if isinstance(char, _Embed):
            text.insert_embed(at, char.value, attributes)
            at += 1
            index += 1
            continue
        end = index
        while end < len(units) and isinstance(units[end][0], str) and units[end][1] == key:
            end += 1
        chunk = "".join(unit[0] for unit in units[index:end])
        text.insert(at, chunk, attributes)
        at += len(chunk.encode())
        index = end


# --- values and nested types


def _fingerprint(value: Any) -> Any:
    """A comparable picture of a value or shared type, with its kind."""
    if isinstance(value, pycrdt.Text | pycrdt.XmlText):
        attributes = _attributes(value) if isinstance(value, pycrdt.XmlText) else {}
        return (type(value).__name__, _units(value.diff()), _fingerprint(attributes))
    if isinstance(value, pycrdt.Map):
        return ("Map", {key: _fingerprint(item) for key, item in value.items()})
    if isinstance(value, pycrdt.Array):
        return ("Array", [_fingerprint(item) for item in value])
    if isinstance(value, pycrdt.XmlElement):
        attributes = {key: _fingerprint(item) for key, item in _attributes(value).items()}
        return ("XmlElement", value.tag, attributes, [_fingerprint(c) for c in value.children])
    if isinstance(value, pycrdt.XmlFragment):
        return ("XmlFragment", [_fingerprint(child) for child in value.children])
    return ("value", json.dumps(value, sort_keys=True, default=repr))


def _attributes(node: Any) -> dict[str, Any]:
    return dict(iter(node.attributes))


def _prelim(value: Any) -> Any:
    """What to insert for `value`: plain values as they are, shared types empty (to be
    filled once integrated, which formatting and nesting need)."""
    if isinstance(value, pycrdt.XmlElement):
        return pycrdt.XmlElement(value.tag)
    for kind in (pycrdt.Text, pycrdt.Map, pycrdt.Array, pycrdt.XmlText, pycrdt.XmlFragment):
        if isinstance(value, kind):
            return kind()
    return _plain(value)


def _plain(value: Any) -> Any:
    """pycrdt reads binary values as bytearray but only writes bytes."""
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _fill(target: Any, source: Any) -> None:
    """Copy the content of shared type `source` into the new, empty `target`."""
    if isinstance(source, pycrdt.XmlText | pycrdt.XmlElement):
        for key, item in _attributes(source).items():
            target.attributes[key] = item
    if isinstance(source, pycrdt.Text | pycrdt.XmlText):
        _insert_units(target, 0, _units(source.diff()))
    elif isinstance(source, pycrdt.Map):
        for key, item in source.items():
            target[key] = _prelim(item)
            _fill(target[key], item)
    elif isinstance(source, pycrdt.Array):
        for index, item in enumerate(source):
            target.insert(index, _prelim(item))
            _fill(target[index], item)
    elif isinstance(source, pycrdt.XmlElement | pycrdt.XmlFragment):
        for child in source.children:
            _fill(target.children.append(_prelim(child)), child)


def _equal_map(live: Any, source: Any) -> None:
    wanted = dict(source.items()) if source is not None else {}
    for key in [key for key in live.keys() if key not in wanted]:
        del live[key]
    for key, item in wanted.items():
        if key not in live or _fingerprint(live[key]) != _fingerprint(item):
            live[key] = _prelim(item)
            _fill(live[key], item)


def _equal_sequence(
    live: Any, items: list[Any], new: list[Any], insert: Callable[..., Any]
) -> None:
    old = [_fingerprint(item) for item in items]
    prefix, suffix = _common_ends(old, [_fingerprint(item) for item in new])
    if len(old) - suffix > prefix:
        del live[prefix : len(old) - suffix]
    for offset, item in enumerate(new[prefix : len(new) - suffix]):
        _fill(insert(prefix + offset, _prelim(item)), item)


def _equal_array(live: Any, source: Any) -> None:
    def insert(index: int, value: Any) -> Any:
        live.insert(index, value)
        return live[index]

    _equal_sequence(live, list(live), list(source) if source is not None else [], insert)


def _equal_xml(live: Any, source: Any) -> None:
    children = list(source.children) if source is not None else []
    _equal_sequence(live.children, list(live.children), children, live.children.insert)


_EQUALIZERS: dict[RootType, Callable[[Any, Any], None]] = {
    "text": _equal_text,
    "map": _equal_map,
    "array": _equal_array,
    "xml": _equal_xml,
}
