"""The coarse partition of a partitioned index: nlist lists, items stored contiguously per list.

A query scans the ``nprobe`` lists with the best key. Codes are of the vectors, not of residuals (measured
in docs/indexing.md, "Partitioned indexes": residual codes scored higher codes-only, but every query by id,
user code, semantic id and the Ray encode would then depend on the list; the re-score and re-rank close the
gap), so one lookup table serves every list.

Two kinds of partition, by the index metric:

- ``sphere`` (ip, cosine): spherical k-means of the unit directions of the items in code space. Keys per
  score: ip ``<y, c_l> * maxnorm_l`` (maxnorm_l is the largest |x_hat| of list l: inner products are led by
  big norms, and ordering lists by direction alone missed them: measured 0.82 -> 0.88 of the true top-10 in
  the first 20 of 2000 lists on the 1M recipe); cosine ``<y, c_l>``; l2 ``2 maxnorm_l <y, c_l> - maxnorm_l^2``.
- ``euclid`` (l2): k-means of the code-space vectors. Keys: l2 ``2 <y, c_l> - |c_l|^2``; ip ``<y, c_l>``;
  cosine ``<y, c_l> / |c_l|``.

Built at index time (``train_partition`` + ``assign``); the index reorders its rows by list (``order``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
from numpy.typing import NDArray

from .codebooks import normalize_rows
from .errors import ConfigError
from .exact import BLAS_MIN_ITEMS, faiss_blas
from .fastscan import coarse_assign, coarse_table

PartitionKind = Literal["sphere", "euclid"]
PARTITION_KINDS = ("sphere", "euclid")
MAX_NLIST = 1 << 16
TRAIN_SAMPLE = 100_000
AUTO_MIN_ITEMS = 100_000  # below this, "auto" builds no partition: a full scan is already fast


def auto_nlist(n: int) -> int:
    """The default number of lists: none below AUTO_MIN_ITEMS items, else 2 sqrt(n) (2,000 at 1M items):
    measured on the 1M recipe, 2,000 lists reached a given recall scanning ~half the items of 1,000."""
    if n < AUTO_MIN_ITEMS:
        return 0
    return int(min(MAX_NLIST, 2 * round(math.sqrt(n))))


@dataclass
class Partition:
    """nlist lists: centroids (nlist, d) float32 in code space, list_rows (nlist+1,) int64 (list l holds rows
    list_rows[l] .. list_rows[l+1]-1), the kind, and the default number of lists a query scans."""

    centroids: NDArray[np.float32]
    list_rows: NDArray[np.int64]
    kind: PartitionKind
    nprobe: int

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self.list_rows = np.ascontiguousarray(self.list_rows, dtype=np.int64)
        if self.kind not in PARTITION_KINDS:
            raise ConfigError(f"partition kind must be one of {list(PARTITION_KINDS)}, got {self.kind!r}.")
        nlist = len(self.centroids)
        if self.centroids.ndim != 2 or nlist < 1:
            raise ConfigError(f"partition centroids must be (nlist >= 1, d), got {self.centroids.shape}.")
        if self.list_rows.shape != (nlist + 1,) or self.list_rows[0] != 0 or (np.diff(self.list_rows) < 0).any():
            raise ConfigError("list_rows must be (nlist + 1,) non-decreasing offsets starting at 0.")
        if not 1 <= self.nprobe <= nlist:
            raise ConfigError(f"partition nprobe must be in 1..{nlist}, got {self.nprobe}.")

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    @property
    def n(self) -> int:
        return int(self.list_rows[-1])

    def sizes(self) -> NDArray[np.int64]:
        return np.diff(self.list_rows)

    def keys(self, score: str, full_norms: NDArray[np.float32]) -> tuple[NDArray | None, NDArray | None]:
        """(w, b) of the list keys <y, c_l> * w_l + b_l for a score (module docstring)."""
        c = self.centroids
        if self.kind == "sphere":
            mx = list_max(full_norms, self.list_rows)
            if score == "ip":
                return mx, None
            if score == "cosine":
                return None, None
            return (2 * mx).astype(np.float32), (-(mx.astype(np.float64) ** 2)).astype(np.float32)
        cn = np.linalg.norm(c, axis=1).astype(np.float32)
        if score == "l2":
            return np.full(self.nlist, 2, np.float32), (-(cn.astype(np.float64) ** 2)).astype(np.float32)
        if score == "ip":
            return None, None
        return np.where(cn > 0, 1 / np.where(cn > 0, cn, 1), 0).astype(np.float32), None

    def list_of_rows(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        return (np.searchsorted(self.list_rows, rows, side="right") - 1).astype(np.int64)


def list_max(values: NDArray[np.float32], list_rows: NDArray[np.int64]) -> NDArray[np.float32]:
    """Per-list maximum of a per-row array (0 for an empty list)."""
    out = np.zeros(len(list_rows) - 1, np.float32)
    sizes = np.diff(list_rows)
    nz = np.flatnonzero(sizes > 0)
    if len(nz):
        out[nz] = np.maximum.reduceat(np.asarray(values, np.float32), list_rows[nz])
    return out


def kind_for(metric: str) -> PartitionKind:
    return "euclid" if metric == "l2" else "sphere"


def _points(y: NDArray[np.float32], kind: PartitionKind) -> NDArray[np.float32]:
    return normalize_rows(y) if kind == "sphere" else np.ascontiguousarray(y, dtype=np.float32)


def train_partition(
    y: NDArray[np.float32], nlist: int, kind: PartitionKind, *, seed: int = 0, niter: int = 10
) -> NDArray[np.float32]:
    """(nlist, d) centroids by faiss k-means on up to TRAIN_SAMPLE rows of ``y`` (code space)."""
    n, d = y.shape
    if not 1 <= nlist <= min(n, MAX_NLIST):
        raise ConfigError(f"nlist must be between 1 and min(n_items, {MAX_NLIST}) = {min(n, MAX_NLIST)}, got {nlist}.")
    rng = np.random.default_rng(seed)
    sample = y if n <= TRAIN_SAMPLE else y[np.sort(rng.choice(n, TRAIN_SAMPLE, replace=False))]
    pts = _points(sample, kind)
    if nlist == 1:
        c = pts.mean(axis=0, keepdims=True)
        return normalize_rows(c) if kind == "sphere" else c.astype(np.float32)
    km = faiss.Kmeans(d, nlist, niter=niter, seed=seed, spherical=kind == "sphere", verbose=False)
    km.cp.min_points_per_centroid = 1  # small catalogues: no warning, a few near-empty lists are fine
    with faiss_blas(len(pts) >= BLAS_MIN_ITEMS):  # k-means' searches: many points against the centroids
        km.train(pts)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(y: NDArray[np.float32], centroids: NDArray[np.float32], kind: PartitionKind) -> NDArray[np.int64]:
    """The list of each row: nearest centroid (largest inner product of directions for sphere), found as a query
    finds its best list (``fastscan.coarse_assign``: int8 shortlist, exact keys on float16 centroids; 1M rows x
    2,000 lists in 3.1-3.2 s on 2 cores where faiss's float32 product took 4.1-5.9 s in the same process). A row
    whose two best centroids tie to float16 precision may go to either (0.043 % of the 1M recipe's rows)."""
    c = np.ascontiguousarray(centroids, np.float32)
    table = coarse_table(c)
    w = b = None
    if kind == "euclid":  # nearest by l2: the largest 2 <y, c> - |c|^2
        w = np.full(len(c), 2, np.float32)
        b = (-np.einsum("ij,ij->i", c.astype(np.float64), c.astype(np.float64))).astype(np.float32)
    out = np.empty(len(y), np.int64)
    step = 1 << 16
    for i0 in range(0, len(y), step):
        out[i0 : i0 + step] = coarse_assign(_points(y[i0 : i0 + step], kind), table, w, b)
    return out


def order(lists: NDArray[np.int64], nlist: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(permutation, list_rows): rows sorted by list (stable: input order within a list)."""
    perm = np.argsort(lists, kind="stable").astype(np.int64)
    rows = np.concatenate([[0], np.cumsum(np.bincount(lists, minlength=nlist))]).astype(np.int64)
    return perm, rows
