"""Single queries run on the event loop when small (service/routes/query.py ``_inline``) and in the thread
pool otherwise: the routing rule, and the same answer (ids, scores, errors) on either path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vqrec.service.routes import query

URL = "/v1/indexes/demo"

QUERIES = [
    ("recommend", {"user_id": "u3", "k": 7}),
    ("recommend", {"user_id": "u3", "k": 5, "exclude_item_ids": ["1", "2"]}),
    ("similar", {"item_id": "42", "k": 6}),
]


class _Index(SimpleNamespace):
    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize(
    ("n", "nlist", "nprobe", "body", "inline"),
    [
        (1_000_000, 2000, 50, {}, True),  # 25,000 items scanned
        (1_000_000, 2000, 50, {"nprobe": 1000}, False),  # half the catalogue
        (1_000_000, 1, 1, {}, False),  # flat: every item
        (100_000, 1, 1, {}, True),
        (100_000, 1, 1, {"exclude_item_ids": ["x"] * 1001}, False),
        (100_000, 1, 1, {"rerank": 1001}, False),
        (100_000, 1, 1, {"rerank": 1000}, True),
    ],
)
def test_which_queries_run_on_the_event_loop(n, nlist, nprobe, body, inline):
    index = _Index(n=n, nlist=nlist, nprobe=nprobe)
    q = SimpleNamespace(
        nprobe=body.get("nprobe"), rerank=body.get("rerank"), exclude_item_ids=body.get("exclude_item_ids", [])
    )
    assert query._inline(index, q) is inline


@pytest.mark.parametrize(("route", "body"), QUERIES)
def test_both_paths_give_the_same_answer(client, monkeypatch, route, body):
    inline = client.post(f"{URL}/{route}", json=body)
    monkeypatch.setattr(query, "INLINE_MAX_SCAN", -1)  # every query to the thread pool
    pooled = client.post(f"{URL}/{route}", json=body)
    assert inline.status_code == pooled.status_code == 200, (inline.text, pooled.text)
    a, b = inline.json(), pooled.json()
    assert a["results"] == b["results"] and a["index_version"] == b["index_version"]


@pytest.mark.parametrize("pooled", [False, True])
def test_errors_are_the_same_on_both_paths(client, monkeypatch, assert_error, pooled):
    if pooled:
        monkeypatch.setattr(query, "INLINE_MAX_SCAN", -1)
    assert_error(client.post(f"{URL}/recommend", json={"user_id": "nobody", "k": 5}), 404, "unknown_user", ("nobody",))
    assert_error(client.post(f"{URL}/similar", json={"item_id": "42", "k": 0}), 422, "invalid_k", ("k",))
