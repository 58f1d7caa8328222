"""The API described for people and tools: ``/docs``, its assets, ``/asyncapi.json``.

``/docs`` is Swagger UI on ``/openapi.json``, served entirely from installed
packages, so the page works offline: the Swagger UI files come from the
``swagger-ui-bundle-v2`` package (Apache-2.0), our page and its start-up script
from ``tickcast/web/static``. Only the files the page loads are routed (an ``any``
converter: the OpenAPI document lists them); each is read once per process.

Why no CDN: a feed often runs on a private network, and a documentation page that
needs the internet to render is broken exactly where an operator needs it.
``tests/test_docs_page.py`` opens the page in Chromium with every request to
anything but the server refused (docs/api.md, "/docs: offline").

These routes are open even when ``read_token`` is set: they describe the API and
serve no tick. The route docstrings below are user-facing (the OpenAPI document
takes its summaries from them); notes for maintainers are comments.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

import msgspec
from quart import Blueprint, Response, request
from swagger_ui_bundle import swagger_ui_path

from tickcast.web import asyncapi
from tickcast.web.openapi import answers, page

__all__ = ["STATIC", "blueprint"]

# Through importlib.resources, so the files are found in a wheel, an editable install
# or a zip alike; never through a path relative to this file.
_OURS = resources.files("tickcast").joinpath("web/static")
_SWAGGER: Traversable = swagger_ui_path

JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
PNG = "image/png"

# name under /docs/static/ -> (where it comes from, content type). The only files served:
# the route's converter is built from these keys, so any other name is a 404 without
# touching the file system (no path traversal to guard against).
STATIC: dict[str, tuple[Traversable, str]] = {
    "swagger-ui-bundle.js": (_SWAGGER, JS),
    "swagger-ui.css": (_SWAGGER, CSS),
    "favicon-32x32.png": (_SWAGGER, PNG),
    "docs.js": (_OURS, JS),
    "docs.css": (_OURS, CSS),
}

blueprint = Blueprint("apidocs", __name__)


@cache
def _read(name: str) -> bytes:
    """The bytes of a ``STATIC`` file, read on first use and kept for the process.

    The set is fixed and small (Swagger UI's bundle, about 1.5 MB, is the bulk), so
    the cache is bounded by ``STATIC``. A file missing from the installed package
    raises ``FileNotFoundError`` here, i.e. a 500 from the catch-all handler.
    """
    return STATIC[name][0].joinpath(name).read_bytes()


@blueprint.get("/docs")
@page("text/html", description="Swagger UI on /openapi.json (no CDN: it works offline).")
async def docs() -> Response:
    """The interactive API page."""
    # Read per request rather than cached: under 1 KB, and a page edited in a
    # development checkout shows on reload.
    body = _OURS.joinpath("docs.html").read_bytes()
    return Response(body, content_type="text/html; charset=utf-8")


# werkzeug's `any(...)` converter takes the allowed names as quoted, comma-separated
# arguments; built from STATIC so that the route and the table cannot disagree.
_NAMES = ",".join(f'"{name}"' for name in STATIC)


@blueprint.get(f"/docs/static/<any({_NAMES}):name>")
@page(JS, CSS, PNG, description="A file of the /docs page.")
@answers(404)
async def docs_static(name: str) -> Response:
    """The files of the ``/docs`` page (Swagger UI's, and its start-up script)."""
    response = Response(_read(name), content_type=STATIC[name][1])
    # An hour: the files change only with an upgrade of tickcast or of the Swagger UI
    # package, and a browser that re-reads the bundle on every visit wastes 1.5 MB.
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    return response


@blueprint.get("/asyncapi.json")
@page("application/json", description="The AsyncAPI 3.0 document of /ws/stream.")
async def asyncapi_json() -> Response:
    """The ``/ws/stream`` protocol as AsyncAPI 3.0 (this server as its server)."""
    # The host the client used, so tools reading the document connect back to the same
    # place; over TLS the server entry says wss. The scheme is the ASGI server's.
    doc = asyncapi.document(request.host, secure=request.scheme in ("https", "wss"))
    return Response(msgspec.json.encode(doc), content_type="application/json")
