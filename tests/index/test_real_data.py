"""Real recommender embeddings: MovieLens-100k ALS (64 factors), read from ../shared/data beside the repo.

The data may not be copied into the repository (MovieLens license), so the test skips when it is not
there, and never skips when it is. Floors were measured with PQ M=8 x 6 bits, niter=10, seed 1234:
user->item recall@10 vs exact inner-product search 0.628 (floor 0.55), leave-one-out HR@10 with seen
items excluded 0.094 (floor 0.07; exact search: 0.127, as the data README says).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vqrec.index import build_index, exact_search, load_embeddings
from vqrec.index.eval import exact_hit_rate, hit_rate
from vqrec.index.interactions import pairs_by_user
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k-als64"


@pytest.fixture(scope="module")
def ml100k():
    if not (DATA / "items.npy").exists():
        pytest.skip("needs ../shared/data/ml-100k-als64 (MovieLens-100k ALS embeddings) beside the repo")
    items = load_embeddings(str(DATA / "items.npy"))  # ids auto-detected: item_ids.txt
    users = load_embeddings(str(DATA / "users.npy"))
    seen = pairs_by_user(str(DATA / "train.tsv"))
    heldout = {u: v[0] for u, v in pairs_by_user(str(DATA / "test.tsv")).items()}
    return items, users, seen, heldout


def test_loads(ml100k):
    items, users, seen, heldout = ml100k
    assert (items.n, items.d) == (1447, 64) and (users.n, users.d) == (942, 64)
    assert int((~items.vectors.any(axis=1)).sum()) == 15
    norms = np.linalg.norm(items.vectors[items.vectors.any(axis=1)], axis=1)
    assert np.percentile(norms, 95) / np.percentile(norms, 5) > 10  # the long-tailed norms that make PQ-MIPS hard
    assert len(heldout) == 942 and all(u in seen for u in list(heldout)[:50])


def test_pq_user_to_item(ml100k):
    items, users, seen, heldout = ml100k
    cfg = TrainConfig(method="pq", metric="ip", M=8, nbits=6, niter=10, eval_queries=50)
    cb = train(items, cfg, queries=users, show_progress=False)
    index = build_index(cb, items, users=users, show_progress=False)
    _, truth = exact_search(items.vectors, users.vectors, 10, "ip")
    res = index.recommend(users.ids, 10)
    rec = np.mean([len(set(r.rows) & set(t)) / 10 for r, t in zip(res, truth, strict=True)])
    assert rec >= 0.55, f"recall@10 {rec:.3f}"
    assert exact_hit_rate(items, users, seen, heldout) == pytest.approx(0.127, abs=0.001)
    assert hit_rate(index, seen, heldout) >= 0.07
    # the 15 zero items never come back as cosine neighbours
    zero = {items.ids[r] for r in np.flatnonzero(~items.vectors.any(axis=1))}
    for r in index.similar(items.ids[:50], 20):
        assert not zero & set(r.ids)
