"""Numpy references of the partitioned scan's kernel (``_fastscan.c``): the oracle the tests hold every kernel
path to (same bits: the kernel is compiled without fused multiply-add where it matters), and the numpy side of
the exact re-rank the flat index path runs itself.

- ``pack_ref``: the packed 4-bit layout of one list; ``quantize_lut_ref``, ``block_sums_ref``,
  ``approx_scores_ref``, ``exact_scores_ref``: the approximate and exact scores; ``probe_ref``: the lists a query
  scans; ``search_ref``: one query end to end; ``lut_ref``: the lookup table made in the kernel;
  ``_exact8_ref``: the 8-bit codes scanned per list;
- ``rerank_scores`` / ``item_vectors_f32`` / ``rerank_ref``: the exact re-rank with stored item vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .adc import TopK, adc_scores_ref, topk_from_scores

BLOCK = 32  # items per block of the 4-bit layout


def pack_ref(codes: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Numpy reference of the packed layout of one list: (n, M) codes -> (ceil(n/32), 16*M) bytes."""
    n, M = codes.shape
    nb = (n + BLOCK - 1) // BLOCK
    c = np.zeros((nb * BLOCK, M), np.uint8)
    c[:n] = codes & 15
    c = c.reshape(nb, 2, 16, M // 2, 2)  # block, half (item j / j+16), byte j, pair, m in pair
    byte = c[:, 0] | (c[:, 1] << 4)  # (nb, 16, M/2, 2)
    return np.ascontiguousarray(byte.transpose(0, 2, 3, 1).reshape(nb, 16 * M))


def quantize_lut_ref(lut: NDArray[np.float32]) -> tuple[NDArray[np.uint8], np.float32, np.float32]:
    """(M, 16) float table -> (M, 16) bytes, delta, bias: sum_m lut[m, c_m] ~= delta * sum_m q[m, c_m] + bias."""
    lut = np.asarray(lut, np.float32)
    mins = lut.min(axis=1)
    rng = (lut.max(axis=1) - mins).max()
    delta = np.float32(rng / np.float32(255)) if rng > 0 else np.float32(1)
    bias = np.float32(0)
    for m in mins:  # summed in order, as the kernel does
        bias = np.float32(bias + m)
    q = np.floor((lut - mins[:, None]) / delta + np.float32(0.5)).clip(0, 255).astype(np.uint8)
    return q, delta, bias


def block_sums_ref(q: NDArray[np.uint8], codes: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Integer sums sum_m q[m, codes[i, m]] of (n, M) codes."""
    M = codes.shape[1]
    return q[np.arange(M)[None, :], codes.astype(np.intp)].astype(np.int64).sum(axis=1)


def approx_scores_ref(
    lut: NDArray[np.float32],
    codes: NDArray[np.uint8],
    rows: NDArray[np.int64],
    alpha: float,
    scale: NDArray[np.float32] | None,
    add: NDArray[np.float32] | None,
) -> NDArray[np.float32]:
    """The kernel's approximate score of the given rows (codes aligned with rows), same float32 steps."""
    q, delta, bias = quantize_lut_ref(lut)
    acc = block_sums_ref(q, codes).astype(np.float32)
    v = (delta * acc).astype(np.float32) + bias
    if scale is not None:
        v = v * scale[rows]
    v = np.float32(alpha) * v
    if add is not None:
        v = v + add[rows]
    return v.astype(np.float32)


def exact_scores_ref(
    lut: NDArray[np.float32],
    codes: NDArray[np.uint8],
    rows: NDArray[np.int64],
    alpha: float,
    scale: NDArray[np.float32] | None,
    add: NDArray[np.float32] | None,
) -> NDArray[np.float32]:
    """Float-table score, summed in the kernel's order (four running sums)."""
    M = codes.shape[1]
    vals = lut[np.arange(M)[None, :], codes.astype(np.intp)].astype(np.float32)  # (n, M)
    s = [np.zeros(len(codes), np.float32) for _ in range(4)]
    m = 0
    while m + 4 <= M:
        for t in range(4):
            s[t] = s[t] + vals[:, m + t]
        m += 4
    while m < M:
        s[0] = s[0] + vals[:, m]
        m += 1
    v = np.float32(alpha) * ((s[0] + s[1]) + (s[2] + s[3]))
    if scale is not None:
        v = v * scale[rows]
    if add is not None:
        v = v + add[rows]
    return v.astype(np.float32)


C8_BLOCK = 32  # lists per block of the int8 centroid table (_fastscan.c)
SHORT_MAX = 512  # longest shortlist of lists re-keyed exactly (_fastscan.c)


def shortlist_size(nprobe: int) -> int:
    """Lists ranked by the int8 key whose exact key is computed (``SHORTLIST`` in _fastscan.c)."""
    return nprobe + 8 + nprobe // 2


@dataclass(frozen=True)
class CoarseTable:
    """The coarse centroids as the kernel holds them: float16 rows for the exact keys, int8 rows (blocked for the
    SIMD path) with a scale and a row sum each for the shortlist (``_fastscan.c``, "probing")."""

    c16: NDArray[np.float16]  # (nlist, d)
    c8: NDArray[np.int8]  # (ceil(nlist / C8_BLOCK), ceil(d / 4), C8_BLOCK, 4), zero past nlist and d
    c8s: NDArray[np.float32]  # (nlist,)
    c8sum: NDArray[np.int32]  # (nlist,)

    @property
    def nlist(self) -> int:
        return len(self.c16)

    def rows8(self) -> NDArray[np.int8]:
        """(nlist, d) int8 rows."""
        nb, d4, _, _ = self.c8.shape
        return self.c8.transpose(0, 2, 1, 3).reshape(nb * C8_BLOCK, d4 * 4)[: self.nlist, : self.c16.shape[1]]


def coarse_table(centroids: NDArray[np.float32]) -> CoarseTable:
    """The kernel's table of (nlist, d) centroids: float16 rows, and int8 rows scaled per list by max |c| / 127."""
    c = np.nan_to_num(np.asarray(centroids, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    nlist, d = c.shape
    s = (np.abs(c).max(axis=1, initial=0.0) / np.float32(127)).astype(np.float32)
    q = np.rint(c / np.where(s > 0, s, 1)[:, None]).clip(-127, 127).astype(np.int8)
    nb, d4 = -(-nlist // C8_BLOCK), -(-d // 4)
    blocks = np.zeros((nb * C8_BLOCK, d4 * 4), np.int8)
    blocks[:nlist, :d] = q
    c8 = np.ascontiguousarray(blocks.reshape(nb, C8_BLOCK, d4, 4).transpose(0, 2, 1, 3))
    return CoarseTable(c16=np.ascontiguousarray(c.astype(np.float16)), c8=c8, c8s=s,
                       c8sum=q.sum(axis=1, dtype=np.int32))  # fmt: skip


def _key_terms(keys: NDArray[np.float32], lists: NDArray[np.int64], w, b) -> NDArray[np.float32]:  # type: ignore[no-untyped-def]
    if w is not None:
        keys = keys * w[lists]
    if b is not None:
        keys = keys + b[lists]
    return np.where(np.isnan(keys) | (keys == -np.inf), np.float32(-3.402823466e38), keys).astype(np.float32)


def _exact_keys(y: NDArray[np.float32], c16: NDArray[np.float16]) -> NDArray[np.float32]:
    keys = np.zeros(len(c16), np.float32)
    for j in range(len(y)):  # fused multiply-add: the product is exact in float64, one rounding to float32
        keys = (keys.astype(np.float64) + np.float64(y[j]) * c16[:, j].astype(np.float64)).astype(np.float32)
    return keys


def _best(keys: NDArray[np.float32], lists: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """The n best lists by key, ties by lower list."""
    return lists[np.lexsort((lists, -keys))[:n]].astype(np.int64)


def probe_ref(
    y: NDArray[np.float32],
    table: CoarseTable,
    w: NDArray[np.float32] | None,
    b: NDArray[np.float32] | None,
    nprobe: int,
) -> NDArray[np.int64]:
    """The nprobe best lists by <y, c_l> * w_l + b_l, as the kernel finds them: ranked by the int8 key, the
    shortlist re-keyed exactly (summed over dimensions in order with fused multiply-adds, on the float16 rows)."""
    nlist, d = table.c16.shape
    if nprobe >= nlist:
        return np.arange(nlist, dtype=np.int64)
    y = np.asarray(y, np.float32)
    every = np.arange(nlist, dtype=np.int64)
    ns, m = shortlist_size(nprobe), np.float32(np.abs(y).max(initial=0.0))
    if ns >= nlist or ns > SHORT_MAX or -(-d // 4) * 4 > 1028 or not (np.isfinite(y).all() and m > 0):
        return _best(_key_terms(_exact_keys(y, table.c16), every, w, b), every, nprobe)
    q = np.rint(y * (np.float32(63) / m)).astype(np.int64)  # float32 product, rounded half to even as rintf
    dots = table.rows8().astype(np.int64) @ q  # = <q + 64, c8> - 64 * sum(c8), exactly
    approx = (dots.astype(np.float32) * table.c8s) * (m / np.float32(63))
    short = _best(_key_terms(approx.astype(np.float32), every, w, b), every, ns)
    exact = _key_terms(_exact_keys(y, table.c16[short]), short, w, b)
    return _best(exact, short, nprobe)


def search_ref(
    lut: NDArray[np.float32],
    codes: NDArray[np.uint8],
    list_rows: NDArray[np.int64],
    lists: NDArray[np.int64],
    alpha: float,
    scale: NDArray[np.float32] | None,
    add: NDArray[np.float32] | None,
    kcand: int,
    k: int,
) -> TopK:
    """One query through the 4-bit search in numpy: kcand best by approximate score over ``lists``, then the
    k best of those by the float-table score. codes (n, M) in row order."""
    rows = np.concatenate([np.arange(list_rows[ll], list_rows[ll + 1]) for ll in lists] or [np.empty(0, np.int64)])
    rows = rows.astype(np.int64)
    approx = approx_scores_ref(lut, codes[rows], rows, alpha, scale, add)
    cand = _top_rows(approx, rows, max(kcand, k))
    exact = exact_scores_ref(lut, codes[cand], cand, alpha, scale, add)
    top = _top_rows(exact, cand, k)
    D = np.full((1, k), -np.inf, np.float32)
    I = np.full((1, k), -1, np.int64)  # noqa: E741
    if len(top):
        pos = {r: i for i, r in enumerate(cand.tolist())}
        D[0, : len(top)] = exact[[pos[r] for r in top.tolist()]]
        I[0, : len(top)] = top
    return TopK(D, I)


def item_vectors_f32(
    vectors: NDArray, scale: NDArray[np.float32] | None, rows: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Rows of stored item vectors as float32 (int8 copies times their per-dimension scale)."""
    v = np.asarray(vectors[rows], dtype=np.float32)
    return v * scale if vectors.dtype == np.int8 and scale is not None else v


def rerank_scores(x: NDArray[np.float32], v: NDArray[np.float32], mode: str) -> NDArray[np.float32]:
    """Exact scores of item vectors v (n, d) for one input-space query x, in float64 (as the kernel)."""
    x64, v64 = x.astype(np.float64), v.astype(np.float64)
    dot = v64 @ x64
    if mode == "ip":
        return dot.astype(np.float32)
    if mode == "cosine":
        vn, xn = np.sqrt((v64 * v64).sum(axis=1)), np.sqrt(x64 @ x64)
        ok = (vn > 0) & (xn > 0)
        return np.where(ok, dot / np.where(ok, vn, 1) / (xn if xn > 0 else 1), -np.inf).astype(np.float32)
    return (-((v64 - x64) ** 2).sum(axis=1)).astype(np.float32)


def rerank_ref(ls: Any, top: TopK, xr: NDArray[np.float32], mode: str, k: int) -> TopK:
    """Numpy reference of the kernel's re-rank: the candidates' exact scores, best k (ties by lower row)."""
    nq = len(top.I)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)  # noqa: E741
    for q in range(nq):
        rows = top.I[q][top.I[q] >= 0]
        s = rerank_scores(xr[q], item_vectors_f32(ls.vectors, ls.vector_scale, rows), mode)  # type: ignore[arg-type]
        best = _top_rows(s, rows, k)
        pos = {r: i for i, r in enumerate(rows.tolist())}
        D[q, : len(best)] = s[[pos[r] for r in best.tolist()]]
        I[q, : len(best)] = best
    return TopK(D, I)


def _top_rows(scores: NDArray[np.float32], rows: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    ok = scores > -np.inf  # NaN compares False
    s, r = scores[ok], rows[ok]
    order = np.lexsort((r, -s))[:k]
    return r[order]


# ---- the search ------------------------------------------------------------------------------------


def lut_ref(y: NDArray[np.float32], mat: NDArray[np.float32], ystep: int) -> NDArray[np.float32]:
    """Numpy reference of the kernel's lookup table of one vector (same float32 steps)."""
    M, dt, ksub = mat.shape
    out = np.zeros((M, ksub), np.float32)
    for t in range(dt):
        yv = np.array([y[m * ystep + t] for m in range(M)], np.float32)[:, None]
        out = out + yv * mat[:, t, :]
    return out.astype(np.float32)


def _exact8_ref(lut, codes, list_rows, lists, alpha, scale, add, k):  # type: ignore[no-untyped-def]
    """Exact ADC top-k over the rows of ``lists`` (ties by lower row), in numpy."""
    parts = [np.arange(list_rows[ll], list_rows[ll + 1]) for ll in lists]
    rows = np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, np.int64)
    s = adc_scores_ref(lut[None], codes[rows])[0] * np.float32(alpha)
    if scale is not None:
        s = s * scale[rows]
    if add is not None:
        s = s + add[rows]
    s[np.isnan(s)] = -np.inf
    top = topk_from_scores(s[None].astype(np.float32), k) if len(rows) else None
    if top is None:
        return TopK(np.full((1, k), -np.inf, np.float32), np.full((1, k), -1, np.int64))
    return TopK(top.D, np.where(top.I >= 0, rows[np.maximum(top.I, 0)], -1))
