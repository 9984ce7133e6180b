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
