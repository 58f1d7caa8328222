"""``/openapi.json``: the HTTP API as OpenAPI 3.1, complete enough for tools to trust.

quart-schema builds the skeleton from the routes and the docs models on them
(``document_querystring``, ``document_response``). :class:`Provider` adds what
quart-schema cannot say, declared with the decorators below:

* :func:`answers`: the error statuses a route can give, each with the one JSON
  error body ``{"error", "detail"}`` (500 is added to every route: the catch-all
  handler can answer it anywhere);
* :func:`page`: a 200 body that is not JSON (``text/html``, ``text/plain``...);
* :func:`json_body`: a request body whose schema is not one Struct;
* :func:`takes_query`: the query parameters a route takes; any other is answered
  400 naming it (``app.py`` checks every request against this list), so every
  route documents 400;
* the security schemes (the read token, the ingest token), ``/openapi.json``
  itself, and the statuses any path can give (404, 405 with ``Allow``).

Invariant: every status a route can answer is in its ``responses`` (the
schemathesis run in ``tests/test_openapi.py`` fails on any other).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

import msgspec
from quart import Quart
from quart_schema import OpenAPIProvider, QuartSchema
from werkzeug.routing import Rule

from tickcast import __version__
from tickcast.sources.ingest import MAX_INGEST_BYTES
from tickcast.wire import MAX_SPEED, MIN_SPEED, PAGE_LIMIT

__all__ = [
    "INGEST_ACCESS",
    "READ_ACCESS",
    "ErrorResponse",
    "Provider",
    "answers",
    "install",
    "json_body",
    "page",
    "query_names",
    "takes_query",
]

F = TypeVar("F", bound=Callable[..., Any])

REF = "#/components/schemas/{name}"
_LITERAL = re.compile(r"``([^`]+)``")
_ANSWERS = "_tickcast_answers"
_PAGE = "_tickcast_page"
_BODY = "_tickcast_body"
_QUERY = "_tickcast_query"


class ErrorResponse(msgspec.Struct):
    """Every error response: a snake_case code and a sentence for people."""

    error: str
    detail: str


# What each error status means here, with a body the server really sends.
ERRORS: dict[int, tuple[str, dict[str, str]]] = {
    400: (
        "A query parameter is unknown or invalid, or the body is; `detail` names it.",
        {"error": "bad_request", "detail": "from_t: must be >= 0, got -1"},
    ),
    401: (
        "The token is missing or wrong.",
        {"error": "unauthorized", "detail": "missing or wrong bearer token"},
    ),
    404: (
        "No such path.",
        {"error": "not_found", "detail": "The requested URL was not found on the server."},
    ),
    405: (
        "The path does not take this method; `Allow` lists the methods it takes.",
        {"error": "method_not_allowed", "detail": "The method is not allowed for the URL."},
    ),
    409: (
        "This server's source is the built-in simulator: it takes no ingest.",
        {"error": "not_ingest", "detail": "this server's source is the built-in simulator"},
    ),
    413: (
        f"The body is over {MAX_INGEST_BYTES} bytes.",
        {"error": "too_large", "detail": f"body over {MAX_INGEST_BYTES} bytes"},
    ),
    500: (
        "A history record failed its checksum (`corrupt_record`), or a bug (`internal`, logged).",
        {"error": "internal", "detail": "RuntimeError"},
    ),
    503: (
        "The service is starting or stopping, or the store refused a write (`unavailable`).",
        {"error": "unavailable", "detail": "the service is starting or stopping"},
    ),
}

# Access (docs/protocol.md, "Read access"). The read token is optional: without
# `read_token` set, no token is needed, hence the empty requirement first.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "readBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The read token (`--read-token`), only when the server has one set.",
    },
    "readQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The read token as `?token=` (browsers), only when the server has one set.",
    },
    "ingestBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The ingest token (`--ingest-token`); separate from the read token.",
    },
}
READ_ACCESS: list[dict[str, list[str]]] = [{}, {"readBearer": []}, {"readQuery": []}]
INGEST_ACCESS: list[dict[str, list[str]]] = [{"ingestBearer": []}]

DESCRIPTION = f"""\
The HTTP side of tickcast, a live market-data feed.

* The WebSocket stream `GET /ws/stream` is described as AsyncAPI 3 in
  [/asyncapi.json](/asyncapi.json); its handshake refusals (400, 401, 429, 503) are JSON too.
  A 400 names the first bad parameter (checked in the order `from_t`, `from_ts`,
  `to_t`, `to_ts`, `speed`, `batch`, `fields`): `speed` must be `max` or
  {MIN_SPEED:g}…{MAX_SPEED:g}, and a range that ends before it starts (`to_t < from_t`,
  `to_ts < from_ts`) is refused.
* Every error response is JSON: `{{"error": "<code>", "detail": "<sentence>"}}`.
* A path not listed here answers 404; a method a path does not take answers 405
  with an `Allow` header.
* A query parameter a path does not list is answered 400 naming it (a typo such
  as `lmit` is never ignored); a path that lists none takes none.
* `/incremental` caps `limit` at {PAGE_LIMIT} without an error.
* With `read_token` set, `/incremental`, `/export`, `/` and `/ws/stream` need it
  (`Authorization: Bearer` or `?token=`); `/health` and `/metrics` stay open.
* tickcast {__version__}.
"""


# -- decorators ---------------------------------------------------------------------------


def answers(*statuses: int) -> Callable[[F], F]:
    """Document error statuses the route can answer, with the JSON error body."""

    def decorator(func: F) -> F:
        known = getattr(func, _ANSWERS, ())
        setattr(func, _ANSWERS, (*known, *statuses))
        return func

    return decorator


def page(
    *content_types: str, description: str, headers: dict[str, tuple[str, str]] | None = None
) -> Callable[[F], F]:
    """Document a 200 whose body is not JSON, in any of ``content_types``.

    ``headers``: response headers of the 200, ``{name: (JSON type, description)}``.
    """

    def decorator(func: F) -> F:
        setattr(func, _PAGE, (content_types, description, headers or {}))
        return func

    return decorator


def json_body(type_: Any, description: str) -> Callable[[F], F]:
    """Document a required JSON request body of msgspec type ``type_``."""

    def decorator(func: F) -> F:
        setattr(func, _BODY, (type_, description))
        return func

    return decorator


def takes_query(*names: str) -> Callable[[F], F]:
    """Declare the query parameters the route takes; a request with any other gets 400.

    Without this decorator a route takes none. The names must be the ones its
    OpenAPI operation lists (``tests/test_openapi.py`` holds the two together).
    """

    def decorator(func: F) -> F:
        setattr(func, _QUERY, frozenset(names))
        return func

    return decorator


def query_names(func: Callable[..., Any]) -> frozenset[str]:
    """The query parameters ``func`` (a view function) takes: see :func:`takes_query`."""
    names: frozenset[str] = getattr(func, _QUERY, frozenset())
    return names


# -- building -----------------------------------------------------------------------------


def _components(*types: Any) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    return schemas, components


def error_response(status: int) -> dict[str, Any]:
    description, example = ERRORS[status]
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": REF.format(name="ErrorResponse")},
                "example": example,
            }
        },
    }
    if status == 405:
        response["headers"] = {
            "Allow": {
                "description": "The methods the path takes (RFC 9110 §10.2.1).",
                "required": True,
                "schema": {"type": "string"},
                "example": "GET, HEAD, OPTIONS",
            }
        }
    return response


def _with_error(documented: dict[str, Any] | None, status: int) -> dict[str, Any]:
    """``documented`` (a response a docs model gave) widened to also allow the error body."""
    error = error_response(status)
    if documented is None:
        return error
    merged = dict(documented)
    content = dict(merged.get("content", {}))
    media = dict(content.get("application/json", {}))
    schema = media.get("schema")
    error_schema = error["content"]["application/json"]["schema"]
    media["schema"] = error_schema if schema is None else {"anyOf": [schema, error_schema]}
    content["application/json"] = media
    merged["content"] = content
    merged["description"] = " ".join(
        part for part in (documented.get("description"), error["description"]) if part
    )
    return merged


def _page_schema(content_type: str) -> dict[str, Any]:
    json = content_type == "application/json" or content_type.endswith("+json")
    return {"type": "object"} if json else {"type": "string"}


def _openapi_json_path() -> dict[str, Any]:
    return {
        "get": {
            "summary": "This document (OpenAPI 3.1).",
            "operationId": "get_openapi",
            "responses": {
                "200": {
                    "description": "The OpenAPI description of the HTTP API.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": error_response(400),
                "500": error_response(500),
            },
        }
    }


class Provider(OpenAPIProvider):
    """quart-schema's generator, completed as the module docstring says; built once."""

    _built: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> dict[str, Any]:
        spec: dict[str, Any] = super().schema()
        paths = dict(spec["paths"])
        paths["/openapi.json"] = _openapi_json_path()
        spec["paths"] = dict(sorted(paths.items()))
        components = spec["components"]
        _, error_component = _components(ErrorResponse)
        components["schemas"].update(error_component)
        components["schemas"] = dict(sorted(components["schemas"].items()))
        components["responses"] = {
            "NotFound": error_response(404),
            "MethodNotAllowed": error_response(405),
        }
        components["securitySchemes"] = SECURITY_SCHEMES
        return spec

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        # quart-schema 0.25 keeps only a msgspec model's own schema, dropping the
        # components it refers to (``Tick`` in ``IncrementalResponse``): add them.
        response, components = super().build_response_object(model, headers_model)
        _, referred = _components(model)
        referred.pop(model.__name__, None)
        return response, {**components, **referred}

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        # 400 everywhere: an unknown query parameter is refused on every route.
        statuses: tuple[int, ...] = (*getattr(func, _ANSWERS, ()), 400, 500)
        page_doc: tuple[tuple[str, ...], str, dict[str, tuple[str, str]]] | None = getattr(
            func, _PAGE, None
        )
        body: tuple[Any, str] | None = getattr(func, _BODY, None)
        request_body: dict[str, Any] | None = None
        if body is not None:
            (schema,), body_components = _components(body[0])
            components.update(body_components)
            content = {"application/json": {"schema": schema}}
            request_body = {"description": body[1], "required": True, "content": content}
        for item in paths.values():
            for method, operation in list(item.items()):
                responses = {str(k): dict(v) for k, v in operation["responses"].items()}
                if page_doc is not None:
                    types, description, headers = page_doc
                    content = {t: {"schema": _page_schema(t)} for t in types}
                    responses["200"] = {"description": description, "content": content}
                    if headers:
                        responses["200"]["headers"] = {
                            name: {"description": text, "schema": {"type": type_}}
                            for name, (type_, text) in headers.items()
                        }
                for code in statuses:
                    responses[str(code)] = _with_error(responses.get(str(code)), code)
                for key, response in responses.items():
                    if not response.get("description"):
                        response["description"] = HTTPStatus(int(key)).phrase
                operation = dict(operation, responses=dict(sorted(responses.items())))
                if request_body is not None:
                    operation["requestBody"] = request_body
                # Docstrings are reST; a summary is plain text, a description markdown.
                for key, literal in (("summary", r"\1"), ("description", r"`\1`")):
                    if operation.get(key):
                        operation[key] = _LITERAL.sub(literal, operation[key])
                    else:
                        operation.pop(key, None)
                if not operation.get("parameters"):
                    operation.pop("parameters", None)
                for parameter in operation.get("parameters", ()):
                    # werkzeug's any() converter keeps its names in a set: without
                    # sorting, the enum's order (and the document) changed per process.
                    enum = parameter.get("schema", {}).get("enum")
                    if enum is not None:
                        parameter["schema"]["enum"] = sorted(enum)
                item[method] = operation
        return paths, components


def install(app: Quart) -> QuartSchema:
    """Serve ``/openapi.json`` for ``app`` (no UI of quart-schema's: ``/docs`` is ours)."""
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "msgspec"
    return QuartSchema(
        app,
        info={"title": "tickcast", "version": __version__, "description": DESCRIPTION},
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        conversion_preference="msgspec",
        openapi_provider_class=Provider,
    )
