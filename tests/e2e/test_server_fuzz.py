"""Property-based API fuzzing: schemathesis generates requests from ``/openapi.json``.

The server runs against its own demo repo, since fuzzed writes may change it. Requests are
generated both as the document declares them (positive) and breaking it (negative), and the
server must agree with its document:

- no request, however odd, gets a 5xx;
- every status it answers is declared for that operation, with the declared content type and
  a body that matches the declared schema (errors included: the JSON error shape);
- a request that breaks the document is refused with a 4xx.

Not checked: that every request the document allows succeeds (``positive_data_acceptance``):
a well-formed request may still name an object that does not exist (404), clash with the
registry (409) or fail a rule the schema cannot say (422); each of those answers is declared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

pytestmark = pytest.mark.slow

# Bounded and derandomized by default (the suite must stay fast and repeatable); for a deeper
# run raise the examples, and give seeds to explore other cases (one run per seed):
# QUIVER_FUZZ_EXAMPLES=200 QUIVER_FUZZ_COVERAGE=1 QUIVER_FUZZ_SEED=7 \
#     pytest tests/e2e/test_server_fuzz.py
EXAMPLES = int(os.environ.get("QUIVER_FUZZ_EXAMPLES", "8"))
COVERAGE = os.environ.get("QUIVER_FUZZ_COVERAGE", "0") == "1"
SEED = os.environ.get("QUIVER_FUZZ_SEED")


@pytest.fixture(scope="module")
def fuzz_server(new_demo_server: Callable[[], Any]) -> Any:
    return new_demo_server()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Any) -> Any:
    from schemathesis.config import SchemathesisConfig

    # The coverage phase (boundary values of every parameter) runs once per operation; the
    # fuzzing phase adds max_examples random requests per operation.
    config = SchemathesisConfig.from_dict(
        {"generation": {"mode": "all"}, "phases": {"coverage": {"enabled": COVERAGE}}}
    )
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED is None,  # CI runs the same cases every time; QUIVER_FUZZ_SEED explores
    suppress_health_check=list(HealthCheck),
)
@(seed(int(SEED)) if SEED is not None else lambda test: test)
def test_the_server_agrees_with_its_openapi_document(case: Any) -> None:
    response = case.call(timeout=60)
    case.validate_response(response, checks=CHECKS)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,  # the coverage phase's undeclared methods: 405 with Allow
]
