"""Shared checks of REST answers (importable from any test: ``tests/`` is on ``sys.path``)."""

from __future__ import annotations

from typing import Any

import httpx

BEHAVIOR_ROW = {  # the values of a row of the demo's customer_behavior view, to push
    "tenure_months": 7,
    "monthly_charges": 42.0,
    "total_charges": 294.5,
    "support_tickets": 0,
    "orders": 3,
    "avg_order_value": 19.9,
    "days_since_last_order": 2,
}


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> Any:
    """Check that ``response`` is the API's JSON error with ``status`` (and ``type_``); return
    its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"type", "message", "details"}
    assert error["message"] and "Traceback" not in response.text
    if type_ is not None:
        assert error["type"] == type_, error
    return error


FEAST_ROUTES = ("/get-online-features", "/push", "/write-to-online-store", "/materialize")
"""Routes of Feast's feature server (``/materialize`` prefixes ``/materialize-incremental``)."""


def assert_feast_error(response: Any, status: int, cls: str | None = None) -> dict[str, Any]:
    """Check that ``response`` is Feast's error with ``status``: a JSON string holding
    ``module``, ``class`` and ``message`` (Feast's client raises ``feast.errors.<class>``)."""
    import json

    assert response.status_code == status, response.text
    error = json.loads(response.json())
    assert set(error) == {"module", "class", "message"} and error["module"] == "feast.errors"
    if cls is not None:
        assert error["class"] == cls, error
    return dict(error)


def assert_any_error(response: Any, status: int, type_: str | None = None) -> Any:
    """:func:`assert_error` on the native API, :func:`assert_feast_error` on Feast's routes
    (their message only: Feast's format has no type or details). Errors answered before the
    route (the body size limit, 413) keep the native format on every route."""
    if response.request.url.path.startswith(FEAST_ROUTES) and isinstance(response.json(), str):
        return {"message": assert_feast_error(response, status)["message"]}
    return assert_error(response, status, type_)
