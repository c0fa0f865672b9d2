"""Exact (brute-force) search over float vectors with faiss IndexFlatIP / IndexFlatL2: the oracle
that every compressed index is measured against."""

from __future__ import annotations

import faiss
import numpy as np
from numpy.typing import NDArray

from .codebooks import normalize_rows


def exact_search(
    xb: NDArray[np.float32], xq: NDArray[np.float32], k: int, metric: str
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(D, I) of the exact top-k; scores higher-is-better (ip, cosine, negated squared l2).

    For cosine both sides are normalized; all-zero database rows are never returned (no direction)
    and the padding is (-inf, -1), like the compressed index.
    """
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    d = xb.shape[1]
    if metric == "l2":
        index = faiss.IndexFlatL2(d)
        index.add(xb)
        D, I = index.search(xq, k)
        return -D, I
    keep = None
    if metric == "cosine":
        keep = np.flatnonzero(np.linalg.norm(xb, axis=1) > 0)
        xb = normalize_rows(xb[keep])
        xq = normalize_rows(xq)
    elif metric != "ip":
        raise ValueError(f"unknown metric {metric!r}")
    index = faiss.IndexFlatIP(d)
    index.add(xb)
    D, I = index.search(xq, k)
    if keep is not None:
        valid = I >= 0
        I = np.where(valid, keep[np.maximum(I, 0)], -1)
        D = np.where(valid, D, -np.inf).astype(np.float32)
    return D, I
