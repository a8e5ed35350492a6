"""The REST API under /api, /healthz, /readyz and /metrics. Handlers translate between
HTTP and `Documents`; one middleware turns errors into JSON with the status the error
tree gives them.

A document name is one path segment: a `/` in it is sent as `%2F`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from collab import __version__, logs
from collab.appkeys import CHECKS, DOCUMENTS, GUARD, READY, REGISTRY, ROOMS, SETTINGS, STOPPING
from collab.auth import Permission, Revocation, allows
from collab.errors import (
    HTTP_ERROR,
    BadRequest,
    CollabError,
    Forbidden,
    NotFound,
    StoreError,
    error_json,
)
from collab.formats import DEFAULT_FIELD, Exported, check_format, rich_format_of
from collab.names import check_doc_name
from collab.openapi import spec
from collab.store import iso_time

log = logging.getLogger(__name__)

Handler = Any


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /api, every error is JSON: `{"error": {"status", "code", "message"}}`, with
    the status and code of its class in collab.errors."""
    if not request.path.startswith("/api/"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        request.app[GUARD].check_origin(request, request.app[SETTINGS].cors)
        response = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason if exc.text is None else exc.text.strip()
        return web.json_response(error_json(exc.status, HTTP_ERROR, message), status=exc.status)
    except CollabError as exc:
        log.log(
            logging.ERROR if exc.status >= 500 else logging.INFO,
            "%s %s: %d %s",
            request.method,
            request.path,
            exc.status,
            exc,
            extra={"status": exc.status},
        )
        return web.json_response(exc.as_json(), status=exc.status, headers=exc.headers)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for the API, for the Origins in --cors-origins."""
    allowed = request.app[SETTINGS].cors
    origin = request.headers.get("Origin")
    if not request.path.startswith("/api/") or origin is None or not allowed:
        response: web.StreamResponse = await handler(request)
        return response
    allow = "*" if "*" in allowed else origin if origin.rstrip("/") in allowed else None
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response = web.Response(status=204)
        if allow is not None:
            response.headers.update(
                {
                    "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600",
                }
            )
    else:
        response = await handler(request)
    if allow is not None:
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Vary"] = "Origin"
    return response


def _name(request: web.Request) -> str:
    name = check_doc_name(request.match_info["name"], request.app[SETTINGS].max_name_length)
    logs.add(document=name)  # every line logged for this request names it
    return name


async def _allow(request: web.Request, need: Permission) -> str:
    """The document the request names, if its credentials allow `need` on it."""
    name = _name(request)
    await request.app[GUARD].require(request, name, need)
    return name


async def _json_object(request: web.Request, hint: str) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(hint) from exc
    if not isinstance(body, dict):
        raise BadRequest(hint)
    return body


def _content(exported: Exported) -> web.Response:
    return web.Response(
        body=exported.body,
        content_type=exported.content_type.split(";")[0],
        charset="utf-8" if "charset" in exported.content_type else None,
    )


_CHECK_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    """Answers 200 while the server is up; says whether the database (and Redis, in a
    cluster) answer: "status" is "ok" when they all do, else "degraded"."""
    checks = request.app[CHECKS]
    results = await asyncio.gather(*(_check(check) for check in checks.values()))
    services = dict(zip(checks, results, strict=True))
    return web.json_response(
        {
            "status": "ok" if all(r == "ok" for r in results) else "degraded",
            "version": __version__,
            "rooms": len(request.app[ROOMS]),
            **services,
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """200 while the server can take edits: the database takes writes, commits succeed
    (and Redis answers, in a cluster); else 503 with what is wrong. 503 too once it is
    shutting down."""
    if request.app[STOPPING].is_set():
        return web.json_response({"status": "shutting down"}, status=503)
    checks = request.app[READY]
    results = await asyncio.gather(*(_check(check) for check in checks.values()))
    ready = all(result == "ok" for result in results)
    return web.json_response(
        {"status": "ready" if ready else "not ready", **dict(zip(checks, results, strict=True))},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    """The metrics (collab/metrics.py), to whoever may administer every document: they
    name no document, but they tell how the server is used."""
    try:
        if request.app[SETTINGS].metrics != "on":
            raise NotFound("metrics are off (--metrics off)")
        await _require_global_admin(request)
    except CollabError as exc:  # outside /api: the error's status, as text
        return web.Response(status=exc.status, text=f"{exc}\n", headers=exc.headers)
    return await metrics_apart(request)


async def metrics_apart(request: web.Request) -> web.Response:
    """The metrics in the format the scraper asks for (Prometheus text or OpenMetrics)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _check(check: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            await check()
    except StoreError as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer within {_CHECK_SECONDS:.0f} s"
    return "ok"


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


async def list_docs(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    grant = await guard.grant(request, None)
    summaries = [
        summary
        for summary in await request.app[DOCUMENTS].summaries()
        if allows(guard.permission(grant, summary.name), "read")
    ]
    return web.json_response({"docs": [summary.as_json() for summary in summaries]})


async def get_content(request: web.Request) -> web.Response:
    """A document's content now, or at the version the path names."""
    version = request.match_info.get("version")
    name = await _allow(request, "read")
    fmt = check_format(request.query.get("format", "json"))
    field = request.query.get("field", DEFAULT_FIELD)
    at = None if version is None else int(version)
    return _content(await request.app[DOCUMENTS].export(name, fmt, at, field))


async def put_content(request: web.Request) -> web.Response:
    """Make a document's content (one field) equal to the body: ProseMirror JSON, HTML
    or Markdown by its Content-Type; 201 when that created the document."""
    name = await _allow(request, "write")
    fmt = rich_format_of(request.headers.get("Content-Type", ""))
    field = request.query.get("field", DEFAULT_FIELD)
    body = await request.read()
    created = await request.app[DOCUMENTS].replace(name, fmt, body, field)
    return web.json_response(
        {"doc": name, "field": field, "format": fmt, "created": created},
        status=201 if created else 200,
    )


async def delete_doc(request: web.Request) -> web.Response:
    await request.app[DOCUMENTS].delete(await _allow(request, "write"))
    return web.Response(status=204)


async def post_update(request: web.Request) -> web.Response:
    name = await _allow(request, "write")
    update = await request.read()
    await request.app[DOCUMENTS].import_update(name, update)
    return web.json_response({"applied": len(update)})


async def list_versions(request: web.Request) -> web.Response:
    versions = await request.app[DOCUMENTS].versions(await _allow(request, "read"))
    return web.json_response({"versions": [version.as_json() for version in versions]})


async def post_version(request: web.Request) -> web.Response:
    name = await _allow(request, "write")
    body = await _json_object(request, 'send a JSON object: {"label": "..."}')
    version = await request.app[DOCUMENTS].take_version(name, body.get("label", ""))
    return web.json_response(version.as_json(), status=201)


async def restore_version(request: web.Request) -> web.Response:
    version = int(request.match_info["version"])
    restored = await request.app[DOCUMENTS].restore(await _allow(request, "write"), version)
    return web.json_response(restored.as_json())


async def compact(request: web.Request) -> web.Response:
    await _require_global_admin(request)
    deleted = await request.app[DOCUMENTS].compact()
    return web.json_response({"deleted_versions": deleted})


async def _require_global_admin(request: web.Request) -> None:
    grant = await request.app[GUARD].grant(request, None)
    if not (grant.docs == "*" and allows(grant.permission, "admin")):
        raise Forbidden("this needs an admin credential for every document ('*')")


async def access(request: web.Request) -> web.Response:
    """What the request's credentials allow on the document (the editor asks)."""
    name = _name(request)
    guard = request.app[GUARD]
    permission = guard.permission(await guard.grant(request, name), name)
    return web.json_response({"doc": name, "permission": permission})


async def post_revocation(request: web.Request) -> web.Response:
    """Lower a token's or a user's grants, now and for later connections."""
    revocation = _revocation(await _json_object(request, "send a JSON object"))
    if any(char in revocation.docs for char in "*?["):
        await _require_global_admin(request)
    else:
        await request.app[GUARD].require(request, revocation.docs, "admin")
    touched = await request.app[GUARD].revoke(revocation)
    return web.json_response(
        {"revocation": _revocation_json(revocation), "connections": touched}, status=201
    )


def _revocation(body: dict[str, Any]) -> Revocation:
    token_id, subject = body.get("token_id"), body.get("subject")
    docs, permission = body.get("docs", "*"), body.get("permission", "none")
    if (token_id is None) == (subject is None):
        raise BadRequest("name exactly one of token_id and subject")
    for value in (token_id, subject):
        if value is not None and (not isinstance(value, str) or not value):
            raise BadRequest("token_id and subject are non-empty strings")
    if not isinstance(docs, str) or not docs:
        raise BadRequest("docs is a document name or pattern")
    if permission not in ("none", "read"):
        raise BadRequest("permission is 'none' (revoke) or 'read' (make read-only)")
    return Revocation(time.time(), permission, token_id, subject, docs)


def _revocation_json(revocation: Revocation) -> dict[str, Any]:
    return {
        "token_id": revocation.token_id,
        "subject": revocation.subject,
        "docs": revocation.docs,
        "permission": revocation.permission,
        "at": iso_time(revocation.at),
    }


def add_routes(app: web.Application) -> None:
    app.middlewares.append(cors)
    app.middlewares.append(json_errors)
    router = app.router
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
    router.add_get("/api/openapi.json", openapi)
    router.add_get("/api/docs", list_docs)
    router.add_get("/api/docs/{name}", get_content)
    router.add_put("/api/docs/{name}", put_content)
    router.add_delete("/api/docs/{name}", delete_doc)
    router.add_post("/api/docs/{name}/updates", post_update)
    router.add_get("/api/docs/{name}/versions", list_versions)
    router.add_post("/api/docs/{name}/versions", post_version)
    router.add_get("/api/docs/{name}/versions/{version:[0-9]{1,18}}", get_content)
    router.add_post("/api/docs/{name}/versions/{version:[0-9]{1,18}}/restore", restore_version)
    router.add_post("/api/compact", compact)
    router.add_get("/api/docs/{name}/access", access)
    router.add_post("/api/revocations", post_revocation)
