"""Random multi-client Yjs documents for tests: every root type, non-ASCII text,
formatting, binary and nested values, clients syncing at random moments."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pycrdt

from collab.yjs.restore import restore_updates
from collab.yjs.update import decode_state_vector

TEXTS = ["a", "hello ", "xyz", "Zoë", "😀!", "日本語"]


def edit(doc: pycrdt.Doc[Any], rng: random.Random, step: int) -> None:
    """One random transaction touching every root type."""
    text = doc.get("text", type=pycrdt.Text)
    plain = doc.get("plain", type=pycrdt.Text)
    mapping = doc.get("map", type=pycrdt.Map)
    array = doc.get("array", type=pycrdt.Array)
    xml = doc.get("xml", type=pycrdt.XmlFragment)
    with doc.transaction():
        text += rng.choice(TEXTS)
        plain.insert(rng.randint(0, len(plain)), rng.choice(["ab", "c", "defg"]))
        if len(plain) > 4 and rng.random() < 0.4:
            start = rng.randint(0, len(plain) - 3)
            del plain[start : start + 2]
        if rng.random() < 0.2:
            plain.format(0, min(2, len(plain)), {"bold": True})
        mapping[f"k{step % 5}"] = {"n": step, "list": [1, 2.5, None, True, "s"]}
        if rng.random() < 0.2 and len(mapping) > 1:
            del mapping[rng.choice(list(mapping.keys()))]
        array.append(step)
        if rng.random() < 0.1:
            array.append(b"\x00bin")
        if len(array) > 3 and rng.random() < 0.2:
            del array[0]
        if rng.random() < 0.15:
            xml.children.append(
                pycrdt.XmlElement("p", {"class": "x"}, [pycrdt.XmlText(rng.choice(TEXTS))])
            )


def restore(doc: pycrdt.Doc[Any], version_state: bytes) -> None:
    """Make `doc` equal to `version_state` as the server does: its restore's updates, in
    order."""
    for update in restore_updates(doc.get_update(), version_state):
        doc.apply_update(update)


def restored(live_state: bytes, version_state: bytes) -> bytes:
    """`live_state` after a restore to `version_state`."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(live_state)
    restore(doc, version_state)
    return doc.get_update()


def random_doc(seed: int, clients: int = 3, steps: int = 120) -> pycrdt.Doc[Any]:
    """A document edited by `clients` replicas that sync now and then."""
    return _replicated(seed, clients, steps, edit)


def _replicated(
    seed: int,
    clients: int,
    steps: int,
    change: Callable[[pycrdt.Doc[Any], random.Random, int], None],
) -> pycrdt.Doc[Any]:
    """What `clients` replicas make of `steps` random changes, syncing now and then so
    that their inserts meet concurrently: all of it merged."""
    rng = random.Random(seed)
    replicas: list[pycrdt.Doc[Any]] = [pycrdt.Doc() for _ in range(clients)]
    for step in range(steps):
        doc = rng.choice(replicas)
        change(doc, rng, step)
        if rng.random() < 0.3:
            other = rng.choice(replicas)
            other.apply_update(doc.get_update(other.get_state()))
    merged: pycrdt.Doc[Any] = pycrdt.Doc()
    for doc in replicas:
        merged.apply_update(doc.get_update())
    return merged


def content(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """Everything a user could see in a document made by `edit`, and its state vector."""
    return {
        "state_vector": decode_state_vector(doc.get_state()),
        "text": str(doc.get("text", type=pycrdt.Text)),
        "plain": normalized(doc.get("plain", type=pycrdt.Text).diff()),
        "map": doc.get("map", type=pycrdt.Map).to_py(),
        "array": doc.get("array", type=pycrdt.Array).to_py(),
        "xml": str(doc.get("xml", type=pycrdt.XmlFragment)),
    }


def normalized(delta: list[tuple[Any, dict[str, Any] | None]]) -> list[tuple[Any, dict[str, Any]]]:
    """A text delta with adjacent runs of equal formatting joined: how a text is split
    into items is not part of what it says."""
    runs: list[tuple[Any, dict[str, Any]]] = []
    for chunk, attributes in delta:
        attributes = attributes or {}
        if (
            runs
            and isinstance(chunk, str)
            and isinstance(runs[-1][0], str)
            and runs[-1][1] == attributes
        ):
            runs[-1] = (runs[-1][0] + chunk, attributes)
        else:
            runs.append((chunk, attributes))
    return runs


# --- nested documents of every type


# ASCII: pycrdt's text offsets are UTF-8 bytes, and a random cut inside a character
# makes Yrs panic; non-ASCII text is exercised by `random_doc`.
_WORDS = ["a", "hello ", "xyz", "Q"]
SHARED = (
    pycrdt.Text,
    pycrdt.Map,
    pycrdt.Array,
    pycrdt.XmlText,
    pycrdt.XmlElement,
    pycrdt.XmlFragment,
)
NESTED_ROOTS = {
    "text": pycrdt.Text,
    "map": pycrdt.Map,
    "array": pycrdt.Array,
    "xml": pycrdt.XmlFragment,
}
_VALUES: list[Any] = [
    1,
    2.5,
    -7,
    2**40,
    "s",
    "Zoë 😀",
    None,
    True,
    b"\x00\xffbin",
    [1, "a"],
    {"k": {"n": [None]}},
]
_FORMATS: list[dict[str, Any]] = [
    {"bold": True},
    {"italic": True},
    {"link": {"href": "x"}},
    {"bold": None},
]


def _containers(value: Any) -> list[Any]:
    """`value` and every shared type inside it."""
    found = [value]
    if isinstance(value, pycrdt.Map):
        items: list[Any] = list(value.values())
    elif isinstance(value, pycrdt.Array):
        items = list(value)
    elif isinstance(value, pycrdt.Text | pycrdt.XmlText):
        items = [chunk for chunk, _ in value.diff()]
    elif isinstance(value, pycrdt.XmlElement | pycrdt.XmlFragment):
        items = list(value.children)
    else:
        items = []
    for item in items:
        if isinstance(item, SHARED):
            found.extend(_containers(item))
    return found


def _new_type(rng: random.Random, xml: bool) -> Any:
    if xml:
        if rng.random() < 0.5:
            return pycrdt.XmlText(rng.choice(_WORDS))
        return pycrdt.XmlElement(rng.choice(["p", "h1", "li"]), {"n": rng.randint(0, 9)})
    return rng.choice(
        [
            lambda: pycrdt.Text(rng.choice(_WORDS)),
            lambda: pycrdt.Map({"a": rng.choice(_VALUES)}),
            lambda: pycrdt.Array([rng.choice(_VALUES)]),
            lambda: pycrdt.XmlFragment([pycrdt.XmlElement("q")]),
        ]
    )()


def nested_edit(doc: pycrdt.Doc[Any], rng: random.Random) -> None:
    """One random change somewhere in a nested document (roots: NESTED_ROOTS)."""
    containers = [
        c for name, kind in NESTED_ROOTS.items() for c in _containers(doc.get(name, type=kind))
    ]
    target = rng.choice(containers)
    with doc.transaction():
        if isinstance(target, pycrdt.Text | pycrdt.XmlText):
            size = len(target)
            roll = rng.random()
            if roll < 0.45 or size < 2:
                target.insert(
                    rng.randint(0, size), rng.choice(_WORDS), rng.choice([None, *_FORMATS])
                )
            elif roll < 0.6:
                start = rng.randint(0, size - 1)
                del target[start : min(size, start + rng.randint(1, 3))]
            elif roll < 0.75:
                start = rng.randint(0, size - 1)
                target.format(start, min(size, start + 2), rng.choice(_FORMATS))
            elif roll < 0.85:
                target.insert_embed(rng.randint(0, size), {"image": rng.choice(_WORDS)})
            elif isinstance(target, pycrdt.XmlText) and rng.random() < 0.5:
                target.attributes[rng.choice(["__type", "dir"])] = rng.choice(["p", "ltr", 3])
            else:
                embedded = pycrdt.Map({"__type": "text", "__format": rng.randint(0, 3)})
                if isinstance(target, pycrdt.XmlText) and rng.random() < 0.5:
                    embedded = pycrdt.XmlText(rng.choice(_WORDS))
                target.insert_embed(rng.randint(0, size), embedded)
        elif isinstance(target, pycrdt.Map):
            key = rng.choice("abcde")
            if key in target and rng.random() < 0.3:
                del target[key]
            else:
                target[key] = _new_type(rng, False) if rng.random() < 0.3 else rng.choice(_VALUES)
        elif isinstance(target, pycrdt.Array):
            if len(target) and rng.random() < 0.3:
                del target[rng.randrange(len(target))]
            else:
                value = _new_type(rng, False) if rng.random() < 0.3 else rng.choice(_VALUES)
                target.insert(rng.randint(0, len(target)), value)
        else:  # XmlFragment or XmlElement
            children = target.children
            if len(children) and rng.random() < 0.25:
                del children[rng.randrange(len(children))]
            elif isinstance(target, pycrdt.XmlElement) and rng.random() < 0.25:
                target.attributes[rng.choice(["class", "level"])] = rng.choice(_VALUES[:6])
            else:
                children.insert(rng.randint(0, len(children)), _new_type(rng, True))


def random_nested_doc(seed: int, clients: int = 3, steps: int = 80) -> pycrdt.Doc[Any]:
    """A nested document edited by `clients` replicas that sync now and then."""
    return _replicated(seed, clients, steps, lambda doc, rng, _: nested_edit(doc, rng))
