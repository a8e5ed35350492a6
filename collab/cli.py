"""The `collab` command: a thin shell that builds Settings and calls the library.

Every `Settings` field is a flag of `collab serve` and a `COLLAB_*` environment variable;
a flag given on the command line wins over the variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collab import __version__
from collab.app import serve
from collab.config import Settings, env_name, flag_name, setting_fields

log = logging.getLogger("collab")


def _converter(annotation: Any) -> tuple[Any, tuple[str, ...] | None]:
    """How to read a field from text, and its allowed values."""
    if typing.get_origin(annotation) is typing.Literal:
        return str, tuple(typing.get_args(annotation))
    if annotation in (int, float, str, Path):
        return annotation, None
    raise TypeError(f"no converter for {annotation!r}")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Settings)
    for field in setting_fields():
        convert, choices = _converter(hints[field.name])
        parser.add_argument(
            flag_name(field.name),
            dest=field.name,
            type=convert,
            choices=choices,
            default=None,
            metavar=field.name.split("_")[-1].upper() if not choices else None,
            help=f"{field.metadata['help']} [env {env_name(field.name)}, default {field.default}]",
        )


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags, then `COLLAB_*` variables, then defaults.

    Raises:
        ValueError: a variable or value is not acceptable.
    """
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}
    for field in setting_fields():
        flag_value = getattr(args, field.name, None)
        if flag_value is not None:
            values[field.name] = flag_value
            continue
        text = environ.get(env_name(field.name))
        if text is None:
            continue
        convert, choices = _converter(hints[field.name])
        if choices and text not in choices:
            raise ValueError(f"{env_name(field.name)} must be one of {', '.join(choices)}")
        try:
            values[field.name] = convert(text)
        except ValueError as exc:
            raise ValueError(f"{env_name(field.name)}: {exc}") from exc
    return Settings(**values)


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
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args, os.environ if environ is None else environ)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        try:
            asyncio.run(serve(settings))
        except OSError as exc:
            log.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc)
            return 1
    return 0
