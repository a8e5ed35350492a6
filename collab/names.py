"""What a document name may be, and how it is read from a URL path. Pure."""

from __future__ import annotations

import unicodedata

from collab.errors import InvalidDocName


def check_doc_name(name: str, max_length: int) -> str:
    """Return `name` if it is an acceptable document name.

    A name is 1 to `max_length` characters with no control characters, no surrounding
    whitespace and no `.` or `..` path segment; it may contain `/`.

    Raises:
        InvalidDocName: with the reason.
    """
    if not name:
        raise InvalidDocName("document name is empty")
    if len(name) > max_length:
        raise InvalidDocName(f"document name is longer than {max_length} characters")
    if name != name.strip():
        raise InvalidDocName("document name starts or ends with whitespace")
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidDocName(f"document name holds the control character {char!r}")
    if any(segment in (".", "..") for segment in name.split("/")):
        raise InvalidDocName("document name holds a '.' or '..' segment")
    return name


def doc_name_from_path(path: str, prefix: str, max_length: int) -> str:
    """The document name in a (percent-decoded) URL path under `prefix`.

    Stock clients put the name right after the server URL without encoding it, so it may
    hold `/`; leading slashes are not part of it (`ws://host/` + `/name` is common).

    Raises:
        InvalidDocName: the path is not under `prefix` or the name is not acceptable.
    """
    if not path.startswith(prefix):
        raise InvalidDocName(f"path is not under {prefix}")
    return check_doc_name(path[len(prefix) :].lstrip("/"), max_length)
