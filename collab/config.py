"""Settings: the one typed configuration object, filled once from CLI flags and `COLLAB_*`
environment variables and passed to every part. Nothing else in collab reads the environment.
Values in a small language (retention tiers, root type hints) are checked here, by the
pure modules that read them.

Every field's metadata carries its help text; the CLI derives `--flag-name` and
`COLLAB_FLAG_NAME` from the field name, so adding a field here adds its flag and variable.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from collab.auth import MIN_SECRET_LENGTH, Authorizer
from collab.hooks import Hooks, load_hooks
from collab.logs import LogFormat, redact
from collab.store.retention import parse_policy
from collab.yjs.roots import parse_hints

KiB = 1024
MiB = 1024 * KiB

SQLiteSync = Literal["normal", "full"]
LogLevel = Literal["debug", "info", "warning", "error"]
AuthMode = Literal["open", "token"]
EventLoop = Literal["asyncio", "uvloop", "auto"]
Switch = Literal["on", "off"]


class DatabaseURL(str):
    """A PostgreSQL URL; its password never shows in a repr or a log (`str()` keeps it,
    for the driver)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked!r})"

    @property
    def masked(self) -> str:
        return redact(str(self))


def parse_db(text: str) -> Path | DatabaseURL:
    """A PostgreSQL URL, or else the path of a SQLite file."""
    if text.startswith(("postgresql://", "postgres://")):
        return DatabaseURL(text)
    return Path(text)


def describe_db(db: Path | DatabaseURL) -> str:
    """The database as logs and messages name it (no password)."""
    return db.masked if isinstance(db, DatabaseURL) else str(db)


class Secret(str):
    """A string that never shows itself in a repr or a log."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


def load_authorizer(path: str) -> Authorizer:
    """`package.module:function` -> that function (the CLI's way to name an authorizer).

    Raises:
        ValueError: the module or the function cannot be found.
    """
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot load authorizer {path!r}: {exc}") from exc
    if not callable(found):
        raise ValueError(f"authorizer {path!r} is not callable")
    return cast(Authorizer, found)


MIN_WEBHOOK_SECRET_BYTES, MAX_WEBHOOK_SECRET_BYTES = 24, 64  # the Standard Webhooks range


def parse_webhooks(text: str) -> tuple[str, ...]:
    """Comma-separated webhook URLs -> each checked, in order, without repeats.

    Raises:
        ValueError: one is not an absolute http(s) URL.
    """
    urls = [part.strip() for part in text.split(",") if part.strip()]
    for url in urls:
        check_webhook_url(url)
    return tuple(dict.fromkeys(urls))


def check_webhook_url(url: str) -> None:
    """Raises: ValueError: `url` is not an absolute http(s) URL."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"a webhook is an http:// or https:// URL with a host, not {url!r}")


def check_webhook_secret(secret: str) -> None:
    """Raises: ValueError: `secret` is not whsec_ + the base64 of 24 to 64 bytes."""
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body, validate=True) if body != secret else b""
    except binascii.Error:
        key = b""
    if not MIN_WEBHOOK_SECRET_BYTES <= len(key) <= MAX_WEBHOOK_SECRET_BYTES:
        raise ValueError(
            "--webhook needs --webhook-secret (or COLLAB_WEBHOOK_SECRET): whsec_ and the "
            f"base64 of {MIN_WEBHOOK_SECRET_BYTES} to {MAX_WEBHOOK_SECRET_BYTES} random bytes, "
            "e.g. python -c \"import base64, os; print('whsec_' + "
            'base64.b64encode(os.urandom(32)).decode())"'
        )


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a collab server can be told. Defaults are safe for local use."""

    # --- Network
    host: str = _opt("127.0.0.1", "Address to listen on.")
    port: int = _opt(1234, "TCP port to listen on.")
    base_path: str = _opt("/", "URL prefix under which WebSocket room names live (e.g. /collab/).")
    listen_backlog: int = _opt(
        2048,
        "Connections the OS queues until the server accepts them (capped by the OS at "
        "net.core.somaxconn); a storm of connections past it waits for TCP retries.",
    )
    event_loop: EventLoop = _opt(
        "asyncio",
        "The event loop: 'asyncio', or 'uvloop' (pip install 'collab[uvloop]'); 'auto' "
        "takes uvloop when it is installed.",
        choices=("asyncio", "uvloop", "auto"),
    )

    # --- Storage
    db: Path | DatabaseURL = _opt(
        Path("collab.db"),
        "SQLite database file, created on first start; or a PostgreSQL database, "
        "postgresql://user[:password]@host:port/dbname.",
        parse=parse_db,
    )
    redis: str = _opt(
        "",
        "Redis URL (redis://host:port/db) of the cluster's bus: servers on one database "
        "(PostgreSQL, or one SQLite file on one host) and one Redis are one cluster "
        "(pip install 'collab[cluster]'). Document commands given it join the cluster "
        "while they run.",
    )
    node_id: str = _opt("", "This server's name in its cluster (default: generated).")
    db_sync: SQLiteSync = _opt(
        "normal",
        "SQLite synchronous level (PostgreSQL commits as its server is configured): "
        "'normal' survives a crash of the process, "
        "'full' also survives power loss, at a higher cost per commit.",
        choices=("normal", "full"),
    )
    version_updates: int = _opt(
        10_000,
        "Take a version of a document after this many updates since the last one.",
        was="snapshot_updates",
    )
    version_seconds: float = _opt(
        60.0,
        "... or this many seconds after the first update not yet in a version.",
        was="snapshot_seconds",
    )
    retention: str = _opt(
        "1h:all,1d:1h,30d:1d",
        "Which automatic versions to keep as they age: every one younger than 1h, one per "
        "hour under 1d, one per day under 30d, none older. Named versions are kept.",
    )
    retention_seconds: float = _opt(
        600.0, "How often the server thins versions by the retention policy (0: never)."
    )

    # --- Documents
    root_types: str = _opt(
        "",
        "Types of roots whose content cannot tell (an emptied root), for export and "
        "restore, e.g. 'default=xml,title=text'; types: text, map, array, xml.",
    )

    # --- Rooms and connections
    room_grace_seconds: float = _opt(
        45.0, "Keep an empty room loaded this long, so that reconnect storms do not reload it."
    )
    ping_seconds: float = _opt(
        15.0, "WebSocket ping interval; a peer that does not answer in time is dropped."
    )
    max_message_bytes: int = _opt(
        32 * MiB, "Largest WebSocket message accepted from a client (closed with 1009 above)."
    )
    sync_chunk_bytes: int = _opt(
        960 * KiB,
        "Large document states are sent in updates of about this size (under a 1 MiB frame).",
    )
    max_outbox_bytes: int = _opt(
        64 * MiB, "A peer with more unsent bytes than this is too slow and is dropped (1013)."
    )
    max_name_length: int = _opt(512, "Longest accepted document name, in characters.")
    shutdown_seconds: float = _opt(
        10.0, "On SIGINT/SIGTERM, how long to wait for connections to close."
    )
    drain_seconds: float = _opt(
        0.0,
        "On SIGINT/SIGTERM, first serve this long as before with /readyz answering 503, "
        "so that a load balancer stops sending clients here; then close.",
    )

    # --- Access
    auth: AuthMode = _opt(
        "open",
        "'open': anyone may read and write (local use; loud warning on a public address). "
        "'token': a signed token (collab token) is needed for every document.",
        choices=("open", "token"),
    )
    auth_secret: Secret = _opt(
        Secret(""), "The secret that signs tokens (32 bytes or more); needed with --auth token."
    )
    authorizer: Authorizer | None = _opt(
        None,
        "An app's own check, 'package.module:function', called with an AuthRequest; it "
        "returns a Grant or a permission and replaces the token check.",
        parse=load_authorizer,
    )
    allowed_origins: str = _opt(
        "",
        "Browser Origins that may connect besides the server's own, comma-separated; '*' "
        "for any. Requests without an Origin (non-browser clients) are not affected.",
    )
    cors_origins: str = _opt(
        "", "Origins the REST API answers with CORS headers, comma-separated; '*' for any."
    )

    # --- Limits
    max_connections: int = _opt(10_000, "Connections in all (more are refused with 503).")
    max_connections_per_room: int = _opt(1_000, "Connections to one document (429 above).")
    max_connections_per_address: int = _opt(
        10_000,
        "Connections from one client address (429 above). Behind a proxy every client has "
        "the proxy's address; lower it where clients connect directly.",
    )
    max_messages_per_second: float = _opt(
        30_000.0,
        "Messages a connection may send per second, sustained over 5 s bursts (closed with "
        "4429 above). Generous for scripted clients; lower it for untrusted ones.",
    )
    max_bytes_per_second: int = _opt(
        32 * MiB,
        "Bytes a connection may send per second, sustained, besides one largest message "
        "(closed with 4429 above).",
    )
    max_doc_bytes: int = _opt(
        64 * MiB, "Size quota of a document; an update that would pass it is refused."
    )

    # --- Integration
    hooks: Hooks | None = _opt(
        None,
        "An app's hooks, 'package.module:name' naming a collab.hooks.Hooks: told when "
        "documents load, change, settle, get versions, are restored or deleted, and when "
        "clients connect and leave (README, 'Hooks').",
        parse=load_hooks,
    )
    hook_timeout: float = _opt(
        10.0, "Longest a hook call may take; one that takes longer is cancelled and logged."
    )
    change_debounce: float = _opt(
        2.0,
        "Seconds without a change after which a document counts as settled (the "
        "on_settled hook, the document.changed webhook).",
    )

    # --- Operations
    metrics: Switch = _opt(
        "on",
        "Serve Prometheus metrics at /metrics: open without --auth token, else to an admin "
        "token for every document ('*'); or see --metrics-listen.",
        choices=("on", "off"),
    )
    metrics_listen: str = _opt(
        "",
        "Also serve /metrics (and only it) at HOST:PORT, with no token asked: for a "
        "scraper on a private address, e.g. 127.0.0.1:9464.",
    )

    # --- Webhooks
    webhook: tuple[str, ...] = _opt(
        (),
        "An http(s) URL that receives the documents' events as signed POSTs (repeat the "
        "flag for several; the variable takes them comma-separated).",
        parse=parse_webhooks,
    )
    webhook_secret: Secret = _opt(
        Secret(""),
        "The Standard Webhooks secret that signs every event: whsec_ and the base64 of "
        f"{MIN_WEBHOOK_SECRET_BYTES} to {MAX_WEBHOOK_SECRET_BYTES} bytes; needed with --webhook.",
    )
    webhook_retry_seconds: float = _opt(
        5.0, "After a failed delivery, the first wait; each next wait doubles (with jitter)."
    )
    webhook_retry_max_seconds: float = _opt(3600.0, "The longest wait between two tries.")
    webhook_give_up_seconds: float = _opt(
        259_200.0,
        "An event not delivered this long after it happened (default 3 days) is dropped, "
        "logged and counted, and the document's next one goes out.",
    )
    webhook_timeout_seconds: float = _opt(
        10.0, "How long one delivery may take; a slower answer counts as a failure."
    )

    # --- Logging
    log_level: LogLevel = _opt("info", "Log level.", choices=("debug", "info", "warning", "error"))
    log_format: LogFormat = _opt(
        "text",
        "'text': 'time LEVEL logger: message' lines; 'json': one JSON object a line, with "
        "the document, peer and close code where known (docs/operations.md).",
        choices=("text", "json"),
    )

    def __post_init__(self) -> None:
        if not self.base_path.startswith("/"):
            raise ValueError("base_path must start with '/'")
        for name in (
            "listen_backlog",
            "version_updates",
            "max_message_bytes",
            "sync_chunk_bytes",
            "max_outbox_bytes",
            "max_name_length",
            "max_connections",
            "max_connections_per_room",
            "max_connections_per_address",
            "max_messages_per_second",
            "max_bytes_per_second",
            "max_doc_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.hook_timeout <= 0 or self.change_debounce <= 0:
            raise ValueError("hook_timeout and change_debounce must be positive")
        if self.drain_seconds < 0:
            raise ValueError("drain_seconds must not be negative")
        if self.port < 0 or self.port > 65535:
            raise ValueError("port must be between 0 and 65535")
        for name in (
            "webhook_retry_seconds",
            "webhook_retry_max_seconds",
            "webhook_give_up_seconds",
            "webhook_timeout_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.change_debounce < 0:
            raise ValueError("change_debounce must not be negative")
        for url in self.webhook:
            check_webhook_url(url)
        if self.webhook:
            check_webhook_secret(self.webhook_secret)
        parse_policy(self.retention)
        parse_hints(self.root_types)
        if self.metrics_listen:
            parse_address(self.metrics_listen)
        if self.auth == "token" and self.authorizer is None:
            if len(self.auth_secret.encode()) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"--auth token needs --auth-secret (or COLLAB_AUTH_SECRET) of at least "
                    f"{MIN_SECRET_LENGTH} bytes; there is no default secret"
                )

    @property
    def origins(self) -> frozenset[str]:
        return _split(self.allowed_origins)

    @property
    def cors(self) -> frozenset[str]:
        return _split(self.cors_origins)

    @property
    def room_prefix(self) -> str:
        """`base_path` with exactly one trailing slash."""
        return self.base_path.rstrip("/") + "/"


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) -> (host, port).

    Raises:
        ValueError: it is not one.
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def _split(text: str) -> frozenset[str]:
    return frozenset(part.strip().rstrip("/") for part in text.split(",") if part.strip())


def setting_fields() -> list[dataclasses.Field[Any]]:
    """The fields of `Settings`, in declaration order (used by the CLI and the docs test)."""
    return list(dataclasses.fields(Settings))


def env_name(field_name: str) -> str:
    """The environment variable that sets a field: `COLLAB_` + its name in capitals."""
    return "COLLAB_" + field_name.upper()


def flag_name(field_name: str) -> str:
    """The CLI flag that sets a field."""
    return "--" + field_name.replace("_", "-")
