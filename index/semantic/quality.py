"""The quality report of semantic IDs (numpy, and faiss for the exact neighbours).

semantic_report    utilization / perplexity per level (level_usage), collision rate before dedup
                   (collisions), reconstruction error and neighbourhood preservation
                   (neighbourhood_preservation)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray


def level_usage(codes: NDArray[Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for lvl, k in enumerate(sizes):
        counts = np.bincount(np.asarray(codes)[:, lvl], minlength=k).astype(np.float64)
        p = counts / max(counts.sum(), 1.0)
        nz = p[p > 0]
        out.append(
            {
                "level": lvl,
                "codebook_size": int(k),
                "used": int((counts > 0).sum()),
                "utilization": round(float((counts > 0).mean()), 4),
                "perplexity": round(float(np.exp(-(nz * np.log(nz)).sum())), 2),
            }
        )
    return out


def collisions(codes: NDArray[Any]) -> dict[str, Any]:
    """Before dedup: how many code tuples are shared by more than one row."""
    codes = np.asarray(codes)
    n = len(codes)
    if n == 0:
        return {"unique_tuples": 0, "collision_rate": 0.0, "rows_in_collisions": 0, "max_rows_per_tuple": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "unique_tuples": len(counts),
        "collision_rate": round(1.0 - len(counts) / n, 4),  # share of rows that need a suffix > 0
        "rows_in_collisions": int(counts[counts > 1].sum()),
        "max_rows_per_tuple": int(counts.max()),
    }


def neighbourhood_preservation(
    x: NDArray[Any], codes: NDArray[Any], *, k: int = 10, max_queries: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """For each (sampled) item: of its exact top-k cosine neighbours (self and zero vectors excluded),
    the share that have the same first 1, 2, ... L codes. ``chance@t`` is the share a random pair
    would have (sum of squared prefix frequencies), for scale."""
    x = np.asarray(x, dtype=np.float32)
    codes = np.asarray(codes)
    norms = np.linalg.norm(x, axis=1)
    ok = np.flatnonzero(norms > 0)
    L = codes.shape[1]
    if len(ok) <= k:
        return {"k": k, "queries": 0}
    xn = np.ascontiguousarray(x[ok] / norms[ok, None])
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(ok), min(max_queries, len(ok)), replace=False))
    flat = faiss.IndexFlatIP(xn.shape[1])
    flat.add(xn)
    _, nb = flat.search(xn[q], k + 1)
    out: dict[str, Any] = {"k": k, "queries": len(q), "metric": "cosine"}
    qc = codes[ok[q]]
    for t in range(1, L + 1):
        shares = []
        for i in range(len(q)):
            row = nb[i][(nb[i] >= 0) & (nb[i] != q[i])][:k]
            shares.append(np.mean(np.all(codes[ok[row], :t] == qc[i, :t], axis=1)) if len(row) else 0.0)
        _, counts = np.unique(codes[ok, :t], axis=0, return_counts=True)
        p = counts / counts.sum()
        out[f"share@{t}"] = round(float(np.mean(shares)), 4)
        out[f"chance@{t}"] = round(float((p * p).sum()), 4)
    return out


def semantic_report(
    x: NDArray[Any],
    codes: NDArray[Any],
    suffix: NDArray[Any],
    sizes: Sequence[int],
    *,
    x_hat: NDArray[Any] | None = None,
    k: int = 10,
    max_queries: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The quality numbers stored in the manifest: per-level usage, collisions before and after dedup,
    reconstruction error (when ``x_hat`` is given, in the tokenizer's input space) and neighbourhood
    preservation."""
    codes = np.asarray(codes)
    suffix = np.asarray(suffix)
    rep: dict[str, Any] = {
        "n": len(codes),
        "levels": level_usage(codes, sizes),
        "collisions_before_dedup": collisions(codes),
        "collisions_after_dedup": collisions(np.column_stack([codes, suffix]))["rows_in_collisions"]
        if len(codes)
        else 0,
        "max_suffix": int(suffix.max()) if len(suffix) else 0,
    }
    if x_hat is not None:
        x = np.asarray(x, dtype=np.float64)
        err = ((x - np.asarray(x_hat, dtype=np.float64)) ** 2).sum(1)
        rep["reconstruction"] = {
            "mse": round(float(err.mean() / x.shape[1]), 6),
            "relative_mse": round(float(err.sum() / max((x * x).sum(), 1e-30)), 4),
        }
    rep["neighbourhood"] = neighbourhood_preservation(x, codes, k=k, max_queries=max_queries, seed=seed)
    return rep
