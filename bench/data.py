"""Benchmark datasets and their exact answers.

    ml100k     MovieLens-100K ALS-64 embeddings (../shared/data/ml-100k-als64), read in place, with the
               leave-one-out split (train.tsv = seen items, test.tsv = one held-out item per user)
    synth100k  synthetic.make_dataset(n=100000, d=128, nq=1000, seed=1362), the reference set our
               performance targets are stated on, generated in memory (never written to the repo)
    tiny       random normal vectors for the smoke test

Every figure is top-K (K = 10) by inner product for user->item and by cosine for item->item.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vqrec.index import Embeddings, exact_search, load_embeddings
from vqrec.index.eval import exact_hit_rate, sample_rows
from vqrec.index.interactions import pairs_by_user

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data"
K = 10
RERANK = 100  # ADC candidates re-scored with the stored float16 item vectors
DATASETS = ("ml100k", "synth100k")
EXPECTED_EXACT_HR = {"ml100k": 0.1274}
# faiss's RQ training (progressive-dim k-means per stage) dominates the bench on 100k x 128; these keep
# the total under ~25 minutes on 2 cores. The faiss native RQ uses the same beam and training sample.
SYNTH_RQ_OVERRIDES = {"beam_size": 2, "max_train_points": 10_000}


@dataclass
class Dataset:
    """Items and users (inner-product scores) plus, for leave-one-out, seen and held-out items."""

    name: str
    data: str  # where every figure of this dataset came from
    items: Embeddings
    users: Embeddings
    seen: dict[str, list[str]] | None = None
    heldout: dict[str, str] | None = None
    train_overrides: dict[str, dict[str, int]] = field(default_factory=dict)  # per method


def load_ml100k(root: Path = DATA_ROOT) -> Dataset:
    """MovieLens-100K ALS-64 embeddings with the leave-one-out split (read in place, never copied)."""
    base = root / "ml-100k-als64"
    items = load_embeddings(str(base / "items.npy"), str(base / "item_ids.txt"))
    users = load_embeddings(str(base / "users.npy"), str(base / "user_ids.txt"))
    seen = pairs_by_user(str(base / "train.tsv"))
    heldout = {u: its[0] for u, its in pairs_by_user(str(base / "test.tsv")).items()}
    return Dataset(
        name="ml100k",
        data=f"ml-100k-als64 ({base}): {items.n} items x {users.n} users, d={items.d}, ALS (implicit 0.7.3)",
        items=items,
        users=users,
        seen=seen,
        heldout=heldout,
    )


def load_synthetic(
    n: int = 100_000, d: int = 128, nq: int = 1000, seed: int = 1362, root: Path = DATA_ROOT, name: str = "synth100k"
) -> Dataset:
    """``synthetic.make_dataset`` (imported by path from the shared data folder), generated in memory."""
    path = root / "synthetic.py"
    spec = importlib.util.spec_from_file_location("vqrec_shared_synthetic", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    xb, xq = mod.make_dataset(n, d, nq, seed=seed)
    return Dataset(
        name=name,
        data=f"synthetic.make_dataset(n={n}, d={d}, nq={nq}, seed={seed}) from {path}, generated in memory",
        items=Embeddings(ids=[f"i{j}" for j in range(n)], vectors=xb, source=f"synthetic:{name}"),
        users=Embeddings(ids=[f"u{j}" for j in range(nq)], vectors=xq, source=f"synthetic:{name}"),
        train_overrides={"rq": dict(SYNTH_RQ_OVERRIDES)},
    )


def make_tiny(n: int = 500, d: int = 16, nq: int = 50, seed: int = 0) -> Dataset:
    """Small random dataset for the smoke test: varied item norms, a few zero items, a random LOO split."""
    rng = np.random.default_rng(seed)
    xb = (rng.standard_normal((n, d)) * np.exp(0.5 * rng.standard_normal((n, 1)))).astype(np.float32)
    xb[:3] = 0.0  # ALS-style zero items
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    item_ids = [f"i{j}" for j in range(n)]
    user_ids = [f"u{j}" for j in range(nq)]
    seen = {u: [item_ids[j] for j in rng.choice(n, 5, replace=False)] for u in user_ids}
    heldout = {u: item_ids[int(rng.integers(n))] for u in user_ids}
    return Dataset(
        name="tiny",
        data=f"random normal, n={n}, d={d}, nq={nq}, seed={seed}, in memory",
        items=Embeddings(ids=item_ids, vectors=xb, source="synthetic:tiny"),
        users=Embeddings(ids=user_ids, vectors=xq, source="synthetic:tiny"),
        seen=seen,
        heldout=heldout,
    )


def load_dataset(name: str) -> Dataset:
    if name == "ml100k":
        return load_ml100k()
    if name == "synth100k":
        return load_synthetic()
    raise ValueError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")


@dataclass
class Truth:
    """Exact answers, computed once per dataset."""

    u2i: NDArray[np.int64]  # (nq, K) exact inner-product rows for every user
    i2i_rows: NDArray[np.int64]  # (nsim,) query items (non-zero)
    i2i: NDArray[np.int64]  # (nsim, K) exact cosine rows, the query excluded, -1 padded
    exact_hr: float | None  # leave-one-out HR@K of exact search, seen items excluded


def prepare_truth(ds: Dataset, *, nsim: int = 1000, seed: int = 0) -> Truth:
    """Exact top-K for all users (ip) and for a seeded sample of non-zero items (cosine), as index.eval does."""
    _, u2i = exact_search(ds.items.vectors, ds.users.vectors, K, "ip")
    nonzero = np.flatnonzero(ds.items.vectors.any(axis=1))
    irows = nonzero[sample_rows(len(nonzero), nsim, seed + 1)]
    _, t = exact_search(ds.items.vectors, ds.items.vectors[irows], K + 1, "cosine")
    i2i = np.stack([drop_self(row, r, K) for row, r in zip(t, irows, strict=True)])
    hr = None
    if ds.seen is not None and ds.heldout is not None:
        hr = exact_hit_rate(ds.items, ds.users, ds.seen, ds.heldout, k=K)
    return Truth(u2i=u2i, i2i_rows=irows, i2i=i2i, exact_hr=hr)


def drop_self(row: NDArray[np.int64], r: int, k: int) -> NDArray[np.int64]:
    row = row[row != r][:k]
    return np.pad(row, (0, k - len(row)), constant_values=-1)
