"""Exact (brute-force) search over float vectors with faiss IndexFlatIP / IndexFlatL2: the oracle
that every compressed index is measured against."""

from __future__ import annotations

import faiss
import numpy as np
from numpy.typing import NDArray

from .codebooks import normalize_rows


class ExactIndex:
    """Exact top-k over ``xb`` under ``metric`` (ip, cosine or l2), built once and queried many times.

    Scores are higher-is-better (ip, cosine, negated squared l2). For cosine both sides are normalized;
    all-zero database rows are never returned (no direction) and the padding is (-inf, -1), like the
    compressed index.
    """

    def __init__(self, xb: NDArray[np.float32], metric: str) -> None:
        if metric not in ("ip", "cosine", "l2"):
            raise ValueError(f"unknown metric {metric!r}")
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        self.metric = metric
        self.keep: NDArray[np.int64] | None = None
        if metric == "cosine":
            self.keep = np.flatnonzero(np.linalg.norm(xb, axis=1) > 0)
            xb = normalize_rows(xb[self.keep])
        self.index = faiss.IndexFlatL2(xb.shape[1]) if metric == "l2" else faiss.IndexFlatIP(xb.shape[1])
        self.index.add(xb)

    def search(self, xq: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if self.metric == "cosine":
            xq = normalize_rows(xq)
        D, I = self.index.search(xq, k)
        if self.metric == "l2":
            return -D, I
        if self.keep is not None:
            valid = I >= 0
            I = np.where(valid, self.keep[np.maximum(I, 0)], -1)
            D = np.where(valid, D, -np.inf).astype(np.float32)
        return D, I


def exact_search(
    xb: NDArray[np.float32], xq: NDArray[np.float32], k: int, metric: str
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(D, I) of the exact top-k of ``xq`` over ``xb`` (see ExactIndex)."""
    return ExactIndex(xb, metric).search(xq, k)
