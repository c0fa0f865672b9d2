"""index/eval.py: recall against exact search, and a report that does not depend on how queries are blocked."""

from __future__ import annotations

import numpy as np
import pytest

from vqrec.index import build_index
from vqrec.index.eval import evaluate_index, recall_at_k
from vqrec.index.exact import ExactIndex, exact_search


def test_recall_at_k_counts_the_overlap_and_ignores_padding() -> None:
    truth = np.array([[1, 2, 3], [4, 5, -1], [-1, -1, -1]])
    found = np.array([[3, 9, 1], [5, -1, -1], [0, 1, 2]])
    # query 0: 2 of 3; query 1: 1 of its 2 valid; query 2 has no true neighbour and is left out
    assert recall_at_k(found, truth, 3) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert recall_at_k(found, truth, 1) == pytest.approx((0 + 0) / 2)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_exact_index_equals_one_shot_exact_search(recsys, metric) -> None:
    ex = ExactIndex(recsys.xb, metric)
    D, I = exact_search(recsys.xb, recsys.xq, 20, metric)
    parts = [ex.search(recsys.xq[i : i + 7], 20) for i in range(0, len(recsys.xq), 7)]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), I)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), D)


@pytest.mark.parametrize(("kind", "metric"), [("pq", "ip"), ("rq", "cosine"), ("pq", "l2")])
def test_report_does_not_depend_on_the_block_size(trained, recsys, kind, metric) -> None:
    index = build_index(trained(kind, metric), recsys.items, show_progress=False, item_vectors="float16")
    one = evaluate_index(index, recsys.items, recsys.users, nq=100, block_size=10**9)
    for block_size in (1, 7, 64):
        assert evaluate_index(index, recsys.items, recsys.users, nq=100, block_size=block_size) == one
    assert one["nq"] == 100 and one["item_to_item"]["nq"] == 100 and "user_to_item_rerank" in one


def test_recall_matches_a_direct_oracle_computation(trained, recsys) -> None:
    """user->item recall@10 recomputed here from faiss exact search and the index's own answers."""
    index = build_index(trained("pq", "ip"), recsys.items, show_progress=False)
    rep = evaluate_index(index, recsys.items, recsys.users, nq=10**6, ks=(10,))
    _, truth = exact_search(recsys.xb, recsys.xq, 10, "ip")
    found = [set(np.asarray(r.rows).tolist()) for r in index.search(recsys.xq, 10)]
    want = np.mean([len(f & set(t)) / 10 for f, t in zip(found, truth.tolist(), strict=True)])
    assert rep["user_to_item"]["recall@10"] == round(float(want), 4)
    assert rep["nq"] == len(recsys.xq)  # nq larger than the users: every user once


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_exact_search_over_a_large_database_uses_blas_and_matches_brute_force(metric) -> None:
    """From BLAS_MIN_ITEMS rows on, exact search runs faiss's BLAS path (several times faster for hundreds of
    queries); its answer is the float64 brute-force top-k (ids; scores to float32 rounding), and the global
    faiss setting is restored after."""
    import faiss

    from vqrec.index.exact import BLAS_MIN_ITEMS

    rng = np.random.default_rng(5)
    xb = rng.standard_normal((BLAS_MIN_ITEMS, 16)).astype(np.float32)
    xq = rng.standard_normal((40, 16)).astype(np.float32)
    before = faiss.cvar.distance_compute_blas_threshold
    D, I = exact_search(xb, xq, 10, metric)
    assert faiss.cvar.distance_compute_blas_threshold == before
    b, q = xb.astype(np.float64), xq.astype(np.float64)
    if metric == "cosine":
        b, q = b / np.linalg.norm(b, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    s = -((q[:, None, :] - b[None]) ** 2).sum(-1) if metric == "l2" else q @ b.T
    want = np.argsort(-s, axis=1, kind="stable")[:, :10]
    assert np.mean(I == want) >= 0.99  # a near-tie may swap two neighbours
    np.testing.assert_allclose(D, np.take_along_axis(s, I, 1), rtol=1e-4, atol=1e-4)
