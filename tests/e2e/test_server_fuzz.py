"""Property-based API fuzzing: schemathesis generates requests from ``/openapi.json``.

The server runs against its own demo repo, since fuzzed writes may change it. The one
property checked: no request, however odd, gets a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis", reason="pip install 'quiver[dev]'")
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(new_demo_server: Callable[[], Any]) -> Any:
    return new_demo_server()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Any) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: Any) -> None:
    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
