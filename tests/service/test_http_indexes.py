"""GET /v1/indexes, /v1/indexes/{name}, /v1/indexes/{name}/items/{item_id}: values from the manifest and
the index itself."""

from __future__ import annotations

import json

import numpy as np
import pytest


def manifest(index_root: str, name: str) -> dict:
    with open(f"{index_root}/{name}/manifest.json", encoding="utf-8") as f:
        return json.load(f)


def test_list_indexes(client, index_root):
    r = client.get("/v1/indexes")
    assert r.status_code == 200
    body = r.json()
    assert body["unavailable"] == []
    by_name = {x["name"]: x for x in body["indexes"]}
    assert sorted(by_name) == ["demo", "plain"]
    demo, m = by_name["demo"], manifest(index_root, "demo")
    assert demo == {
        "name": "demo",
        "index_version": m["index_version"],
        "kind": "pq",
        "metric": "ip",
        "n_items": 600,
        "n_users": 50,
        "d": 16,
        "M": 4,
        "nbits": 6,
        "code_bytes_per_item": 4,
        "index_bytes_per_item": m["bytes"]["index_bytes_per_item"],
    }
    assert by_name["plain"]["n_users"] == 0


def test_index_detail(client, index_root):
    r = client.get("/v1/indexes/demo")
    assert r.status_code == 200
    body, m = r.json(), manifest(index_root, "demo")
    for key in (
        "index_version",
        "created_at",
        "format_version",
        "method",
        "metric",
        "similar_metric",
        "n_items",
        "n_users",
        "d",
        "bytes",
        "evaluation",
        "train_report",
        "trainer_config",
        "source",
    ):
        assert body[key] == m[key], key
    assert body["name"] == "demo"
    assert body["similar_metric"] == "cosine"
    assert body["rerank_available"] is True
    assert body["train_report"]["eval"]["recall@10"] > 0
    assert client.get("/v1/indexes/plain").json()["rerank_available"] is False


@pytest.mark.parametrize("item_id", ["0", "42", "599"])
def test_item_info(client, svc_data, item_id):
    r = client.get(f"/v1/indexes/demo/items/{item_id}")
    assert r.status_code == 200
    body = r.json()
    row = int(item_id)
    idx = svc_data.index
    assert body == {
        "id": item_id,
        "row": row,
        "codes": idx.codes[row].tolist(),
        "norm": pytest.approx(float(idx.recon_norms[row])),
        "zero_vector": False,
        "scale": pytest.approx(float(np.linalg.norm(svc_data.items[row])), rel=1e-6),
    }


def test_item_info_zero_item(client, svc_data):
    row = svc_data.zero_rows[1]
    r = client.get(f"/v1/indexes/demo/items/{row}")
    assert r.status_code == 200
    body = r.json()
    assert body["zero_vector"] is True
    assert body["scale"] == 0.0  # |x| = 0: the item reconstructs to the zero vector
    assert len(body["codes"]) == 4


def test_openapi_and_docs(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/indexes/{name}/recommend",
        "/v1/indexes/{name}/similar",
        "/v1/indexes/{name}/recommend/batch",
        "/v1/indexes/{name}/similar/batch",
        "/v1/indexes",
        "/v1/indexes/{name}",
        "/v1/indexes/{name}/items/{item_id}",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path
    user_id = spec["components"]["schemas"]["RecommendRequest"]["properties"]["user_id"]
    assert user_id["anyOf"][0]["anyOf"] == [{"type": "string"}, {"type": "integer"}]
