"""PQ / OPQ / RQ training: determinism, input checks, and the training report against an independent
recomputation from the codes."""

from __future__ import annotations

import numpy as np
import pytest

from vqrec.index import ConfigError, Embeddings, InputError, build_index
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train, train_opq, training_sample

FAST = {"M": 4, "nbits": 5, "niter": 5, "opq_niter": 3, "beam_size": 2, "eval_queries": 20}
METHODS = ("pq", "opq", "rq")


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**FAST, **kw})


@pytest.fixture(scope="module")
def small(recsys, embed) -> Embeddings:
    """The first 1200 shared items (d=32), three of them all-zero."""
    x = recsys.xb[:1200].copy()
    x[[10, 500, 900]] = 0
    return embed(x, "i", "small.npy")


# ---- determinism --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_codebooks_and_codes(small, method):
    a = train(small, cfg(method=method), show_progress=False)
    b = train(small, cfg(method=method), show_progress=False)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    if method == "opq":
        np.testing.assert_array_equal(a.rotation, b.rotation)
    np.testing.assert_array_equal(a.encode(small.vectors), b.encode(small.vectors))
    c = train(small, cfg(method=method, seed=99), show_progress=False)
    assert not np.array_equal(a.centroids, c.centroids)
    assert not np.array_equal(a.encode(small.vectors), c.encode(small.vectors))


def test_opq_rotation_follows_the_seed_and_trains_quietly(small, capfd):
    """OPQ's inner PQ is ours (cfg.nbits, cfg.seed, min_points_per_centroid=1): the rotation depends
    on the seed, and faiss prints no 'WARNING clustering ... please provide at least' to stderr."""
    xt = np.ascontiguousarray(small.vectors[small.vectors.any(axis=1)])
    a = train_opq(xt, cfg(method="opq", seed=1), show_progress=False)
    b = train_opq(xt, cfg(method="opq", seed=2), show_progress=False)
    c = train_opq(xt, cfg(method="opq", seed=1), show_progress=False)
    np.testing.assert_array_equal(a.rotation, c.rotation)
    assert not np.array_equal(a.rotation, b.rotation)
    assert "WARNING clustering" not in capfd.readouterr().err


# ---- what training produces ---------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_trained_codebooks(small, method, metric):
    c = cfg(method=method, metric=metric)
    cb = train(small, c, show_progress=False)
    assert (cb.kind, cb.metric, cb.d, cb.M, cb.nbits) == (method, metric, 32, 4, 5)
    assert cb.centroids.shape == ((4, 32, 32) if method == "rq" else (4, 32, 8))
    assert cb.centroids.dtype == np.float32 and np.isfinite(cb.centroids).all()
    assert cb.norm_explicit is (metric == "ip")  # auto: explicit for ip, joint for l2, none for cosine
    assert cb.normalizes_items is (metric != "l2")
    assert cb.config == c.to_dict()
    assert (cb.rotation is not None) == (method == "opq")
    if method == "rq":
        assert cb.beam_size == 2
    if cb.normalizes_items:  # trained on unit directions: codewords reconstruct ~unit vectors
        norms = np.linalg.norm(cb.decode(cb.encode(small.vectors[:200])), axis=1)
        assert 0.7 < norms.mean() < 1.1
    else:  # trained on the raw vectors (l2, joint norms): reconstruction norms follow the item norms
        x = small.vectors[:200]
        corr = np.corrcoef(np.linalg.norm(x, axis=1), np.linalg.norm(cb.decode(cb.encode(x)), axis=1))[0, 1]
        assert corr > 0.8


def test_zero_rows_do_not_take_part_in_normalized_training(small, embed):
    """Under norm-explicit / cosine training, all-zero rows are dropped before k-means: training on
    the data with or without them gives the same codebooks (all rows train when queries are given)."""
    nonzero = embed(small.vectors[small.vectors.any(axis=1)], "n")
    queries = embed(small.vectors[:30], "u")
    for metric in ("ip", "cosine"):
        a = train(small, cfg(metric=metric), queries=queries, show_progress=False)
        b = train(nonzero, cfg(metric=metric), queries=queries, show_progress=False)
        np.testing.assert_array_equal(a.centroids, b.centroids)


# ---- input checks -------------------------------------------------------------------------------


def test_fewer_training_vectors_than_codewords(embed, rng):
    few = embed(rng.standard_normal((100, 16)).astype(np.float32), "i", "few_items.npy")
    with pytest.raises(InputError, match=r"few_items\.npy: 100 training vectors for 256 codewords .*nbits=8"):
        train(few, cfg(nbits=8, M=4, metric="l2"), show_progress=False)
    train(few, cfg(nbits=6, M=4, metric="l2"), show_progress=False)  # 64 codewords: fine (with a warning)


def test_too_few_non_zero_vectors(embed, rng):
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[40:] = 0
    data = embed(x, "i", "mostly_zero.npy")
    with pytest.raises(InputError, match=r"mostly_zero\.npy: only 40 non-zero training vectors for 64 codewords"):
        train(data, cfg(nbits=6, metric="ip"), show_progress=False)


def test_d_not_divisible_by_M(small):
    with pytest.raises(ConfigError, match=r"d \(32\) must be divisible by M \(6\).*\[1, 2, 4, 8, 16, 32\]"):
        train(small, cfg(M=6), show_progress=False)
    assert train(small, cfg(method="rq", M=3, niter=2), show_progress=False).M == 3


def test_query_dimension_mismatch(small, embed, rng):
    q = embed(rng.standard_normal((10, 16)).astype(np.float32), "u", "users16.npy")
    with pytest.raises(InputError, match=r"users16\.npy: query dimension \(16\) does not match the items \(32\)"):
        train(small, cfg(), queries=q, show_progress=False)


def test_training_sample():
    data = Embeddings(ids=[str(i) for i in range(3000)], vectors=np.ones((3000, 4), np.float32))
    c = cfg(nbits=4, eval_queries=100, max_train_points=1000)  # 39 * 16 = 624 <= 2900: hold out
    tr, held = training_sample(data, c, has_queries=False)
    assert len(held) == 100 and len(tr) == 1000 and not np.intersect1d(tr, held).size
    assert (np.diff(tr) > 0).all() and (np.diff(held) > 0).all()
    tr2, held2 = training_sample(data, c, has_queries=False)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(held, held2)
    tr, _ = training_sample(data, cfg(nbits=8, eval_queries=100, max_train_points=10**6), has_queries=False)
    assert len(tr) == 3000  # 39 * 256 > 2900: everything trains, nothing is held out
    tr, _ = training_sample(data, cfg(nbits=4, eval_queries=100, max_train_points=10**6), has_queries=True)
    assert len(tr) == 3000


# ---- the training report ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "metric"), [("pq", "ip"), ("opq", "cosine"), ("rq", "l2")])
def test_report_matches_an_independent_recomputation(small, method, metric):
    cb = train(small, cfg(method=method, metric=metric, nbits=4), show_progress=False)
    rep = cb.report
    assert set(rep) >= {"n_train", "n_items", "train_seconds", "mse", "relative_mse", "eval", "usage"}
    assert rep["n_items"] == 1200 and rep["n_train"] == 1200 - 20  # 1180 >= 39 * 16: 20 queries held out
    assert rep["train_seconds"] >= 0
    ev = rep["eval"]
    assert ev["queries"] == 20 and ev["database"] == 1200 and ev["queries_held_out_of_training"] is True
    assert ev["queries_from"] == "items"
    assert 0 <= ev["recall@10"] <= 1 and 0 <= ev["recall@100"] <= 1
    assert ev["recall@10"] > 0.1  # random ranking: 10/1200; measured 0.23 (opq/cosine, M=4 x 4 bits) and up

    index = build_index(cb, small, show_progress=False)
    x = small.vectors.astype(np.float64)
    x_hat = cb.decode_input_space(index.codes).astype(np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    if cb.norm_explicit:
        x_hat *= np.linalg.norm(x, axis=1, keepdims=True)
    mse = ((x - x_hat) ** 2).sum(axis=1).mean()
    assert rep["mse"] == pytest.approx(mse, rel=1e-4)
    assert rep["relative_mse"] == pytest.approx(mse / (x**2).sum(axis=1).mean(), rel=1e-4)
    assert 0 < rep["relative_mse"] < 0.6

    usage = rep["usage"]
    assert len(usage["utilization"]) == len(usage["perplexity"]) == cb.M
    for m in range(cb.M):
        counts = np.bincount(index.codes[:, m], minlength=cb.ksub)
        p = counts[counts > 0] / counts.sum()
        assert usage["utilization"][m] == pytest.approx((counts > 0).mean(), abs=1e-4)
        assert usage["perplexity"][m] == pytest.approx(np.exp(-(p * np.log(p)).sum()), abs=0.01)
        assert 1 <= usage["perplexity"][m] <= cb.ksub
    assert usage["utilization_mean"] == pytest.approx(np.mean(usage["utilization"]), abs=1e-4)


def test_report_with_a_queries_file_and_a_database_sample(small, embed, recsys):
    users = embed(recsys.xq, "u", "users.npy")
    cb = train(small, cfg(eval_queries=30, eval_max_items=500), queries=users, show_progress=False)
    ev = cb.report["eval"]
    assert ev["queries_from"] == "queries file" and ev["queries"] == 30 and ev["database"] == 500
    assert cb.report["n_train"] == 1200  # with separate queries every item trains


def test_max_train_points(small):
    cb = train(small, cfg(max_train_points=400), show_progress=False)
    assert cb.report["n_train"] == 400


def test_rq_training_beam_is_used(small):
    """train_beam_size reaches faiss's training: a wider beam encodes the sample differently between stages, so
    the later stages' codebooks differ; the first stage's (k-means on the vectors) does not."""
    greedy = train(small, cfg(method="rq", train_beam_size=1), show_progress=False)
    wide = train(small, cfg(method="rq", train_beam_size=4), show_progress=False)
    assert wide.config["train_beam_size"] == 4
    np.testing.assert_array_equal(greedy.centroids[0], wide.centroids[0])
    assert not np.array_equal(greedy.centroids[1:], wide.centroids[1:])
