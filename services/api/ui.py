"""The web UI: `/ui/` serves a static page (plain HTML, CSS and JS from `static/`) that uses the REST API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
# The only files served, with their types: no directory is exposed, so no path can escape it.
ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# Everything is same-origin; no inline script or style, no framing by other sites.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Unversioned file names: revalidate every time (cheap, answered 304 by Last-Modified).
    "Cache-Control": "no-cache",
}


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={**HEADERS, "Content-Type": "text/html"})


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound(reason="Not Found")
    return web.FileResponse(STATIC / name, headers={**HEADERS, "Content-Type": ASSETS[name]})


async def to_index(_request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/ui/")


def setup_ui(app: web.Application) -> None:
    app.router.add_get("/ui", to_index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/{name}", asset)
