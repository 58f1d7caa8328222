"""The API described for people and tools: ``/docs``, its assets, ``/asyncapi.json``.

``/docs`` is Swagger UI on ``/openapi.json``, served entirely from installed
packages, so the page works offline: the Swagger UI files come from the
``swagger-ui-bundle-v2`` package (Apache-2.0), our page and its start-up script
from ``tickcast/web/static``. Only the files the page loads are routed (an ``any``
converter: the OpenAPI document lists them); each is read once per process.
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

_OURS = resources.files("tickcast").joinpath("web/static")
_SWAGGER: Traversable = swagger_ui_path

JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
PNG = "image/png"

# name under /docs/static/ -> (where it comes from, content type)
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
    return STATIC[name][0].joinpath(name).read_bytes()


@blueprint.get("/docs")
@page("text/html", description="Swagger UI on /openapi.json (no CDN: it works offline).")
async def docs() -> Response:
    """The interactive API page."""
    body = _OURS.joinpath("docs.html").read_bytes()
    return Response(body, content_type="text/html; charset=utf-8")


_NAMES = ",".join(f'"{name}"' for name in STATIC)


@blueprint.get(f"/docs/static/<any({_NAMES}):name>")
@page(JS, CSS, PNG, description="A file of the /docs page.")
@answers(404)
async def docs_static(name: str) -> Response:
    """The files of the ``/docs`` page (Swagger UI's, and its start-up script)."""
    response = Response(_read(name), content_type=STATIC[name][1])
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    return response


@blueprint.get("/asyncapi.json")
@page("application/json", description="The AsyncAPI 3.0 document of /ws/stream.")
async def asyncapi_json() -> Response:
    """The ``/ws/stream`` protocol as AsyncAPI 3.0 (this server as its server)."""
    doc = asyncapi.document(request.host, secure=request.scheme in ("https", "wss"))
    return Response(msgspec.json.encode(doc), content_type="application/json")
