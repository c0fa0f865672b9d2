"""The quality report (index/semantic/quality.py) against oracles written here: per-level usage,
collisions, reconstruction error and neighbourhood preservation.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vqrec.index.semantic import (
    assign_suffixes,
    collisions,
    level_usage,
    neighbourhood_preservation,
    semantic_report,
)


def clusters(seed: int, per: int = 40, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Two tight clusters around orthogonal directions; labels 0/1."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:2] * 5.0
    labels = np.repeat([0, 1], per)
    x = centres[labels] + 0.05 * rng.standard_normal((2 * per, d))
    return x.astype(np.float32), labels


def test_neighbourhood_of_codes_that_follow_the_clusters():
    x, labels = clusters(0)
    codes = np.column_stack([labels, labels, labels])
    rep = neighbourhood_preservation(x, codes, k=10)
    assert rep == {
        "k": 10,
        "queries": 80,
        "metric": "cosine",
        **{f"share@{t}": 1.0 for t in (1, 2, 3)},
        **{f"chance@{t}": 0.5 for t in (1, 2, 3)},
    }
    # the other way round: every neighbour is in the other code
    rep = neighbourhood_preservation(x, np.column_stack([1 - labels]), k=10)
    assert rep["share@1"] == 1.0
    flipped = np.column_stack([labels ^ (np.arange(80) % 2)])  # half of each cluster in each code
    assert neighbourhood_preservation(x, flipped, k=10)["share@1"] == pytest.approx(0.5, abs=0.15)


def test_neighbourhood_of_random_codes_is_chance():
    rng = np.random.default_rng(1)
    x, _ = clusters(1, per=200)
    codes = rng.integers(0, 4, (400, 2))
    rep = neighbourhood_preservation(x, codes, k=10)
    assert rep["chance@1"] == pytest.approx(0.25, abs=0.01) and rep["chance@2"] == pytest.approx(1 / 16, abs=0.01)
    assert rep["share@1"] == pytest.approx(rep["chance@1"], abs=0.04)
    assert rep["share@2"] == pytest.approx(rep["chance@2"], abs=0.03)


def test_neighbourhood_matches_brute_force():
    rng = np.random.default_rng(2)
    n, d, k = 300, 12, 7
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[[3, 50]] = 0.0  # excluded as queries and as neighbours
    codes = np.column_stack([(x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0), rng.integers(0, 3, n)])
    ok = np.flatnonzero(x.any(1))
    xn = x[ok].astype(np.float64) / np.linalg.norm(x[ok], axis=1, keepdims=True)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    nb = np.argsort(-sims, axis=1)
    gaps = np.take_along_axis(sims, nb, 1)
    assert (gaps[:, k - 1] - gaps[:, k]).min() > 1e-6  # no near-ties at the k-th neighbour
    want = {}
    for t in (1, 2):
        qc = codes[ok]
        share = np.mean([np.mean(np.all(qc[nb[i, :k], :t] == qc[i, :t], axis=1)) for i in range(len(ok))])
        freq = np.array(list(Counter(map(tuple, qc[:, :t].tolist())).values())) / len(ok)
        want[t] = (round(float(share), 4), round(float((freq**2).sum()), 4))
    rep = neighbourhood_preservation(x, codes, k=k)
    assert rep["queries"] == n - 2
    for t in (1, 2):
        assert (rep[f"share@{t}"], rep[f"chance@{t}"]) == pytest.approx(want[t], abs=1e-4)
    assert want[1][0] > want[1][1] + 0.2  # the first code follows the geometry: clearly above chance
    sub = neighbourhood_preservation(x, codes, k=k, max_queries=50, seed=3)
    assert sub["queries"] == 50 and 0.0 <= sub["share@1"] <= 1.0
    assert neighbourhood_preservation(x[:8], codes[:8], k=10) == {"k": 10, "queries": 0}


def test_level_usage_oracle():
    uniform = np.column_stack([np.arange(40) % 8, np.arange(40) % 4, np.zeros(40, int), np.r_[[0] * 30, [1] * 10]])
    usage = level_usage(uniform, [8, 8, 5, 2])
    assert usage[0] == {"level": 0, "codebook_size": 8, "used": 8, "utilization": 1.0, "perplexity": 8.0}
    assert usage[1] == {"level": 1, "codebook_size": 8, "used": 4, "utilization": 0.5, "perplexity": 4.0}
    assert usage[2] == {"level": 2, "codebook_size": 5, "used": 1, "utilization": 0.2, "perplexity": 1.0}
    # counts 30/10: perplexity = 1 / (0.75^0.75 * 0.25^0.25)
    assert usage[3]["perplexity"] == round(1 / (0.75**0.75 * 0.25**0.25), 2) == 1.75
    empty = level_usage(np.zeros((0, 1), int), [3])
    assert empty[0]["used"] == 0 and empty[0]["utilization"] == 0.0


def test_collisions_and_report_by_hand():
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [0, 0], [1, 1]])
    assert collisions(codes) == {
        "unique_tuples": 3,
        "collision_rate": 0.5,
        "rows_in_collisions": 5,
        "max_rows_per_tuple": 3,
    }
    assert collisions(np.zeros((0, 2), int))["unique_tuples"] == 0
    suffix = assign_suffixes(codes)
    assert suffix.tolist() == [0, 1, 0, 0, 2, 1]
    x = np.array([[3, 4], [1, 0], [0, 2], [1, 1], [2, 0], [0, 1]], np.float32)
    x_hat = x.copy()
    x_hat[0] = [3, 3]  # squared error 1
    x_hat[2] = [0, 0]  # squared error 4
    rep = semantic_report(x, codes, suffix, [2, 2], x_hat=x_hat, k=2)
    assert rep["n"] == 6 and rep["max_suffix"] == 2
    assert rep["collisions_before_dedup"] == collisions(codes)
    assert rep["collisions_after_dedup"] == 0
    assert [lv["used"] for lv in rep["levels"]] == [2, 2]
    total = float((x.astype(np.float64) ** 2).sum())  # 25 + 1 + 4 + 2 + 4 + 1 = 37
    assert rep["reconstruction"] == {"mse": round(5 / 6 / 2, 6), "relative_mse": round(5 / total, 4)}
    assert rep["neighbourhood"]["queries"] == 6
    # without dedup the collisions remain; without x_hat there is no reconstruction entry
    rep = semantic_report(x, codes, np.zeros(6, int), [2, 2], k=2)
    assert rep["collisions_after_dedup"] == 5 and "reconstruction" not in rep
