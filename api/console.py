"""The web console: one page and its script, served by the service itself at `/`.

Plain HTML, CSS and a JavaScript module read from `api/console_static`: nothing is built at
run time and no second server runs. The page talks to the same REST API and event stream as
scripts do, signed in with the session cookie.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "console_static"
STATIC_PREFIX = "/console/"

_ASSETS = frozenset(p.name for p in STATIC_DIR.iterdir() if p.name != "index.html")
# The page loads only its own files and talks only to its own origin (ws: included).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; media-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # A new release is picked up on the next load; the files are small.
    "Cache-Control": "no-cache",
}


async def _page(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)


async def _asset(request: web.Request) -> web.FileResponse:
    # Only the files shipped beside the page: no path is ever joined from the request.
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers=_HEADERS)


def install_console(app: web.Application) -> None:
    app.router.add_get("/", _page)
    app.router.add_get(STATIC_PREFIX + "{name}", _asset)
