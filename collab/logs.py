"""What a log line looks like and what it may say: the text and JSON formats, the fields a
line carries about the connection it was logged for (document, peer, close code), and the
redaction that keeps credentials (tokens, URL passwords) out of both formats.

Standard library only; imports nothing of collab, so every module may log through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

# The text format as it has always been: pipelines that parse it keep working.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Record attributes a JSON line carries when a call (`extra=`) or the scope gives them.
FIELDS = ("document", "peer", "close_code", "status")

# (a word each pattern needs, lower case: most lines have none, and skip the regexes)
_REDACTIONS = (
    # ?token=... in a URL or an echoed request line (the "..." of our own hint stays).
    ("token=", re.compile(r"(?i)\b((?:access_)?token=)(?!\.\.\.)[^&\s'\"#\\]+"), r"\1***"),
    # Authorization: Bearer ..., as a header or a request echoed by the HTTP parser.
    ("bearer", re.compile(r"(?i)\b(bearer\s+)[^\s'\",;\\]+"), r"\1***"),
    # Cookie headers echoed by the HTTP parser: an authorizer may read sessions there.
    ("cookie", re.compile(r"(?i)\b(cookie:\s*)[^\r\n'\"\\]+"), r"\1***"),
    # scheme://user:password@host (PostgreSQL, Redis); the last @ of the authority ends it.
    ("://", re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*):[^\s/?#]*@"), r"\1:***@"),
    # A JWT wherever it is echoed: base64url header (always `{"...`), payload, signature.
    ("eyj", re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "***"),
)


def redact(text: str) -> str:
    """`text` with tokens, Bearer credentials, cookies and URL passwords replaced by ***."""
    lowered = text.lower()
    for needed, pattern, replacement in _REDACTIONS:
        if needed in lowered:
            text = pattern.sub(replacement, text)
    return text


# --- the scope: fields every line logged while serving one request carries


@dataclass(frozen=True, slots=True)
class _Scope:
    owner: weakref.ref[asyncio.Task[Any]] | None  # None: entered outside any task
    fields: dict[str, object]


_scope: ContextVar[_Scope | None] = ContextVar("collab_log_scope", default=None)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop here: a worker thread
        return None


def _owned(scope: _Scope) -> bool:
    # asyncio copies the context into every task and callback started in the scope, but
    # those may serve every connection (a load shared by joiners, the commit pipeline,
    # the SQLite reader): a line of theirs must not name the connection that woke them.
    task = _current_task()
    if scope.owner is None:
        return task is None
    return task is not None and scope.owner() is task


@contextmanager
def context(**fields: object) -> Iterator[None]:
    """Give `fields` to every record the current task logs inside the block (not to the
    tasks it starts). Nested blocks add to the outer one's fields."""
    task = _current_task()
    outer = _scope.get()
    inherited = outer.fields if outer is not None and _owned(outer) else {}
    token = _scope.set(
        _Scope(weakref.ref(task) if task is not None else None, {**inherited, **fields})
    )
    try:
        yield
    finally:
        _scope.reset(token)


def add(**fields: object) -> None:
    """Add `fields` to the current task's scope until it ends (the document, say, once
    the request's path is read); outside a scope, nothing."""
    scope = _scope.get()
    if scope is not None and _owned(scope):
        _scope.set(_Scope(scope.owner, {**scope.fields, **fields}))


class ScopeFilter(logging.Filter):
    """Copies the scope's fields onto each record, unless the call gave its own with
    `extra=`: a line about another connection (one dropped for being slow while this one
    sent) names that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        if scope is not None and _owned(scope):
            for name, value in scope.fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


# --- the formats


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, as always; credentials redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601 UTC, milliseconds), level, logger, message,
    the FIELDS a record has, and a traceback as one `exception` string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        # ASCII escapes: a name with a lone surrogate still writes, on one line.
        return json.dumps(line, default=str)


def setup(level: str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Log records of `level` and above to `stream` (stderr) in `log_format`, unless
    logging was already set up (as `logging.basicConfig`, whose rules these are)."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ScopeFilter())
    logging.basicConfig(level=level, handlers=[handler])
