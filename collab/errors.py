"""The one error tree of collab. The core raises these; the edges translate them.

    CollabError
     +-- ProtocolError            malformed frame                 -> close 1002
     |    +-- UnsupportedMessage  well-formed, unknown message    -> close 1003
     |    +-- UpdateRejected      a Yjs update that cannot apply  -> close 1002
     +-- InvalidDocName           room name fails validation      -> HTTP 400
     +-- StoreError               the database failed             -> HTTP 503, retried by rooms

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


class StoreError(CollabError):
    """The store could not read or write."""
