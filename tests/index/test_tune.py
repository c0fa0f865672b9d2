"""Autotune: the (nprobe, rerank) chosen for a target recall meets it on held-out queries, and becomes the
index's default (in memory, in the manifest, after a load)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import as_embeddings, recsys_arrays
from vqrec.index import ConfigError, build_index, load_index, save_index
from vqrec.index.eval import index_order
from vqrec.index.exact import ExactIndex
from vqrec.index.tune import NPROBE_GRID, PLATEAU, tune_search
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    xb, xq, _ = recsys_arrays(n=6000, d=16, nq=1200, n_topics=40, seed=5)
    items = as_embeddings(xb)
    cb = train(items, TrainConfig(method="pq", M=8, nbits=4, metric="ip", niter=8, eval_queries=10),
               show_progress=False)  # fmt: skip
    return items, xq, cb


def _recall(index, xb_index, xq, k=10, **kw) -> float:  # type: ignore[no-untyped-def]
    _, truth = ExactIndex(xb_index, index.metric).search(xq, k)
    res = index.search(xq, k, **kw)
    return float(np.mean([len(set(r.rows) & set(t.tolist())) / k for r, t in zip(res, truth, strict=True)]))


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_chosen_setting_meets_the_target_on_held_out_queries(setup, target: float) -> None:  # type: ignore[no-untyped-def]
    items, xq, cb = setup
    index = build_index(cb, items, nlist=40, item_vectors="float32", tune=False, show_progress=False)
    xb = index_order(index, items)
    tune_q, held_out = xq[:600], xq[600:]
    section = tune_search(index, xb, tune_q, target_recall=target)
    assert section["met"] and section["recall"] >= target
    assert (index.nprobe, index.default_rerank) == (section["nprobe"], section["rerank"])
    assert _recall(index, xb, held_out) >= target  # the defaults, on queries the sweep never saw
    # each re-rank depth's fewest lists reaching the target (+ one standard error), then the fastest of those
    se = (target * (1 - target) / (600 * 10)) ** 0.5
    ok = [c for c in section["curve"] if c["recall"] >= target + se]
    fewest = {r: min(c["nprobe"] for c in ok if c["rerank"] == r) for r in {c["rerank"] for c in ok}}
    assert section["nprobe"] == fewest[section["rerank"]]
    assert section["qps"] == max(c["qps"] for c in ok if c["nprobe"] == fewest[c["rerank"]])


def test_codes_only_picks_the_plateau(setup) -> None:  # type: ignore[no-untyped-def]
    items, xq, cb = setup
    index = build_index(cb, items, nlist=40, tune=False, show_progress=False)
    section = tune_search(index, index_order(index, items), xq[:400], target_recall=None)
    codes = [c["recall"] for c in section["curve"]]
    assert {c["rerank"] for c in section["curve"]} == {0}
    assert section["recall"] >= max(codes) - PLATEAU and index.default_rerank == 0
    # the fewest lists on the plateau, whatever the timings said
    assert section["nprobe"] == min(c["nprobe"] for c in section["curve"] if c["recall"] >= max(codes) - PLATEAU)
    assert index.nprobe == section["nprobe"]


def test_codes_only_sweep_stops_on_the_plateau_of_the_whole_curve(setup) -> None:  # type: ignore[no-untyped-def]
    """The codes-only sweep ends early once a step gains < PLATEAU / 4; its choice is still within PLATEAU of the best
    recall of every nprobe, measured here over the whole grid."""
    items, xq, cb = setup
    index = build_index(cb, items, nlist=40, tune=False, show_progress=False)
    xb, q = index_order(index, items), xq[:400]
    section = tune_search(index, xb, q, target_recall=None)
    whole = [_recall(index, xb, q, nprobe=p, rerank=0) for p in range(1, 41)]
    assert section["recall"] >= max(whole) - PLATEAU
    assert len(section["curve"]) < len({p for p in NPROBE_GRID if p <= 40} | {40})  # it did stop early


def test_unreachable_target_is_reported_not_met(setup) -> None:  # type: ignore[no-untyped-def]
    items, xq, cb = setup
    index = build_index(cb, items, nlist=40, tune=False, show_progress=False)
    section = tune_search(index, index_order(index, items), xq[:300], target_recall=1.0)
    assert section["met"] is False and section["recall"] == max(c["recall"] for c in section["curve"])


def test_build_tunes_by_default_and_the_artifact_keeps_it(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    items, xq, cb = setup
    users = as_embeddings(xq[:500], "u")
    index = build_index(cb, items, users=users, nlist=40, item_vectors="int8", show_progress=False)
    search = index.manifest["search"]
    assert search["target_recall"] == 0.95 and search["query_source"] == "users"
    assert index.manifest["partition"]["nprobe"] == index.nprobe == search["nprobe"]
    assert index.default_rerank == search["rerank"]
    path = str(tmp_path / "t")
    save_index(index, path)
    back = load_index(path)
    assert (back.nprobe, back.default_rerank) == (index.nprobe, index.default_rerank)
    a = back.search(xq[600:620], 10)
    b = back.search(xq[600:620], 10, nprobe=search["nprobe"], rerank=search["rerank"])
    assert [r.ids for r in a] == [r.ids for r in b]
    with pytest.raises(ConfigError, match="needs a partitioned index"):
        tune_search(build_index(cb, items, nlist=0, show_progress=False), items.vectors, xq[:10])


def test_training_report_scans_every_item_even_where_builds_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """The codebook report measures the codes, not a partition: with the auto partition threshold lowered below
    the report's database, its recall must still be the codes' (rows compared in the database's order)."""
    from vqrec.index import partition

    monkeypatch.setattr(partition, "AUTO_MIN_ITEMS", 100)
    xb, xq, _ = recsys_arrays(n=3000, d=16, nq=50, seed=9)
    cb = train(as_embeddings(xb), TrainConfig(method="pq", M=8, nbits=4, niter=8, eval_queries=50),
               queries=as_embeddings(xq, "u"), show_progress=False)  # fmt: skip
    assert cb.report["eval"]["recall@10"] > 0.3
