"""Feast's wire protocol details for :mod:`quiver.server.compat.feast`.

- :class:`FeastRoute`: on the Feast routes only, errors answer as Feast's feature server does,
  so Feast's client raises its typed exceptions: the body is a JSON *string* holding
  ``{"module", "class", "message"}`` (``FeastError.to_error_detail()``), with Feast's status
  (404 for a missing object, 422 for an unknown push source). Errors Feast has no class for
  answer ``feast.errors.FeastError`` with Quiver's own 4xx status.
- :func:`normalize_entities`: entity values coerced to the join key's type where that loses
  nothing (``"1001"`` and ``1001.0`` for an int64 key, ``1001`` for a string key), and an
  entity's name accepted for its single join key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from quiver.errors import InvalidError, NotFoundError, QuiverError
from quiver.server.errors import _validation_error
from quiver.server.schemas import StrictJSONRoute

__all__ = [
    "FeastRoute",
    "PushSourceNotFound",
    "feast_error",
    "feast_error_for",
    "normalize_entities",
    "view_versions",
    "with_versions",
]

_NOT_FOUND_CLASSES = (
    ("on-demand feature view '", "OnDemandFeatureViewNotFoundException"),
    ("feature view '", "FeatureViewNotFoundException"),
    ("feature service '", "FeatureServiceNotFoundException"),
    ("entity '", "EntityNotFoundException"),
    ("data source '", "DataSourceObjectNotFoundException"),
)
_INT_TEXT = re.compile(r"^[+-]?\d{1,19}$")


class PushSourceNotFound(NotFoundError):
    """No push source (nor feature view or data source) has the name Feast's ``/push`` gave."""

    status_code = 422


def feast_error(status: int, cls: str, message: str) -> Response:
    """Feast's error body: ``FeastError.to_error_detail()`` encoded as a JSON string."""
    detail = json.dumps({"module": "feast.errors", "class": cls, "message": message})
    return Response(json.dumps(detail), status_code=status, media_type="application/json")


def _class_of(exc: QuiverError) -> str:
    if isinstance(exc, PushSourceNotFound):
        return "PushSourceNotFoundException"
    if isinstance(exc, NotFoundError):
        text = exc.message.lower()
        for prefix, cls in _NOT_FOUND_CLASSES:
            if text.startswith(prefix):
                return cls
        return "FeastObjectNotFoundException"
    return "FeastError"


async def feast_error_for(request: Request, exc: Exception) -> Response | None:
    """Feast's error response for ``exc``; ``None`` where the server's own handling stays
    (401/403 as on every route, 5xx logged as elsewhere, anything unexpected)."""
    if isinstance(exc, QuiverError):
        if exc.status_code >= 500 or exc.status_code in (401, 403):
            return None
        return feast_error(exc.status_code, _class_of(exc), exc.message)
    if isinstance(exc, RequestValidationError):
        native = await _validation_error(request, exc)
        error = json.loads(bytes(native.body))["error"]
        causes = [str(d["ctx"]["error"]) for d in error["details"] if "error" in d.get("ctx", {})]
        message = error["message"] + (f" ({'; '.join(causes)})" if causes else "")
        return feast_error(native.status_code, "FeastError", message)
    if isinstance(exc, HTTPException) and 400 <= exc.status_code < 500:  # FastAPI's own, e.g.
        if exc.status_code in (401, 403, 413):  # a body it cannot parse
            return None
        return feast_error(exc.status_code, "FeastError", str(exc.detail))
    return None


class FeastRoute(StrictJSONRoute):
    """A route whose errors answer in Feast's format (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def feast_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (QuiverError, RequestValidationError, HTTPException) as exc:
                response = await feast_error_for(request, exc)
                if response is None:
                    raise
                return response

        return feast_handler


def _coerce(value: Any, dtype: str) -> Any:
    """``value`` as ``dtype`` when nothing is lost, else ``value`` unchanged."""
    if dtype in ("int32", "int64"):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_TEXT.match(value.strip()):
            return int(value.strip())
    elif dtype == "string" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def normalize_entities(store: Any, entities: dict[str, list[Any]]) -> dict[str, list[Any]] | None:
    """Feast's entity columns in Quiver's terms, or ``None`` when nothing would change."""
    key_dtypes: dict[str, str] = {}
    single_key: dict[str, str] = {}
    for entity in store.list_entities():
        for key in entity.join_keys:
            key_dtypes.setdefault(key, entity.value_type)
        if len(entity.join_keys) == 1:
            single_key[entity.name] = entity.join_keys[0]
    out: dict[str, list[Any]] = {}
    changed = False
    for name, values in entities.items():
        key = name
        if name not in key_dtypes and name in single_key and single_key[name] not in entities:
            key, changed = single_key[name], True
        dtype = key_dtypes.get(key)
        if dtype is not None:
            coerced = [_coerce(v, dtype) for v in values]
            changed = changed or any(a is not b for a, b in zip(coerced, values, strict=True))
            values = coerced
        out[key] = values
    return out if changed else None


def with_versions(
    store: Any, result: Any, n: int, features: list[str] | None, service: str | None
) -> bytes:
    """Feast's lookup body with ``metadata.feature_view_metadata``."""
    from quiver.server._online_json import dumps, feast_content

    content = feast_content(result, n)
    content["metadata"]["feature_view_metadata"] = view_versions(store, features, service)
    return dumps(content)


def view_versions(store: Any, features: list[str] | None, service: str | None) -> list[Any]:
    """Feast's ``feature_view_metadata``: each view the request reads, with its version."""
    refs = list(features or [])
    if service is not None:
        refs = list(store.get_feature_service(service).features)
    names: list[str] = []
    for ref in refs:
        view = ref.split(":", 1)[0]
        if view not in names:
            names.append(view)
    out = []
    for name in names:
        record = store.registry.find_record("feature_view", name) or (
            store.registry.find_record("on_demand_feature_view", name)
        )
        if record is None:
            raise InvalidError(f"feature view '{name}' does not exist")  # pragma: no cover
        out.append({"name": name, "version": record.version})
    return out
