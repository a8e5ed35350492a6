"""Random multi-client Yjs documents for tests: every root type, non-ASCII text,
formatting, binary and nested values, clients syncing at random moments."""

from __future__ import annotations

import random
from typing import Any

import pycrdt

from collab.update import decode_state_vector

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


def random_doc(seed: int, clients: int = 3, steps: int = 120) -> pycrdt.Doc[Any]:
    """A document edited by `clients` replicas that sync now and then."""
    rng = random.Random(seed)
    replicas: list[pycrdt.Doc[Any]] = [pycrdt.Doc() for _ in range(clients)]
    for step in range(steps):
        doc = rng.choice(replicas)
        edit(doc, rng, step)
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
