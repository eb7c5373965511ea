"""Property-based tests of the running API against its own OpenAPI document (schemathesis):
requests generated from ``/openapi.json`` of a real server, sent with the admin token, must
never get a 5xx, and every answer must be one the document promises (status code, content
type, headers, body schema). Both valid inputs and inputs that break the schema (which
must be refused with a 4xx) are generated.

Every default check runs but ``positive_data_acceptance``: the document cannot say every
service rule (that an ``ip`` rule needs an address, that a name is free, that an instance
needs an identity), and those schema-valid requests are rightly refused with a 400, which
the document lists.

Schemathesis' own pytest integration (``from_fixture``) does not run on this pytest, so
each operation is a test here, driven by hypothesis directly with the strategies
schemathesis derives from the document. Bounded: a few examples per operation and mode,
so the whole file runs in well under a minute on a loaded two-core machine.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests.api.server import ApiServer

MAX_EXAMPLES = 12

OPERATIONS = [
    "GET /v1/health",
    "GET /v1/whoami",
    "GET /v1/shares",
    "POST /v1/shares",
    "GET /v1/shares/{share}",
    "PUT /v1/shares/{share}",
    "DELETE /v1/shares/{share}",
    "POST /v1/shares/{share}/extend",
    "POST /v1/shares/{share}/shrink",
    "GET /v1/shares/{share}/access",
    "POST /v1/shares/{share}/access",
    "PUT /v1/shares/{share}/access/{rule_id}",
    "DELETE /v1/shares/{share}/access/{rule_id}",
    "GET /v1/instances",
    "POST /v1/instances",
    "GET /v1/instances/{uuid}",
    "PUT /v1/instances/{uuid}",
    "DELETE /v1/instances/{uuid}",
    "GET /v1/quotas",
    "GET /v1/quota-defaults",
    "PUT /v1/quota-defaults",
    "GET /v1/quotas/{tenant}",
    "PUT /v1/quotas/{tenant}",
    "DELETE /v1/quotas/{tenant}",
    "GET /v1/gateways",
    "GET /v1/volumes",
    "GET /v1/tokens",
    "POST /v1/tokens",
    "DELETE /v1/tokens/{name}",
]


@pytest.fixture(scope="module")
def api_schema(api: ApiServer) -> Any:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


def test_every_served_operation_is_tested(api: ApiServer) -> None:
    paths = httpx.get(f"{api.url}/openapi.json").json()["paths"]
    served = {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}
    assert served == set(OPERATIONS)


#: Operations that take no input at all: there is no schema-violating request to make.
NO_INPUT = {"GET /v1/health"}
CASES = [
    pytest.param(label, mode, id=f"{label}-{mode.value}")
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and label in NO_INPUT)
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_the_api_keeps_the_promises_of_its_openapi_document(
    api: ApiServer, api_schema: Any, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    auth = {"Authorization": f"Bearer {api.admin_token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

    run()
