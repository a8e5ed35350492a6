"""The one error tree of collab. The core raises these; the edges translate them.

    CollabError
     +-- ProtocolError            malformed frame                 -> close 1002
     |    +-- UnsupportedMessage  well-formed, unknown message    -> close 1003
     |    +-- UpdateRejected      a Yjs update that cannot apply  -> close 1002
     +-- InvalidDocName           room name fails validation      -> HTTP 400
     +-- BadRequest               other input the API refuses     -> HTTP 400
     +-- NotFound                                                 -> HTTP 404
     |    +-- DocNotFound         no such document
     |    +-- VersionNotFound     no such version of a document
     +-- Conflict                 the request cannot apply to this state -> HTTP 409
     +-- Unauthorized             no valid credentials            -> HTTP 401
     +-- Forbidden                credentials that do not allow it -> HTTP 403
     +-- TooMany                  a connection limit is reached   -> HTTP 429 (503 in total)
     +-- QuotaExceeded            an update would grow a document past its quota -> 413
     +-- StoreError               the database failed             -> HTTP 503, retried by rooms
     +-- DatabaseInUse            another collab process holds the database

`ws.py` maps these to WebSocket close codes for the affected peer only; `api.py` maps them
to HTTP statuses.
"""


class CollabError(Exception):
    """Base class of every error collab raises on purpose."""


class ProtocolError(CollabError):
    """A frame that is not a well-formed y-websocket message."""


class UnsupportedMessage(ProtocolError):
    """A well-formed frame of a message type this server does not accept from clients."""


class UpdateRejected(ProtocolError):
    """A Yjs update that the document refused to apply; nothing was changed."""


class InvalidDocName(CollabError):
    """A document name that is empty, too long, or holds characters we do not accept."""


class BadRequest(CollabError):
    """Input the API cannot take: a malformed body, an unknown format, a bad label."""


class NotFound(CollabError):
    """Something named in the request does not exist."""


class DocNotFound(NotFound):
    """No document of that name is stored or loaded."""


class VersionNotFound(NotFound):
    """The document has no version with that id."""


class Conflict(CollabError):
    """The request is well formed but cannot apply to the document as it is."""


class Unauthorized(CollabError):
    """No credentials, or ones that are malformed, forged or expired."""


class Forbidden(CollabError):
    """Valid credentials that do not allow this (another document, too low a permission,
    a revoked grant, an Origin not allowed)."""


class TooMany(CollabError):
    """A connection limit is reached."""

    def __init__(self, message: str, *, server_full: bool = False) -> None:
        super().__init__(message)
        self.server_full = server_full


class QuotaExceeded(CollabError):
    """An update would grow a document past its size quota; nothing was changed."""


class StoreError(CollabError):
    """The store could not read or write."""


class DatabaseInUse(CollabError):
    """Another collab process (a server, or a CLI command) is using the database."""
