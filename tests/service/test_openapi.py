"""The OpenAPI document matches what the service does (finding 10 of the reliability sweep): every error
status with the real error body, text/plain for /metrics, HEAD on the health routes, security only with
keys; and bodies that cannot be parsed are 422 malformed_json, as documented, not 400."""

from __future__ import annotations

import pytest

from vqrec.service.settings import Settings


@pytest.fixture
def doc(make_client, index_root):
    with make_client(Settings(index_root=index_root)) as c:
        return c.get("/openapi.json").json()


def test_every_error_status_has_the_error_body(doc) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's {detail} is not what we send
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert resp["content"]["application/json"]["schema"] == ref, (method, path, status)
    recommend = doc["paths"]["/v1/indexes/{name}/recommend"]["post"]["responses"]
    assert {"401", "403", "404", "408", "413", "422", "503"} <= set(recommend)


def test_metrics_is_text_and_health_has_head(doc) -> None:
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert {"get", "head"} <= set(doc["paths"]["/healthz"]) and {"get", "head"} <= set(doc["paths"]["/readyz"])


def test_security_is_documented_only_with_keys(make_client, index_root, doc) -> None:
    assert "securitySchemes" not in doc.get("components", {})
    assert not [op for ops in doc["paths"].values() for op in ops.values() if "security" in op]
    with make_client(Settings(index_root=index_root, api_keys=["r"], admin_keys=["a"])) as c:
        keyed = c.get("/openapi.json").json()
        assert keyed["components"]["securitySchemes"]
        assert "security" in keyed["paths"]["/v1/indexes/{name}/recommend"]["post"]
        assert c.head("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"item_id": "\xff\xfe"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unparseable_body_is_422_malformed_json(client, assert_error, body, why) -> None:
    r = client.post("/v1/indexes/demo/similar", content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "malformed_json", (why,))
