"""HTTP endpoints. Handlers translate between HTTP and the core; nothing else."""

from __future__ import annotations

from aiohttp import web

from collab import __version__
from collab.appkeys import ROOMS


async def healthz(request: web.Request) -> web.Response:
    """Answers while the server is up."""
    return web.json_response(
        {"status": "ok", "version": __version__, "rooms": len(request.app[ROOMS])}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
