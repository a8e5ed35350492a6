"""The one error tree of collab. The core raises these; the edges translate them.

Each class carries its HTTP status, its WebSocket close code and a stable `code` for the
API's JSON errors; a subclass inherits them. These attributes are the only mapping:
`api.py` answers with `status` (and `code`), `ws.py` refuses an upgrade with `status`
and closes a connection with `close_code`, the CLI's `RemoteAccess` rebuilds the class
from `code` (`error_class`).

    class                        code               HTTP  close
    CollabError                  error               500  1011
     +-- ProtocolError           protocol_error      500  1002  malformed frame
     |    +-- UnsupportedMessage unsupported_message 500  1003  a message clients may not send
     |    +-- UpdateRejected     update_rejected     500  1002  a Yjs update that cannot apply
     +-- BadRequest              bad_request         400  4400  input the API refuses
     |    +-- InvalidDocName     invalid_doc_name    400  4400  a name that fails validation
     |    +-- UnsupportedMediaType unsupported_media_type 415 4400  a body of a type not taken
     +-- NotFound                not_found           404  4404
     |    +-- DocNotFound        doc_not_found       404  4404  no such document (or deleted)
     |    +-- VersionNotFound    version_not_found   404  4404  no such version of a document
     +-- Conflict                conflict            409  4409  cannot apply to this state
     +-- Unauthorized            unauthorized        401  4401  no valid credentials
     |    +-- TokenExpired       token_expired       401  4501  the token's time is up
     +-- Forbidden               forbidden           403  4403  not allowed (or revoked)
     +-- TooMany                 too_many            429  4429  a limit is reached (503 in total)
     +-- QuotaExceeded           quota_exceeded      413  4413  past the document's size quota
     +-- StoreError              store_error         503  1011  the database failed; retried
     +-- DatabaseInUse           database_in_use     503  1011  another process holds it

A ProtocolError only ever comes from a WebSocket frame, so it has no HTTP status of its
own. y-websocket 3.1 does not reconnect after a close code in 4400-4499 and treats
4500-4599 as "try again later". Closes that are no error (1001 on shutdown, 1013 for a
peer that reads too slowly) are `peer.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar


class CollabError(Exception):
    """Base class of every error collab raises on purpose."""

    code: ClassVar[str] = "error"
    status: int = 500  # an instance may say more (see TooMany)
    close_code: ClassVar[int] = 1011
    headers: ClassVar[Mapping[str, str]] = {}  # sent with an HTTP answer of this error

    def as_json(self) -> dict[str, Any]:
        """The API's error body."""
        return error_json(self.status, self.code, str(self))


class ProtocolError(CollabError):
    """A frame that is not a well-formed y-websocket message."""

    code = "protocol_error"
    close_code = 1002


class UnsupportedMessage(ProtocolError):
    """A well-formed frame of a message type this server does not accept from clients."""

    code = "unsupported_message"
    close_code = 1003


class UpdateRejected(ProtocolError):
    """A Yjs update that the document refused to apply; nothing was changed."""

    code = "update_rejected"


class BadRequest(CollabError):
    """Input the API cannot take: a malformed body, an unknown format, a bad label."""

    code = "bad_request"
    status = 400
    close_code = 4400


class InvalidDocName(BadRequest):
    """A document name that is empty, too long, or holds characters we do not accept."""

    code = "invalid_doc_name"


class UnsupportedMediaType(BadRequest):
    """A request body of a content type the endpoint does not take."""

    code = "unsupported_media_type"
    status = 415


class NotFound(CollabError):
    """Something named in the request does not exist."""

    code = "not_found"
    status = 404
    close_code = 4404


class DocNotFound(NotFound):
    """No document of that name is stored or loaded."""

    code = "doc_not_found"


class VersionNotFound(NotFound):
    """The document has no version with that id."""

    code = "version_not_found"


class Conflict(CollabError):
    """The request is well formed but cannot apply to the document as it is."""

    code = "conflict"
    status = 409
    close_code = 4409


class Unauthorized(CollabError):
    """No credentials, or ones that are malformed, forged or expired."""

    code = "unauthorized"
    status = 401
    close_code = 4401
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class TokenExpired(Unauthorized):
    """A token past its expiry: providers reconnect with a refreshed one."""

    code = "token_expired"
    close_code = 4501


class Forbidden(CollabError):
    """Valid credentials that do not allow this (another document, too low a permission,
    a revoked grant, an Origin not allowed)."""

    code = "forbidden"
    status = 403
    close_code = 4403


class TooMany(CollabError):
    """A connection limit is reached: 429, or 503 when the whole server is full."""

    code = "too_many"
    status = 429
    close_code = 4429

    def __init__(self, message: str, *, server_full: bool = False) -> None:
        super().__init__(message)
        self.server_full = server_full
        if server_full:
            self.status = 503


class QuotaExceeded(CollabError):
    """An update would grow a document past its size quota; nothing was changed."""

    code = "quota_exceeded"
    status = 413
    close_code = 4413


class StoreError(CollabError):
    """The store could not read or write."""

    code = "store_error"
    status = 503


class DatabaseInUse(CollabError):
    """Another collab process (a server, or a CLI command) is using the database."""

    code = "database_in_use"
    status = 503


# The code api.py gives an error of HTTP itself (no such route or method, a body too large).
HTTP_ERROR = "http_error"


def error_classes() -> Iterator[type[CollabError]]:
    """Every class of the tree, each before its subclasses (subclasses made elsewhere too)."""
    pending: list[type[CollabError]] = [CollabError]
    while pending:
        kind = pending.pop()
        yield kind
        pending.extend(reversed(kind.__subclasses__()))


def error_json(status: int, code: str, message: str) -> dict[str, Any]:
    """The API's JSON for an error; `error_from_json` reads it back."""
    return {"error": {"status": status, "code": code, "message": message}}


def error_from_json(status: int, body: Any) -> CollabError:
    """The error an API answer of `status` with the decoded JSON `body` stands for, of
    its code's class; any other body (text, say) gives its status' class."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return error_class(None, status)(body if isinstance(body, str) else f"HTTP {status}")
    code, message = error.get("code"), error.get("message")
    kind = error_class(code if isinstance(code, str) else None, status)
    return kind(message if isinstance(message, str) else f"HTTP {status}")


def error_class(code: str | None, status: int) -> type[CollabError]:
    """The class whose code is `code`; failing that, the first with `status` (the most
    general one: a 404 without a known code is a NotFound); failing that, CollabError."""
    by_status = None
    for kind in error_classes():
        if kind.code == code:
            return kind
        if by_status is None and kind.status == status:
            by_status = kind
    return by_status or CollabError
