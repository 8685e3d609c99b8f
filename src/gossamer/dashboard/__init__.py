"""The dashboard: a static single-page UI served by the control plane's HTTP API.

The assets are open (no token), like `/healthz`: they hold no data. The page
reads everything from the API with the operator's Bearer token, which it keeps
in sessionStorage, so serving them needs no session or cookie of our own. The
three files are read from the package at import time (the wheel carries them),
and served with explicit content types and a strict Content-Security-Policy
(scripts and styles only from this origin, fetches only to this origin).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

PREFIX = "/dashboard/"
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
}


def load_assets() -> dict[str, bytes]:
    """Every asset's bytes, from the installed package."""
    folder = resources.files("gossamer.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in CONTENT_TYPES}


def mount_dashboard(app: FastAPI) -> None:
    """Serve the UI at /dashboard/ and send / there."""
    assets = load_assets()

    def serve(name: str) -> Response:
        body = assets.get(name)
        if body is None:
            raise HTTPException(404, f"no dashboard asset {name!r}")
        return Response(body, media_type=CONTENT_TYPES[name], headers=HEADERS)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(PREFIX, status_code=307)

    @app.get("/dashboard", include_in_schema=False)
    async def bare() -> RedirectResponse:
        return RedirectResponse(PREFIX, status_code=307)

    @app.get(PREFIX, include_in_schema=False)
    async def index() -> Response:
        return serve("index.html")

    @app.get(PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        return serve(name)
