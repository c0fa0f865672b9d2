"""Exact (brute-force) search over float vectors with faiss IndexFlatIP / IndexFlatL2: the oracle
that every compressed index is measured against."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
            nonzero = np.einsum("ij,ij->i", xb, xb) > 0
            if not nonzero.all():
                self.keep = np.flatnonzero(nonzero)
                xb = xb[self.keep]
            xb = normalize_rows(xb)
        # searched in place with faiss's brute-force kNN (an IndexFlat would hold a second copy of the rows;
        # at 1M x 64 copying them cost ~0.5 s of a build's evaluation): the same kernels, the same answers
        self.xb = xb
        self._metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def search(self, xq: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if self.metric == "cosine":
            xq = normalize_rows(xq)
        with faiss_blas(len(self.xb) >= BLAS_MIN_ITEMS):
            D, I = faiss.knn(xq, self.xb, k, metric=self._metric)
        if self.metric == "l2":
            return -D, I
        if self.keep is not None:
            valid = I >= 0
            I = np.where(valid, self.keep[np.maximum(I, 0)], -1)
            D = np.where(valid, D, -np.inf).astype(np.float32)
        return D, I


# faiss (1.15) scans a flat index with its own SIMD loop below 128,000 queries and with BLAS above. Over a
# large database BLAS is several times faster for the hundreds of queries of an evaluation or a tuning sweep,
# the 65,536-row blocks of a partition's assignment and k-means' 100,000 points (measured, 256 queries over
# 1M x 64 on 2 cores: 3.4-4.0 s vs 0.47 s; the same top-100 but for rounding ties). BLAS rounds the last bit
# differently for different numbers of queries, so it is used from BLAS_MIN_ITEMS database rows on, for any
# number of queries: below, answers do not depend on how queries are grouped in blocks (bit for bit; tests).
# Set around these calls only: the global also governs the coarse quantizers of the faiss peers the benches
# measure.
BLAS_MIN_ITEMS = 1 << 16


@contextlib.contextmanager
def faiss_blas(on: bool = True) -> Iterator[None]:
    """Inside this block (when ``on``) faiss's flat scans use BLAS for any number of queries."""
    old = faiss.cvar.distance_compute_blas_threshold
    if on:
        faiss.cvar.distance_compute_blas_threshold = 1
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


def exact_search(
    xb: NDArray[np.float32], xq: NDArray[np.float32], k: int, metric: str
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(D, I) of the exact top-k of ``xq`` over ``xb`` (see ExactIndex)."""
    return ExactIndex(xb, metric).search(xq, k)
