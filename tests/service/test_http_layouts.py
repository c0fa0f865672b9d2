"""The same index served flat and partitioned (every list probed): the HTTP answers are the same.

Both are built from ``svc_data``'s codebooks and data (PQ M=4 nbits=6 ip, float32 users and item vectors), one
flat (``nlist=0``), one partitioned with ``nlist = nprobe = 6`` (rows stored list by list, every list scanned),
and served under one index root. recommend and similar, by id and by vector, with exclusions and rerank, single
and batch: the same ids, scores equal up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from vqrec.index import Embeddings, build_index, save_index
from vqrec.service.settings import Settings

NLIST = 6
FLAT, PART = "/v1/indexes/flat", "/v1/indexes/part"


@pytest.fixture(scope="module")
def layouts(svc_data: Any) -> dict[str, Any]:
    items = Embeddings(ids=svc_data.item_ids, vectors=svc_data.items, source="items")
    users = Embeddings(ids=svc_data.user_ids, vectors=svc_data.users, source="users")
    cb = svc_data.index.codebooks
    kw: dict[str, Any] = {"users": users, "item_vectors": "float32", "show_progress": False}
    flat = build_index(cb, items, nlist=0, **kw)
    part = build_index(cb, items, nlist=NLIST, nprobe=NLIST, **kw)
    assert flat.partition is None and part.scan_kind == "lists" and part.nprobe == part.nlist == NLIST
    assert part.item_ids != flat.item_ids  # rows really are stored list by list
    return {"flat": flat, "part": part}


@pytest.fixture(scope="module")
def lclient(layouts: dict[str, Any], make_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("layouts") / "root"
    for name, index in layouts.items():
        save_index(index, str(root / name))
    with make_client(Settings(index_root=str(root))) as c:
        yield c


def _post(client: Any, url: str, body: dict[str, Any]) -> Any:
    r = client.post(url, json=body)
    assert r.status_code == 200, (url, body, r.text)
    return r.json()


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [n["id"] for n in a] == [n["id"] for n in b]
    np.testing.assert_allclose([n["score"] for n in a], [n["score"] for n in b], rtol=1e-5, atol=1e-6)


def test_detail_names_each_layout(lclient: Any) -> None:
    flat, part = lclient.get(FLAT).json(), lclient.get(PART).json()
    assert flat["scan"] == "flat"
    assert (part["scan"], part["nlist"], part["nprobe"]) == ("lists", NLIST, NLIST)


def _recommend_queries(svc_data: Any) -> list[dict[str, Any]]:
    return [
        {"user_id": "u0", "k": 10},
        {"user_id": "u7", "k": 33},
        {"vector": svc_data.users[9].tolist(), "k": 8},
        {"user_id": "u1", "k": 12, "exclude_item_ids": ["3", "42", "599", "not-an-item"]},
        {"vector": svc_data.users[20].tolist(), "k": 9, "exclude_item_ids": ["7"]},
        {"user_id": "u3", "k": 5, "rerank": 40},
        {"user_id": "u6", "k": 50, "rerank": 40},  # k > rerank
        {"vector": svc_data.users[30].tolist(), "k": 9, "rerank": 30, "exclude_item_ids": ["11"]},
        {"user_id": "u2", "k": 1000},  # the whole catalogue
    ]


def _similar_queries(svc_data: Any) -> list[dict[str, Any]]:
    return [
        {"item_id": "0", "k": 10},
        {"item_id": 599, "k": 20},
        {"item_id": "17", "k": 4},  # a zero item: no neighbours
        {"vector": svc_data.items[100].tolist(), "k": 6},
        {"item_id": "3", "k": 9, "exclude_item_ids": ["1", "2", "not-an-item"]},
        {"vector": svc_data.items[42].tolist(), "k": 7, "exclude_item_ids": ["42"]},
        {"item_id": "250", "k": 6, "rerank": 25},
        {"vector": svc_data.items[101].tolist(), "k": 2, "rerank": 25},
        {"item_id": "1", "k": 1000},  # every item but itself and the zero items
    ]


ROUTES = pytest.mark.parametrize(
    ("route", "make"), [("recommend", _recommend_queries), ("similar", _similar_queries)], ids=["recommend", "similar"]
)


@ROUTES
def test_single_queries_answer_the_same(lclient: Any, layouts: dict[str, Any], svc_data: Any, route, make) -> None:  # type: ignore[no-untyped-def]
    for q in make(svc_data):
        flat = _post(lclient, f"{FLAT}/{route}", q)["results"]
        part = _post(lclient, f"{PART}/{route}", q)["results"]
        _same(flat, part)
        assert flat or q.get("item_id") == "17", q
    # the flat answers are the in-memory index's (the oracle of tests/service/test_http_query.py)
    want = layouts["flat"].recommend(["u7"], 33)[0] if route == "recommend" else layouts["flat"].similar(["0"], 10)[0]
    got = _post(lclient, f"{PART}/{route}", make(svc_data)[1 if route == "recommend" else 0])["results"]
    assert [n["id"] for n in got] == want.ids


@ROUTES
def test_batch_answers_the_same_and_as_single(lclient: Any, svc_data: Any, route, make) -> None:  # type: ignore[no-untyped-def]
    queries = make(svc_data)
    flat = _post(lclient, f"{FLAT}/{route}/batch", {"queries": queries})["results"]
    part = _post(lclient, f"{PART}/{route}/batch", {"queries": queries})["results"]
    assert len(flat) == len(part) == len(queries)
    for q, f, p in zip(queries, flat, part, strict=True):
        _same(f, p)
        _same(p, _post(lclient, f"{PART}/{route}", q)["results"])  # the batch groups answer as single queries
