import time, collections
from typing import Any
import pytest
from hypothesis import HealthCheck, settings
import schemathesis
from schemathesis.checks import not_a_server_error

T = collections.defaultdict(float)
N = collections.defaultdict(int)

@pytest.fixture(scope="module")
def fuzz_server(new_demo_server):
    return new_demo_server()

@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    yield schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    for k, v in sorted(T.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{v:7.2f}s {N[k]:4d} {k}")

schema = schemathesis.pytest.from_fixture("api_schema")

@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_x(case):
    t = time.perf_counter()
    response = case.call(timeout=60)
    T[case.operation.label] += time.perf_counter() - t
    N[case.operation.label] += 1
    case.validate_response(response, checks=[not_a_server_error])
