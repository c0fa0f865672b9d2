"""Queries by id (LUTs from the precomputed codeword-pair tables, or decoded: both builds) agree with
queries by the same vector, within the quantization error of the query itself.

Oracle (Cauchy-Schwarz): for any candidate i,
    |cos(x_hat_q, x_hat_i) - cos(x_q, x_hat_i)| <= | x_hat_q/|x_hat_q| - x_q/|x_q| |     (item->item)
    |<q_hat, x_hat_i> - <q, x_hat_i>|           <= |q_hat - q| * |x_hat_i|              (user->item, codes)
so every shared result's score may differ by at most the query's own (direction) quantization error,
and with the error 0 (the query vector is its own reconstruction) the answers are identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from vqrec.index import Embeddings, build_index
from vqrec.index.codebooks import normalize_rows
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

N, N_ZERO = 1500, 3  # items i0..i1499, the first N_ZERO all zeros
# (method, pair tables) by test id
CASES = {
    "pq-pairs": ("pq", True),
    "opq-pairs": ("opq", True),
    "rq-pairs": ("rq", True),
    "pq-decode": ("pq", False),
    "rq-decode": ("rq", False),
}


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1234)
    d = 32
    centers = rng.standard_normal((20, d))
    x = centers[rng.integers(0, 20, N)] + 0.4 * rng.standard_normal((N, d))
    x = (x * rng.lognormal(0, 0.6, (N, 1))).astype(np.float32)
    x[:N_ZERO] = 0.0
    users = rng.standard_normal((40, d)).astype(np.float32)
    items = Embeddings([f"i{j}" for j in range(N)], x, "synthetic")
    ue = Embeddings([f"u{j}" for j in range(40)], users, "synthetic")
    return items, ue, {}  # the last: codebooks per method, shared by both layouts


@pytest.fixture(scope="module", params=list(CASES.values()), ids=list(CASES))
def built(request: pytest.FixtureRequest, data, layout_kwargs: dict[str, int]):  # type: ignore[no-untyped-def]
    """(index, x, users) in the layout of the test (tests/index/conftest.py): rows of a partitioned index are
    stored list by list, so the tests pick items by id (``i{j}`` is row j of ``x``) and find their rows with
    ``index.rows_of``."""
    items, ue, trained = data
    method, pair_tables = request.param
    if method not in trained:
        cfg = TrainConfig(method=method, M=8, nbits=6, niter=10, beam_size=2, eval_queries=20)
        trained[method] = train(items, cfg, queries=ue, show_progress=False)
    index = build_index(
        trained[method],
        items,
        users=ue,
        user_storage="codes",
        pair_tables=pair_tables,
        show_progress=False,
        **layout_kwargs,
    )
    return index, items.vectors, ue.vectors


def ids_of(js) -> list[str]:  # type: ignore[no-untyped-def]
    """Item ids of rows ``js`` of the input ``x`` (not rows of the index)."""
    return [f"i{j}" for j in js]


def input_space_reconstruction(index, rows):
    y = index.codebooks.decode_input_space(index.codes[rows])
    return y * index.item_scale[rows][:, None] if index.item_scale is not None else y


def test_similar_by_id_matches_its_reconstruction(built) -> None:
    """By id (pair-table gather, or decode + LUT) == by the item's reconstruction as a vector."""
    index, x, _ = built
    assert index.lut_path == ("pairs" if index.pair_tables is not None else "decode")
    ids = ids_of(range(N_ZERO, 63))  # non-zero items
    rows = index.rows_of(ids)
    by_id = index.similar(ids, 20)
    # the same query as a vector: the item's reconstruction (error 0) -> identical answer
    by_vec = index.similar_to_vector(input_space_reconstruction(index, rows), 21)
    for q, (a, b) in enumerate(zip(by_id, by_vec, strict=True)):
        b_ids = [i for i in b.ids if i != ids[q]][:20]
        b_scores = [s for i, s in zip(b.ids, b.scores, strict=True) if i != ids[q]][:20]
        assert a.ids == b_ids
        np.testing.assert_allclose(a.scores, b_scores, atol=1e-5)


def test_similar_by_id_agrees_with_original_vector_within_quantization_error(built) -> None:
    index, x, _ = built
    js = np.arange(N_ZERO, 203)  # non-zero items, rows of x
    ids = ids_of(js)
    rows = index.rows_of(ids)  # their rows in the index
    err = np.linalg.norm(normalize_rows(input_space_reconstruction(index, rows)) - normalize_rows(x[js]), axis=1)
    by_id = index.similar(ids, 10)
    by_vec = index.similar_to_vector(x[js], 11)
    overlaps = []
    for q in range(len(ids)):
        a = dict(zip(by_id[q].ids, by_id[q].scores, strict=True))
        b = {i: s for i, s in zip(by_vec[q].ids, by_vec[q].scores, strict=True) if i != ids[q]}
        shared = set(a) & set(b)
        for i in shared:
            assert abs(a[i] - b[i]) <= err[q] + 1e-5, (ids[q], i, a[i], b[i], err[q])
        # an item the id query found but the vector query did not: its vector score is at most the
        # vector list's cut-off, and its id score at most err above that
        cut_b = min(b.values())
        for i in set(a) - set(b):
            assert a[i] <= cut_b + err[q] + 1e-5
        overlaps.append(len(shared) / 10)
    # a sanity floor on how close the two answers are on this data (mean direction error reported)
    assert np.mean(overlaps) > 0.5, (np.mean(overlaps), float(err.mean()))


def test_recommend_for_users_stored_as_codes_within_quantization_error(built) -> None:
    index, x, users = built
    assert index.users is not None and index.users.storage == "codes"
    uids = index.users.ids[:20]
    q_hat = index.codebooks.decode_input_space(index.users.codes[:20])
    if index.users.scale is not None:
        q_hat = q_hat * index.users.scale[:20, None]
    qerr = np.linalg.norm(q_hat - users[:20], axis=1)
    by_id = index.recommend(uids, 10)
    by_vec = index.search(users[:20], 10)
    norms = np.linalg.norm(input_space_reconstruction(index, np.arange(len(index))), axis=1)
    for q in range(20):
        b = dict(zip(by_vec[q].ids, by_vec[q].scores, strict=True))
        for i, s in zip(by_id[q].ids, by_id[q].scores, strict=True):
            if i in b:
                assert abs(s - b[i]) <= qerr[q] * norms[index.row_of(i)] * (1 + 1e-4) + 1e-5
    # with the reconstruction itself as the vector, the two paths give the same ranking
    again = index.search(q_hat, 10)
    assert [r.ids for r in again] == [r.ids for r in by_id]


def test_pairs_and_decode_paths_agree(built) -> None:
    index, _, _ = built
    saved = index.pair_tables, index.lut_path
    ids = ids_of(range(N_ZERO, 43))
    try:
        index.pair_tables, index.lut_path = index.codebooks.pair_tables(), "pairs"
        a = index.similar(ids, 15)
        index.lut_path = "decode"
        b = index.similar(ids, 15)
    finally:
        index.pair_tables, index.lut_path = saved
    for ra, rb in zip(a, b, strict=True):
        assert ra.ids == rb.ids
        np.testing.assert_allclose(ra.scores, rb.scores, atol=1e-5)


def test_exclusions_hold_when_k_covers_the_whole_catalogue() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    items = Embeddings([f"i{j}" for j in range(300)], x, "synthetic")
    cb = train(items, TrainConfig(method="pq", M=2, nbits=4, niter=5, eval_queries=10), show_progress=False)
    index = build_index(cb, items, show_progress=False)
    # k == n: the over-fetch cannot grow past n, and the excluded ids must still be filtered out
    (res,) = index.search(x[:1], 300, exclude=[["i0", "i5"]])
    assert len(res.ids) == 298 and "i0" not in res.ids and "i5" not in res.ids
    (res,) = index.similar(["i3"], 300, exclude=[["i9"]])
    assert len(res.ids) == 298 and "i3" not in res.ids and "i9" not in res.ids
    (res,) = index.search(x[:1], 1000)  # k > n: every item once
    assert sorted(res.ids) == sorted(items.ids)
