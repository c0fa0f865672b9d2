"""Recommender embeddings for the demo: matrix factorization of an interaction log.

Either a seeded synthetic log (power-law item popularity, users with 1-3 tastes) or MovieLens
``u.data`` (ratings >= 4 count as interactions). Factorization is PureSVD (Cremonesi et al., RecSys
2010): a rank-d truncated SVD of the binary user x item matrix, user = U S^1/2, item = V S^1/2, so
user->item scores are inner products. numpy only; a randomized SVD keeps it to seconds.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import NDArray

from vqrec.index.embeddings import Embeddings
from vqrec.index.errors import InputError


def synthetic_log(
    n_users: int = 2000, n_items: int = 5000, *, n_topics: int = 40, per_user: int = 40, seed: int = 7
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(user rows, item rows) of a power-law interaction log with topical users."""
    rng = np.random.default_rng(seed)
    pop = (1.0 + rng.permutation(n_items)) ** -0.9  # Zipf-like popularity
    topic_of_item = rng.integers(0, n_topics, size=n_items)
    users, items = [], []
    for u in range(n_users):
        tastes = rng.choice(n_topics, size=rng.integers(1, 4), replace=False)
        w = pop * np.where(np.isin(topic_of_item, tastes), 20.0, 1.0)
        cnt = max(2, int(rng.poisson(per_user)))
        chosen = rng.choice(n_items, size=min(cnt, n_items), replace=False, p=w / w.sum())
        users.extend([u] * len(chosen))
        items.extend(chosen.tolist())
    return np.asarray(users, np.int64), np.asarray(items, np.int64)


def movielens_log(path: str) -> tuple[NDArray[np.int64], NDArray[np.int64], list[str], list[str]]:
    """Interactions (rating >= 4) from a MovieLens-100k directory or its ``u.data`` file."""
    f = os.path.join(path, "u.data") if os.path.isdir(path) else path
    if not os.path.exists(f):
        raise InputError(f"MovieLens ratings not found: {f} (expected u.data: user TAB item TAB rating TAB ts).")
    try:
        raw = np.loadtxt(f, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as e:
        raise InputError(f"{f}: cannot parse ratings ({e}).") from None
    if raw.shape[1] < 3:
        raise InputError(f"{f}: expected at least 3 tab-separated columns, got {raw.shape[1]}.")
    raw = raw[raw[:, 2] >= 4]
    uids, urows = np.unique(raw[:, 0], return_inverse=True)
    iids, irows = np.unique(raw[:, 1], return_inverse=True)
    return urows, irows, [str(u) for u in uids], [str(i) for i in iids]


def pure_svd(
    urows: NDArray[np.int64], irows: NDArray[np.int64], n_users: int, n_items: int, d: int, *, seed: int = 7
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Rank-d randomized SVD of the binary interaction matrix -> (users (nu, d), items (ni, d))."""
    A = np.zeros((n_users, n_items), dtype=np.float32)
    A[urows, irows] = 1.0
    rng = np.random.default_rng(seed)
    Q = A @ rng.standard_normal((n_items, d + 10)).astype(np.float32)
    for _ in range(3):  # power iterations sharpen the spectrum
        Q, _ = np.linalg.qr(A @ (A.T @ Q))
    B = Q.T @ A
    Ub, S, Vt = np.linalg.svd(B, full_matrices=False)
    U = (Q @ Ub)[:, :d]
    s = np.sqrt(S[:d])
    return (U * s).astype(np.float32), (Vt[:d].T * s).astype(np.float32)


def demo_embeddings(movielens: str | None = None, *, d: int = 64, seed: int = 7) -> tuple[Embeddings, Embeddings]:
    """(items, users) embeddings for ``vqrec demo``."""
    if movielens:
        urows, irows, uids, iids = movielens_log(movielens)
        source = movielens
    else:
        urows, irows = synthetic_log(seed=seed)
        uids = [f"u{j}" for j in range(int(urows.max()) + 1)]
        iids = [f"i{j}" for j in range(5000)]
        source = f"synthetic(seed={seed})"
    U, V = pure_svd(urows, irows, len(uids), len(iids), d, seed=seed)
    return Embeddings(ids=iids, vectors=V, source=source), Embeddings(ids=uids, vectors=U, source=source)
