"""The error answers of the REST API in its OpenAPI document (:func:`declare_error_responses`):
every operation declares the 4xx it can give, with Quiver's JSON error body, or on the Feast
feature server routes Feast's own."""

from __future__ import annotations

from typing import Any

from quiver.server.schemas import ErrorResponse

__all__ = ["add_error_responses", "declare_error_responses"]

_ERRORS: dict[int, str] = {
    400: "the request body is not valid JSON",
    401: "no API key, or a bad, revoked or expired one",
    403: "the caller may not do this (a role or a permission denies it, or a path is outside "
    "the server's file roots)",
    413: "the request body, or the rows it asks for, is larger than the server's limits",
    422: "invalid input",
}
_GUARDED_TAGS = frozenset({"feast", "feast-platform"})


def declare_error_responses(app: Any) -> None:
    """Declare in the app's OpenAPI document the error answers each operation can give.

    An operation with a request body can answer 400 (not JSON), 413 (too large) and 422; one
    with path or query parameters 422; every operation under ``/api/v1`` and the Feast routes
    401 and 403 (authentication and permissions, and the file boundary). Each with the JSON
    error schema. Call it once on the app (``create_app`` does); the document is built at the
    first request for it, from the routes as they are then.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_error_responses(build())
        schema: dict[str, Any] = app.openapi_schema
        return schema

    app.openapi = openapi


def add_error_responses(schema: dict[str, Any]) -> None:
    """Add the error answers of :func:`declare_error_responses` to an OpenAPI document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorResponse" not in components:
        own = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(own.pop("$defs", {}))
        components["ErrorResponse"] = own
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    components.setdefault("FeastError", _FEAST_ERROR)
    feast_ref = {"$ref": "#/components/schemas/FeastError"}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes: set[int] = set()
            if "requestBody" in operation:
                codes |= {400, 413, 422}
            if operation.get("parameters"):
                codes.add(422)
            if path.startswith("/api/v1/") or _GUARDED_TAGS.intersection(operation.get("tags", ())):
                codes |= {401, 403}
            responses = operation["responses"]
            for code in sorted(codes):
                responses.setdefault(
                    str(code),
                    {
                        "description": _ERRORS[code],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
            if "feast" in operation.get("tags", ()):  # Feast's own error body on its routes
                for code, answer in responses.items():
                    if code.startswith("4") and code not in _NATIVE_ON_FEAST_ROUTES:
                        answer["content"] = {"application/json": {"schema": feast_ref}}


_NATIVE_ON_FEAST_ROUTES = frozenset({"401", "403", "413"})
"""The errors the Feast routes answer in Quiver's own format (authentication, permissions and
the body size, checked before the route)."""
_FEAST_ERROR: dict[str, Any] = {
    "type": "string",
    "title": "FeastError",
    "description": "Feast's error detail as its feature server sends it: a JSON string holding "
    '{"module": "feast.errors", "class": <exception class>, "message": ...}, which Feast\'s '
    "client turns back into that exception (see quiver.server.compat._feast_wire)",
}
