"""The OpenAPI 3.1 document, built from the same route table and pydantic models that serve."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.errors import ErrorResponse
from api.routing import API_PREFIX, Route
from core.sql_bounds import SQL_INT_MAX
from extensions.sessions import SESSION_COOKIE

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    401: "Missing, unknown or revoked token or session",
    403: "The role may not do this, or a session's request lacks its X-CSRF-Token (csrf_failed)",
    404: "No such resource",
    409: "Conflicts with the current state (e.g. extension taken)",
    422: "Invalid input (validation_error, invalid_body, number_out_of_range, ...);"
    " `error.field` names the field",
    429: "Too many failed sign-ins (locked); `error.retry_after` and Retry-After say how long",
    503: "Not now (unavailable): no node of the cluster runs the controller this moment, or "
    "it did not answer; retry",
}


def wav_download(
    *, summary: str, tag: str, operation_id: str, roles: str, id_name: str, errors: dict[str, str]
) -> dict[str, Any]:
    """The entry of a GET answering with a stored 8 kHz WAV (a prompt, a voicemail message, a
    call recording): routes served by aiohttp directly, outside the route table."""
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "operationId": operation_id,
            "description": f"Roles: {roles}.",
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": id_name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            ],
            "responses": {
                "200": {
                    "description": "8 kHz mono 16-bit WAV",
                    "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
                },
                **{code: {"description": text} for code, text in errors.items()},
            },
        }
    }


def openapi_document(routes: list[Route], extra_paths: dict[str, Any]) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorResponse}
    for route in routes:
        models.update(m for m in (route.body, route.response, route.query) if m is not None)
    entries: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, mode)
        for m in sorted(models, key=lambda m: m.__name__)
        for mode in ("validation", "serialization")
    ]
    refs, top = models_json_schema(entries, ref_template=_REF)

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    paths: dict[str, Any] = dict(extra_paths)
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.handler.__name__,
            "responses": _responses(route, ref),
        }
        parameters = (
            _path_parameters(route)
            + _query_parameters(route)
            + [
                {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
                for h in route.headers
            ]
        )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        # Either one: a bearer token, or a session cookie from POST /session.
        operation["security"] = [{"bearer": []}, {"session": []}] if route.roles is not None else []
        if route.roles is not None:
            roles = ", ".join(sorted(r.value for r in route.roles))
            self_note = "; a user may also act on themself" if route.allow_self else ""
            operation["description"] = f"Roles: {roles}{self_note}."
        paths.setdefault(API_PREFIX + route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Contact-center PBX API", "version": version("pbx")},
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "Set by POST /session; requests other than GET, HEAD and"
                    " OPTIONS also need the X-CSRF-Token header it returns",
                },
            },
        },
    }


def _responses(route: Route, ref: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if route.response is not None:
        responses[str(route.status)] = {
            "description": "Success",
            "content": {"application/json": {"schema": ref(route.response, "serialization")}},
        }
    else:
        responses[str(route.status if route.status != 200 else 204)] = {"description": "Done"}
    errors = set(route.errors)
    if route.body is not None or route.query is not None or "{" in route.path:
        # The wrapper refuses malformed input of any route that takes some (api.routing).
        errors.add(422)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": ref(ErrorResponse, "serialization")}},
        }
    return responses


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in route.path.split("/") if part.startswith("{")]
    # Digits only (else 404); beyond a SQL integer: 422 number_out_of_range (api.routing).
    schema = {"type": "integer", "minimum": 1, "maximum": SQL_INT_MAX}
    return [{"name": n, "in": "path", "required": True, "schema": dict(schema)} for n in names]


def _query_parameters(route: Route) -> list[dict[str, Any]]:
    if route.query is None:
        return []
    # Enums and nested types of query parameters live in components, like body schemas.
    schema = route.query.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]
