"""The bundled web editor's pages: `/` (open a document by name), `/d/{name}` (edit it),
and `/static/` (the built assets in collab/static, made by `npm run build` in frontend/).

Pages are templates with the document name, the rooms prefix and the mount (the path a
host app mounted collab under, collab.asgi or an aiohttp sub-app) filled in, escaped.
Everything the pages load comes from this server, and the Content-Security-Policy says so.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from aiohttp import web

from collab.appkeys import MOUNT, SETTINGS
from collab.errors import InvalidDocName
from collab.names import check_doc_name

STATIC = Path(__file__).parent / "static"

# Carets and selections are coloured with inline styles, hence 'unsafe-inline' for styles.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@cache
def _template(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _page(name: str, **values: str) -> web.Response:
    text = _template(name)
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    return web.Response(text=text, content_type="text/html", headers=_HEADERS)


async def start_page(request: web.Request) -> web.Response:
    return _page("index.html", base=request.get(MOUNT, ""))


async def editor_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        name = check_doc_name(request.match_info["name"], settings.max_name_length)
    except InvalidDocName as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from exc
    return _page(
        "editor.html", doc=name, room_prefix=settings.room_prefix, base=request.get(MOUNT, "")
    )


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(request.get(MOUNT, "") + "/static/"):
        response.headers.update(_HEADERS)


def add_routes(app: web.Application) -> None:
    if not (STATIC / "editor.js").is_file():
        raise RuntimeError(f"the editor is not built: {STATIC} lacks editor.js")
    app.router.add_get("/", start_page)
    app.router.add_get("/d/{name:.+}", editor_page)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.on_response_prepare.append(_static_headers)
