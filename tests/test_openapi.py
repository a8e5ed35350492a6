"""The OpenAPI document against the live API: schemathesis generates requests from it and
checks every answer (status documented, body matching its schema, no server error).

schemathesis' pytest plugin reads a pytest internal that pytest 9 removed, so the
operations' Hypothesis strategies are driven here directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from collab.documents import DocSummary
from collab.errors import HTTP_ERROR, DocNotFound
from collab.openapi import spec
from collab.store import Version
from tests.conftest import ServerProcess


def test_api_matches_its_openapi_document(server_process: Callable[..., ServerProcess]) -> None:
    server = server_process()
    server.start()
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server.port}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12  # every route under /api
    for operation in operations:
        check_operation(operation)


def check_operation(operation: Any) -> None:
    # Any bytes fit "binary", but only a Yjs update is accepted, and any string or object
    # fits the content a PUT takes, but only a document of the editor's schema is: a 400
    # for schema-valid bodies is right there, so that one check is left out for those.
    rejects_valid = operation.label.endswith("/updates") or operation.method.upper() == "PUT"
    excluded = [positive_data_acceptance] if rejects_valid else []

    @given(case=operation.as_strategy())
    # Derandomized: CI runs the same examples every time, so a failure is a mismatch to
    # fix, not luck; wider random runs are worth doing by hand after API changes.
    @settings(
        max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        case.call_and_validate(excluded_checks=excluded)

    check()


def test_the_records_json_is_what_their_schemas_say() -> None:
    """A record's schema sits beside its `as_json`; schemathesis checks the live answers,
    this checks every field, even those a generated request may never reach."""
    version = Version(3, "d", 1_763_795_527.619, "named", None, 42, 1)
    summary = DocSummary("d", 1_763_795_527.5, 1_763_795_600.25, 100, 4, 2)
    error = DocNotFound("no document named 'd'")
    for record, schema in [
        (version.as_json(), Version.SCHEMA),
        (summary.as_json(), DocSummary.SCHEMA),
        (error.as_json()["error"], spec()["components"]["schemas"]["Error"]["properties"]["error"]),
    ]:
        assert set(record) == set(schema["required"]) == set(schema["properties"])
    codes = spec()["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert {"doc_not_found", "version_not_found", HTTP_ERROR} <= set(codes["enum"])
