"""Property-based fuzz of the registry API from its own OpenAPI document (schemathesis).

For every operation, schemathesis generates valid and invalid requests from the
document and sends each one as an administrator and as a department (杭州市市场监督管理局,
which owns registrations-like resources of its own). Whatever the input, the registry
never answers with a server error, and every answer matches the document: a declared
status, a declared content type, and a body of the declared schema.

Runs on a database of its own (the fuzzer creates departments and resources freely),
derandomized, with a modest number of examples so it stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from registry.api import create_app
from registry.audit import Actor
from registry.db import session_factory, transaction
from registry.service import issue_token, token_digest

ADMIN_TOKEN = "registry-fuzz-admin-token"
#: negative_data_rejection found real gaps (unknown and repeated query parameters were
#: ignored). With other seeds it can also report a false positive: a query value
#: "type-mutated" to a boolean is still a valid string on the wire (?entity_id=false).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture(scope="module")
def fuzzed_app(registry_url: str) -> FastAPI:
    return create_app(registry_url, token_digest(ADMIN_TOKEN))


@pytest.fixture(scope="module")
def identities(registry_url: str) -> Iterator[dict[str, dict[str, str]]]:
    with transaction(session_factory(registry_url)) as session:
        department = issue_token(session, Actor.system("fuzz-setup"), "hz-amr").token
    yield {
        "admin": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        "department": {"Authorization": f"Bearer {department}"},
    }


@pytest.fixture(scope="module")
def registry_openapi(fuzzed_app: FastAPI) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("registry_openapi")


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_the_registry_answer_with_a_server_error_or_off_contract(
    case: schemathesis.Case, identities: dict[str, dict[str, str]]
) -> None:
    for headers in identities.values():
        case.call_and_validate(headers=headers, checks=CHECKS)
