"""Document names: what is accepted, and how they are read from paths."""

from __future__ import annotations

import pytest

from collab.errors import InvalidDocName
from collab.names import check_doc_name, doc_name_from_path


@pytest.mark.parametrize(
    "name", ["doc", "team/notes/today", "Zoë's notes", "日本", "a b", "x" * 64]
)
def test_acceptable_names(name: str) -> None:
    assert check_doc_name(name, 64) == name


@pytest.mark.parametrize(
    "name", ["", " lead", "trail ", "a\x00b", "tab\there", "a/../b", "./a", "..", "x" * 65]
)
def test_unacceptable_names(name: str) -> None:
    with pytest.raises(InvalidDocName):
        check_doc_name(name, 64)


def test_name_is_the_path_under_the_prefix_without_leading_slashes() -> None:
    assert doc_name_from_path("/doc", "/", 64) == "doc"
    assert doc_name_from_path("//doc", "/", 64) == "doc"
    assert doc_name_from_path("/collab/a/b", "/collab/", 64) == "a/b"
    with pytest.raises(InvalidDocName):
        doc_name_from_path("/other/a", "/collab/", 64)
