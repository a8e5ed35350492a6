"""The `collab` command: a thin shell that builds Settings and calls the library.

Every `Settings` field is a flag of `collab serve` and a `COLLAB_*` environment variable;
a flag given on the command line wins over the variable, which wins over the default.
The document commands (docs, export, import, versions, version, restore, compact) take
the flags that concern them and run through commands.py; `backup` copies the SQLite file
itself (backup.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collab import __version__, logs
from collab.app import run, serve
from collab.auth import MIN_SECRET_LENGTH, Permission, mint
from collab.cli import backup, commands
from collab.config import Secret, Settings, env_name, flag_name, setting_fields
from collab.errors import CollabError
from collab.formats import DEFAULT_FIELD, FORMATS, RICH_FORMATS
from collab.store.retention import parse_duration

log = logging.getLogger("collab")


def _converter(field: dataclasses.Field[Any]) -> tuple[Any, tuple[str, ...] | None]:
    """How to read a field from text, and its allowed values."""
    if "parse" in field.metadata:
        return field.metadata["parse"], None
    annotation = typing.get_type_hints(Settings)[field.name]
    if typing.get_origin(annotation) is typing.Literal:
        return str, tuple(typing.get_args(annotation))
    if annotation in (int, float, str, Path, Secret):
        return annotation, None
    raise TypeError(f"no converter for {annotation!r}")


def _add_setting_flags(parser: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    for field in setting_fields():
        if only is not None and field.name not in only:
            continue
        convert, choices = _converter(field)
        # A renamed setting keeps its old flag and variable, so existing scripts still work.
        old = (flag_name(field.metadata["was"]),) if "was" in field.metadata else ()
        # A tuple field's flag may be repeated; its variable holds the values comma-separated.
        many = isinstance(field.default, tuple)
        parser.add_argument(
            flag_name(field.name),
            *old,
            dest=field.name,
            type=convert,
            choices=choices,
            action="append" if many else "store",
            default=None,
            metavar=field.name.split("_")[-1].upper() if not choices else None,
            help=f"{field.metadata['help']} [env {env_name(field.name)}, default {field.default}]",
        )


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags, then `COLLAB_*` variables, then defaults.

    Raises:
        ValueError: a variable or value is not acceptable.
    """
    values: dict[str, Any] = {}
    for field in setting_fields():
        flag_value = getattr(args, field.name, None)
        if isinstance(flag_value, list):  # a repeated flag: each one's values, in order
            flag_value = tuple(dict.fromkeys(value for given in flag_value for value in given))
        if flag_value is not None:
            values[field.name] = flag_value
            continue
        text = environ.get(env_name(field.name))
        if text is None and "was" in field.metadata:
            text = environ.get(env_name(field.metadata["was"]))
        if text is None:
            continue
        convert, choices = _converter(field)
        if choices and text not in choices:
            raise ValueError(f"{env_name(field.name)} must be one of {', '.join(choices)}")
        try:
            values[field.name] = convert(text)
        except ValueError as exc:
            raise ValueError(f"{env_name(field.name)}: {exc}") from exc
    return Settings(**values)


_DOC_FLAGS = frozenset({"db", "db_sync", "redis", "root_types", "log_level", "log_format"})


def _doc_command(
    commands: Any,
    name: str,
    summary: str,
    extra: frozenset[str] = frozenset(),
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=summary)
    parser.add_argument(
        "--server",
        metavar="URL",
        help="use the REST API of the server at URL (default: the server that holds the "
        "database, if one runs; else the database itself)",
    )
    parser.add_argument(
        "--token",
        help="the token to show a server that runs --auth token [env COLLAB_TOKEN; default: "
        "a short-lived admin token minted with --auth-secret, if given]",
    )
    _add_setting_flags(parser, _DOC_FLAGS | {"auth_secret"} | extra)
    return parser


_CLI_TOKEN_SECONDS = 300.0


def _server_token(settings: Settings, args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The credential a document command shows a server: --token, COLLAB_TOKEN, or, for
    whoever holds the server's secret (who could mint any token anyway), a fresh one."""
    given: str | None = args.token or environ.get("COLLAB_TOKEN")
    if given:
        return given
    if len(settings.auth_secret.encode()) >= MIN_SECRET_LENGTH:
        return mint(settings.auth_secret, "*", "admin", now=time.time(), ttl=_CLI_TOKEN_SECONDS)
    return ""


def _field_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--field", default=DEFAULT_FIELD, metavar="ROOT", help=f"{what} (default: %(default)s)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab", description="Real-time collaborative document server (Yjs y-websocket)."
    )
    parser.add_argument("--version", action="version", version=f"collab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve", help="run the server", description="Run the collab server until SIGINT/SIGTERM."
    )
    _add_setting_flags(serve_parser)

    docs = _doc_command(commands, "docs", "list documents with size, last change and clients")
    docs.add_argument("--json", action="store_true", help="print JSON")
    export = _doc_command(commands, "export", "print or save a document's content")
    export.add_argument("name")
    export.add_argument("--format", choices=FORMATS, default="json")
    export.add_argument("--version", type=int, metavar="ID", help="a version instead of now")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default stdout)")
    _field_flag(export, "the root the rich formats (prosemirror, html, markdown) read")
    import_ = _doc_command(
        commands,
        "import",
        "merge a binary Yjs update into a document, or make its content a file's",
    )
    import_.add_argument("name")
    import_.add_argument(
        "file",
        help="a file holding a Yjs update (e.g. from export --format update), or content "
        "of --format; - for stdin",
    )
    import_.add_argument(
        "--format",
        choices=("update", *RICH_FORMATS),
        default="update",
        help="update (default): merge a Yjs update; prosemirror, html, markdown: make the "
        "content of --field equal to the file's",
    )
    _field_flag(import_, "the root a rich format replaces")
    versions = _doc_command(commands, "versions", "list a document's versions, newest first")
    versions.add_argument("name")
    versions.add_argument("--json", action="store_true", help="print JSON")
    version = _doc_command(commands, "version", "keep a document as it is now as a named version")
    version.add_argument("name")
    version.add_argument("--label", required=True, help="what to call it")
    restore = _doc_command(commands, "restore", "make a document equal to one of its versions")
    restore.add_argument("name")
    restore.add_argument("version", type=int, help="version id (see collab versions)")
    _doc_command(
        commands,
        "compact",
        "take a version of grown logs and thin versions by the retention policy",
        frozenset({"retention"}),
    )
    backup_parser = commands.add_parser(
        "backup",
        help="copy the SQLite database, consistently, while servers run",
        description="Write a consistent copy of the SQLite database to DEST, as it is when "
        "the copy begins, whether or not a server runs (SQLite's online backup; never "
        "through a server). For PostgreSQL use pg_dump.",
    )
    backup_parser.add_argument("dest", metavar="DEST", help="the file to write the copy to")
    backup_parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    _add_setting_flags(backup_parser, frozenset({"db"}))
    token = commands.add_parser(
        "token",
        help="mint a signed token for a document (or a pattern such as 'team/*')",
        description="Print a signed token granting access to the documents NAME matches. "
        "The secret comes from --auth-secret or COLLAB_AUTH_SECRET, as the server's does.",
    )
    token.add_argument("name", help="a document name, or a pattern with * and ?")
    level = token.add_mutually_exclusive_group()
    level.add_argument("--read-only", action="store_true", help="may read, not write")
    level.add_argument("--admin", action="store_true", help="may also delete and revoke")
    token.add_argument("--ttl", default="1h", help="lifetime such as 15m, 1h, 7d, or never")
    token.add_argument("--subject", help="the user it is for (lets you revoke a user)")
    _add_setting_flags(token, frozenset({"auth_secret"}))
    return parser


def _mint(settings: Settings, args: argparse.Namespace) -> str:
    secret = settings.auth_secret
    if len(secret.encode()) < MIN_SECRET_LENGTH:
        raise SystemExit(
            f"collab: give the server's secret (--auth-secret or COLLAB_AUTH_SECRET, at least "
            f"{MIN_SECRET_LENGTH} bytes)"
        )
    try:
        ttl = None if args.ttl == "never" else parse_duration(args.ttl)
    except ValueError as exc:
        raise SystemExit(f"collab: --ttl: {exc}") from exc
    permission: Permission = "admin" if args.admin else "read" if args.read_only else "write"
    return mint(secret, args.name, permission, now=time.time(), ttl=ttl, subject=args.subject)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args, os.environ if environ is None else environ)
    except ValueError as exc:
        parser.error(str(exc))
    logs.setup(
        settings.log_level.upper() if args.command == "serve" else "WARNING", settings.log_format
    )
    try:
        if args.command == "serve":
            run(serve(settings), settings.event_loop)
        elif args.command == "token":
            print(_mint(settings, args))
        elif args.command == "backup":
            backup.run(settings, args)
        else:
            token = _server_token(settings, args, os.environ if environ is None else environ)
            asyncio.run(commands.run(args.command, settings, args, token=token))
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    except CollabError as exc:
        if settings.log_format == "json":
            log.error("%s", exc)  # a JSON pipeline reads stderr line by line
        else:
            # Not through the log, so redacted here: a server's or a database's URL may
            # hold a credential.
            print(f"collab: {logs.redact(str(exc))}", file=sys.stderr)
        return 1
    return 0
