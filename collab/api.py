"""The REST API under /api, and /healthz. Handlers translate between HTTP and `Documents`;
one middleware turns errors into JSON with the status the error tree gives them.

A document name is one path segment: a `/` in it is sent as `%2F`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from collab import __version__
from collab.appkeys import DOCUMENTS, ROOMS, SETTINGS
from collab.documents import FORMATS, Format, check_label
from collab.errors import (
    BadRequest,
    CollabError,
    Conflict,
    DatabaseInUse,
    InvalidDocName,
    NotFound,
    StoreError,
)
from collab.names import check_doc_name
from collab.openapi import spec

log = logging.getLogger(__name__)

Handler = Any

_STATUS: list[tuple[type[CollabError], int]] = [
    (InvalidDocName, 400),
    (BadRequest, 400),
    (NotFound, 404),
    (Conflict, 409),
    (StoreError, 503),
    (DatabaseInUse, 503),
]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /api, every error is JSON: `{"error": {"status": ..., "message": ...}}`."""
    if not request.path.startswith("/api/"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason if exc.text is None else exc.text.strip())
    except CollabError as exc:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s: %d %s",
            request.method,
            request.path,
            status,
            exc,
        )
        return _error(status, str(exc))


def _name(request: web.Request) -> str:
    return check_doc_name(request.match_info["name"], request.app[SETTINGS].max_name_length)


def _format(request: web.Request) -> Format:
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    return fmt


async def healthz(request: web.Request) -> web.Response:
    """Answers while the server is up."""
    return web.json_response(
        {"status": "ok", "version": __version__, "rooms": len(request.app[ROOMS])}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


async def list_docs(request: web.Request) -> web.Response:
    summaries = await request.app[DOCUMENTS].summaries()
    return web.json_response({"docs": [summary.as_json() for summary in summaries]})


async def get_doc(request: web.Request) -> web.Response:
    exported = await request.app[DOCUMENTS].export(_name(request), _format(request))
    return web.Response(
        body=exported.body,
        content_type=exported.content_type.split(";")[0],
        charset="utf-8" if "charset" in exported.content_type else None,
    )


async def delete_doc(request: web.Request) -> web.Response:
    await request.app[DOCUMENTS].delete(_name(request))
    return web.Response(status=204)


async def post_update(request: web.Request) -> web.Response:
    name = _name(request)
    update = await request.read()
    await request.app[DOCUMENTS].import_update(name, update)
    return web.json_response({"applied": len(update)})


async def list_versions(request: web.Request) -> web.Response:
    versions = await request.app[DOCUMENTS].versions(_name(request))
    return web.json_response({"versions": [snapshot.as_json() for snapshot in versions]})


async def post_version(request: web.Request) -> web.Response:
    name = _name(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest('send a JSON object: {"label": "..."}') from exc
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object: {"label": "..."}')
    snapshot = await request.app[DOCUMENTS].take_version(name, check_label(body.get("label")))
    return web.json_response(snapshot.as_json(), status=201)


async def get_version(request: web.Request) -> web.Response:
    version = int(request.match_info["version"])
    exported = await request.app[DOCUMENTS].export(_name(request), _format(request), version)
    return web.Response(
        body=exported.body,
        content_type=exported.content_type.split(";")[0],
        charset="utf-8" if "charset" in exported.content_type else None,
    )


async def restore_version(request: web.Request) -> web.Response:
    version = int(request.match_info["version"])
    restored = await request.app[DOCUMENTS].restore(_name(request), version)
    return web.json_response(
        {"restored": restored.restored.as_json(), "pre_restore": restored.pre_restore.as_json()}
    )


async def compact(request: web.Request) -> web.Response:
    deleted = await request.app[DOCUMENTS].compact()
    return web.json_response({"deleted_versions": deleted})


def add_routes(app: web.Application) -> None:
    app.middlewares.append(json_errors)
    router = app.router
    router.add_get("/healthz", healthz)
    router.add_get("/api/openapi.json", openapi)
    router.add_get("/api/docs", list_docs)
    router.add_get("/api/docs/{name}", get_doc)
    router.add_delete("/api/docs/{name}", delete_doc)
    router.add_post("/api/docs/{name}/updates", post_update)
    router.add_get("/api/docs/{name}/versions", list_versions)
    router.add_post("/api/docs/{name}/versions", post_version)
    router.add_get("/api/docs/{name}/versions/{version:[0-9]{1,18}}", get_version)
    router.add_post("/api/docs/{name}/versions/{version:[0-9]{1,18}}/restore", restore_version)
    router.add_post("/api/compact", compact)
