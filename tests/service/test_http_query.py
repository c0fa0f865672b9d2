"""POST /v1/indexes/{name}/recommend, /similar and their /batch forms: answers checked against the
in-memory index (the oracle) and against exact scores where rerank makes them exact."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

URL = "/v1/indexes/demo"


def ids_of(body: dict[str, Any]) -> list[str]:
    return [r["id"] for r in body["results"]]


def scores_of(body: dict[str, Any]) -> list[float]:
    return [r["score"] for r in body["results"]]


def manifest_version(index_root: str) -> str:
    with open(f"{index_root}/demo/manifest.json", encoding="utf-8") as f:
        return str(json.load(f)["index_version"])


def test_recommend_by_user_matches_index_and_manifest(client, svc_data, index_root):
    r = client.post(f"{URL}/recommend", json={"user_id": "u3", "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = svc_data.index.recommend(["u3"], 7)[0]
    assert ids_of(body) == expected.ids
    np.testing.assert_allclose(scores_of(body), expected.scores, rtol=1e-6)
    assert len(body["results"]) == 7
    assert body["index_version"] == manifest_version(index_root)
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0


def test_recommend_default_k(client):
    r = client.post(f"{URL}/recommend", json={"user_id": "u0"})
    assert r.status_code == 200
    assert len(r.json()["results"]) == 10  # settings.default_k


@pytest.mark.parametrize("user", [0, 7, 49])
def test_recommend_by_user_equals_by_vector(client, svc_data, user):
    by_id = client.post(f"{URL}/recommend", json={"user_id": f"u{user}", "k": 20}).json()
    by_vec = client.post(f"{URL}/recommend", json={"vector": svc_data.users[user].tolist(), "k": 20}).json()
    assert ids_of(by_id) == ids_of(by_vec)
    np.testing.assert_allclose(scores_of(by_id), scores_of(by_vec), rtol=1e-5)


def test_results_sorted_and_exactly_k(client):
    for k in (1, 5, 33):
        body = client.post(f"{URL}/recommend", json={"user_id": "u1", "k": k}).json()
        s = scores_of(body)
        assert len(s) == k
        assert s == sorted(s, reverse=True)
        body = client.post(f"{URL}/similar", json={"item_id": "42", "k": k}).json()
        s = scores_of(body)
        assert len(s) == k
        assert s == sorted(s, reverse=True)


def test_k_larger_than_catalogue_returns_every_item_once(client):
    body = client.post(f"{URL}/recommend", json={"user_id": "u1", "k": 1000}).json()
    assert len(body["results"]) == 600
    assert len(set(ids_of(body))) == 600


def test_exclude_item_ids_respected(client, svc_data):
    top = ids_of(client.post(f"{URL}/recommend", json={"user_id": "u2", "k": 10}).json())
    excluded = [top[0], top[3], "not-an-item"]  # unknown ids in the exclude list are ignored
    body = client.post(f"{URL}/recommend", json={"user_id": "u2", "k": 10, "exclude_item_ids": excluded}).json()
    got = ids_of(body)
    assert not set(got) & set(excluded)
    assert len(got) == 10
    assert got[:8] == [i for i in top if i not in excluded]  # the rest keep their order
    assert got == svc_data.index.recommend(["u2"], 10, exclude=[excluded])[0].ids


def test_exclude_accepts_integer_ids(client):
    top = ids_of(client.post(f"{URL}/similar", json={"item_id": 10, "k": 5}).json())
    body = client.post(f"{URL}/similar", json={"item_id": 10, "k": 5, "exclude_item_ids": [int(top[0])]}).json()
    assert top[0] not in ids_of(body)


@pytest.mark.parametrize("item", ["0", "42", "599"])
def test_similar_never_returns_query_item(client, svc_data, item):
    body = client.post(f"{URL}/similar", json={"item_id": item, "k": 50}).json()
    assert item not in ids_of(body)
    assert len(body["results"]) == 50
    assert ids_of(body) == svc_data.index.similar([item], 50)[0].ids


def test_similar_integer_id_equals_string_id(client):
    a = client.post(f"{URL}/similar", json={"item_id": 42, "k": 5}).json()
    b = client.post(f"{URL}/similar", json={"item_id": "42", "k": 5}).json()
    assert ids_of(a) == ids_of(b)


def test_vector_of_json_integers_is_accepted(client):
    a = client.post(f"{URL}/recommend", json={"vector": [1] * 16, "k": 4})
    b = client.post(f"{URL}/recommend", json={"vector": [1.0] * 16, "k": 4})
    assert a.status_code == 200
    assert a.json()["results"] == b.json()["results"]


def test_similar_by_vector(client, svc_data):
    vec = svc_data.items[42]
    body = client.post(f"{URL}/similar", json={"vector": vec.tolist(), "k": 8}).json()
    expected = svc_data.index.similar_to_vector(vec, 8)[0]
    assert ids_of(body) == expected.ids
    # item->item scores are cosines
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores_of(body))


@pytest.mark.parametrize("which", range(3))
def test_zero_vector_item_has_no_neighbours(client, svc_data, which):
    row = svc_data.zero_rows[which]
    r = client.post(f"{URL}/similar", json={"item_id": str(row), "k": 10})
    assert r.status_code == 200
    assert r.json()["results"] == []


def test_zero_items_never_returned_by_similar(client, svc_data):
    body = client.post(f"{URL}/similar", json={"item_id": "1", "k": 1000}).json()
    assert not {str(r) for r in svc_data.zero_rows} & set(ids_of(body))
    assert len(body["results"]) == 600 - 1 - len(svc_data.zero_rows)


def test_rerank_gives_exact_scores(client, svc_data):
    user = svc_data.users[4]
    body = client.post(f"{URL}/recommend", json={"user_id": "u4", "k": 10, "rerank": 100}).json()
    got = ids_of(body)
    exact = {i: float(svc_data.items[int(i)] @ user) for i in got}
    np.testing.assert_allclose(scores_of(body), [exact[i] for i in got], rtol=1e-5, atol=1e-5)
    assert scores_of(body) == sorted(scores_of(body), reverse=True)
    # with every item as a candidate, rerank is exact search
    body = client.post(f"{URL}/recommend", json={"user_id": "u4", "k": 10, "rerank": 600}).json()
    truth = [str(i) for i in np.argsort(-(svc_data.items @ user), kind="stable")[:10]]
    assert ids_of(body) == truth


def test_similar_rerank(client, svc_data):
    body = client.post(f"{URL}/similar", json={"item_id": "7", "k": 5, "rerank": 599}).json()
    x = svc_data.items
    cos = (x @ x[7]) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(x[7]), 1e-30)
    cos[7] = -np.inf
    cos[list(svc_data.zero_rows)] = -np.inf
    assert ids_of(body) == [str(i) for i in np.argsort(-cos, kind="stable")[:5]]


# ---- batch -------------------------------------------------------------------------------------
def _recommend_queries(svc_data, client) -> list[dict[str, Any]]:
    """Mixed kinds, k, exclusions and rerank settings (so several groups, some with k > rerank)."""
    top = ids_of(client.post(f"{URL}/recommend", json={"user_id": "u1", "k": 4}).json())
    return [
        {"user_id": "u0", "k": 5},
        {"vector": svc_data.users[9].tolist(), "k": 3},
        {"user_id": "u1", "k": 12, "exclude_item_ids": top[:2]},
        {"user_id": "u3", "k": 5, "rerank": 40},
        {"user_id": "u2"},
        {"user_id": "u5", "k": 7, "rerank": 40},
        {"user_id": "u6", "k": 50, "rerank": 40},
        {"vector": svc_data.users[20].tolist(), "k": 9, "rerank": 30},
    ]


def test_recommend_batch_equals_single_queries(client, svc_data):
    queries = _recommend_queries(svc_data, client)
    r = client.post(f"{URL}/recommend/batch", json={"queries": queries})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == len(queries)
    assert body["index_version"] == svc_data.index.version
    for q, got in zip(queries, body["results"], strict=True):
        single = client.post(f"{URL}/recommend", json=q).json()
        assert [n["id"] for n in got] == ids_of(single)
        np.testing.assert_allclose([n["score"] for n in got], scores_of(single), rtol=1e-5)
        assert len(got) == q.get("k", 10)


def test_similar_batch_equals_single_queries(client, svc_data):
    queries = [
        {"item_id": "3", "k": 4},
        {"item_id": 17, "k": 4},  # a zero item: empty list
        {"vector": svc_data.items[100].tolist(), "k": 6},
        {"item_id": "3", "k": 9, "exclude_item_ids": ["1", "2"]},
        {"item_id": "250", "k": 6, "rerank": 25},
        {"vector": svc_data.items[101].tolist(), "k": 2, "rerank": 25},
    ]
    body = client.post(f"{URL}/similar/batch", json={"queries": queries}).json()
    assert body["results"][1] == []
    for q, got in zip(queries, body["results"], strict=True):
        single = client.post(f"{URL}/similar", json=q).json()
        assert [n["id"] for n in got] == ids_of(single)
        np.testing.assert_allclose([n["score"] for n in got], scores_of(single), rtol=1e-5)


def test_batch_groups_into_few_index_calls(client, monkeypatch, svc_data):
    from vqrec.index import CompressedIndex

    calls: list[tuple[str, int, int]] = []
    for method in ("recommend", "search"):
        orig = getattr(CompressedIndex, method)

        def spy(self, xs, k, *, _orig=orig, _name=method, **kw):
            calls.append((_name, len(xs), k))
            return _orig(self, xs, k, **kw)

        monkeypatch.setattr(CompressedIndex, method, spy)
    queries = [{"user_id": f"u{i}", "k": 1 + i % 5} for i in range(20)]
    queries += [{"vector": svc_data.users[i].tolist(), "k": 3} for i in range(5)]
    r = client.post(f"{URL}/recommend/batch", json={"queries": queries})
    assert r.status_code == 200
    assert sorted(calls) == [("recommend", 20, 5), ("search", 5, 3)]
    assert [len(x) for x in r.json()["results"]] == [q["k"] for q in queries]


def test_empty_batch(client):
    r = client.post(f"{URL}/recommend/batch", json={"queries": []})
    assert r.status_code == 200
    assert r.json()["results"] == []
