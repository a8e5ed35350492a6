"""A FastAPI application that mounts collab, as tests/test_asgi.py runs it under uvicorn.

`COLLAB_TEST_DB` names the database; `COLLAB_TEST_LIFESPAN=chained` chains collab's
lifespan into the app's, otherwise collab is mounted plainly and starts on first use.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from collab.asgi import create_asgi_app
from collab.config import Settings


def create() -> FastAPI:
    """The app: its own route at /hello, collab at /collab."""
    collab = create_asgi_app(Settings(db=Path(os.environ["COLLAB_TEST_DB"])))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if os.environ.get("COLLAB_TEST_LIFESPAN") == "chained":
            async with collab.lifespan():
                yield
        else:
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.mount("/collab", collab)
    return app
