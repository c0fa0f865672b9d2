"""Schemathesis over every operation of the OpenAPI document, with and without keys: no server error, and
every response is documented (status code, body schema, content type).

Bounded for the suite: a few generated examples per operation with a fixed seed (derandomized), in process
over ASGI. The long run the closing note quotes is the same checks from the command line against a served
index (10,000+ cases).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (the test extra)")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from vqrec.service.main import create_app  # noqa: E402
from vqrec.service.settings import Settings  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ADMIN = "schemathesis-admin-key"
EXAMPLES = settings(
    max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def _schema(index_root: str, **keys: Any) -> Iterator[Any]:
    app = create_app(Settings(index_root=index_root, **keys))
    with TestClient(app):  # runs the lifespan: the indexes are loaded onto app.state
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def open_schema(index_root: str) -> Iterator[Any]:
    yield from _schema(index_root)


@pytest.fixture(scope="module")
def keyed_schema(index_root: str) -> Iterator[Any]:
    yield from _schema(index_root, api_keys=["schemathesis-read-key"], admin_keys=[ADMIN])


without_keys = schemathesis.pytest.from_fixture("open_schema")
with_keys = schemathesis.pytest.from_fixture("keyed_schema")


@without_keys.parametrize()
@EXAMPLES
def test_every_operation_without_keys(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


@with_keys.parametrize()
@EXAMPLES
def test_every_operation_with_keys(case: Any) -> None:
    case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {ADMIN}"})
