"""collab: a real-time collaborative document server speaking the Yjs y-websocket protocol."""

__version__ = "0.1.0"
