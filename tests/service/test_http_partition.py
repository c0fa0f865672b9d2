"""A partitioned 4-bit index over HTTP: per-request nprobe, the index detail, and its validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vqrec.index import Embeddings, build_index, save_index
from vqrec.service.settings import Settings
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

NLIST = 8


@pytest.fixture(scope="module")
def part(svc_data: Any):  # type: ignore[no-untyped-def]
    items = Embeddings(ids=svc_data.item_ids, vectors=svc_data.items, source="items")
    users = Embeddings(ids=svc_data.user_ids, vectors=svc_data.users, source="users")
    cfg = TrainConfig(method="pq", M=4, nbits=4, metric="ip", niter=10, eval_queries=20)
    cb = train(items, cfg, show_progress=False)
    return build_index(cb, items, users=users, nlist=NLIST, nprobe=2, item_vectors="float16", show_progress=False)


@pytest.fixture(scope="module")
def pclient(part: Any, make_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("part") / "root"
    save_index(part, str(root / "part"))
    with make_client(Settings(index_root=str(root))) as c:
        yield c


URL = "/v1/indexes/part"


def test_detail_names_the_scan_and_its_default(pclient: Any) -> None:
    r = pclient.get(URL)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["scan"], body["nlist"], body["nprobe"]) == ("fastscan4", NLIST, 2)


@pytest.mark.parametrize("nprobe", [None, 1, 3, NLIST, 500])
def test_nprobe_per_request_answers_as_the_index(pclient: Any, part: Any, svc_data: Any, nprobe: int | None) -> None:
    vec = svc_data.users[3].tolist()
    extra = {} if nprobe is None else {"nprobe": nprobe}
    r = pclient.post(f"{URL}/recommend", json={"vector": vec, "k": 10, **extra})
    assert r.status_code == 200, r.text
    want = part.search([vec], 10, nprobe=nprobe)[0]
    assert [n["id"] for n in r.json()["results"]] == want.ids
    r = pclient.post(f"{URL}/similar", json={"item_id": "7", "k": 5, "rerank": 30, **extra})
    assert r.status_code == 200, r.text
    assert [n["id"] for n in r.json()["results"]] == part.similar(["7"], 5, rerank=30, nprobe=nprobe)[0].ids


def test_batch_groups_by_nprobe(pclient: Any, part: Any) -> None:
    queries = [{"user_id": f"u{i}", "k": 5, "nprobe": 1 + i % 3} for i in range(9)]
    r = pclient.post(f"{URL}/recommend/batch", json={"queries": queries})
    assert r.status_code == 200, r.text
    for q, got in zip(queries, r.json()["results"], strict=True):
        assert [n["id"] for n in got] == part.recommend([q["user_id"]], 5, nprobe=q["nprobe"])[0].ids


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.5, 70000])
def test_bad_nprobe_is_a_422_naming_it(pclient: Any, assert_error: Any, bad: Any) -> None:
    r = pclient.post(f"{URL}/recommend", json={"user_id": "u1", "nprobe": bad})
    assert_error(r, 422, "validation_error", ("nprobe",))
