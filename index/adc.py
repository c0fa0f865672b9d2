"""Asymmetric distance computation: scan a code table with per-query lookup tables.

    scores[q, i] = alpha[q] * sum_m lut[q, m, codes[i, m]] * scale[i] + bias[i]

``scale``/``bias`` are per-item terms precomputed at build time (1/|x_hat| for cosine, -|x_hat|^2
for l2); ``bias = -inf`` masks an item out. Top-k is highest score first, ties broken by lower row.

Two implementations with identical results: the C kernel in ``_adc.c`` (loaded with ctypes; the GIL
is released during the call, so a thread pool scans query batches on every core) and a numpy
reference used when the kernel is not built and by the tests as the oracle.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)


class TopK(NamedTuple):
    """D (nq, k) float32 scores, best first (-inf padding); I (nq, k) int64 rows (-1 padding)."""

    D: NDArray[np.float32]
    I: NDArray[np.int64]  # noqa: E741 (faiss's name)


def _load_kernel() -> ctypes.CDLL | None:
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "_adc*.so"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:  # pragma: no cover - depends on the build
            logger.warning("cannot load ADC kernel %s: %s", path, e)
            continue
        f = lib.vqrec_adc_topk
        f.restype = ctypes.c_int64
        p = ctypes.c_void_p
        i64 = ctypes.c_int64
        f.argtypes = [p, i64, i64, p, i64, ctypes.c_float, p, p, i64, p, p]
        h = lib.vqrec_adc_topk_many
        h.restype = None
        h.argtypes = [p, i64, i64, i64, p, i64, p, p, p, i64, p, p, p, i64]
        g = lib.vqrec_adc_scores
        g.restype = None
        g.argtypes = [p, i64, i64, p, i64, p]
        return lib
    logger.warning("ADC kernel not built (index/_adc*.so missing): using the numpy scan, ~3x slower")
    return None


_KERNEL = _load_kernel()


def kernel_available() -> bool:
    return _KERNEL is not None


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.__array_interface__["data"][0]


def _f32(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.float32 and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=np.float32)


def adc_scores_ref(lut: NDArray[np.float32], codes: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Numpy reference: (nq, M, ksub) LUTs x (nb, M) codes -> (nq, nb) raw sums."""
    nq, M, _ = lut.shape
    out = np.zeros((nq, len(codes)), dtype=np.float32)
    for m in range(M):
        out += lut[:, m, :][:, codes[:, m]]
    return out


def topk_from_scores(scores: NDArray[np.float32], k: int) -> TopK:
    """Reference top-k of a (nq, nb) score matrix: best first, ties by lower row; -inf/NaN dropped."""
    nq, nb = scores.shape
    D = np.full((nq, k), -np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)  # noqa: E741
    for q in range(nq):
        s = scores[q]
        valid = np.flatnonzero(s > -np.inf)
        if len(valid) > k:
            # argpartition then a stable order on (score desc, row asc); include every tie at the cut
            kth = np.partition(-s[valid], k - 1)[k - 1]
            valid = valid[-s[valid] <= kth]
        order = np.lexsort((valid, -s[valid]))[:k]
        rows = valid[order]
        D[q, : len(rows)] = s[rows]
        I[q, : len(rows)] = rows
    return TopK(D, I)


def adc_topk(
    lut: NDArray[np.float32],
    codes: NDArray[np.uint8],
    k: int,
    *,
    alpha: NDArray[np.float32] | None = None,
    scale: NDArray[np.float32] | None = None,
    bias: NDArray[np.float32] | None = None,
    threads: int | None = None,
    use_kernel: bool = True,
) -> TopK:
    """Top-k rows by ADC score for each of nq queries.

    lut (nq, M, ksub) float32; codes (nb, M) uint8 C-contiguous; alpha (nq,) per-query factor;
    scale/bias (nb,) float32 per-item terms. Returns TopK with (nq, k) arrays.
    """
    lut = _f32(lut)
    if not isinstance(codes, np.ndarray):  # e.g. a 4-bit index's PackedCodes: the whole table, unpacked
        codes = np.asarray(codes)
    nq, M, ksub = lut.shape
    nb = len(codes)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if codes.ndim != 2 or codes.shape[1] != M:
        raise ValueError(f"codes shape {codes.shape} does not match lut M={M}")
    alpha = np.ones(nq, np.float32) if alpha is None else _f32(np.asarray(alpha).reshape(nq))
    if _KERNEL is None or not use_kernel:
        s = adc_scores_ref(lut, codes) * alpha[:, None]
        if scale is not None:
            s *= scale[None, :]
        if bias is not None:
            s += bias[None, :]
        s[np.isnan(s)] = -np.inf
        return topk_from_scores(s, k)

    if codes.dtype != np.uint8 or not codes.flags.c_contiguous:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
    sc = None if scale is None else _f32(scale)
    bi = None if bias is None else _f32(bias)
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)  # noqa: E741
    cptr, sptr, bptr = _ptr(codes), _ptr(sc), _ptr(bi)
    if nq == 1:  # the latency path: one call, no pool
        _KERNEL.vqrec_adc_topk(_ptr(lut), M, ksub, cptr, nb, float(alpha[0]), sptr, bptr, k, _ptr(D), _ptr(I))
        return TopK(D, I)

    counts = np.empty(nq, dtype=np.int64)
    # rows per block: the block's codes (block * M bytes) stay in L2 while every query scans them
    block = max(1024, (256 << 10) // max(1, M))
    lp, ap, dp, ip, cp = _ptr(lut), _ptr(alpha), _ptr(D), _ptr(I), _ptr(counts)

    def run(q0: int, q1: int) -> None:
        if q1 > q0:
            _KERNEL.vqrec_adc_topk_many(
                lp + q0 * M * ksub * 4, q1 - q0, M, ksub, cptr, nb, ap + q0 * 4, sptr, bptr, k,
                dp + q0 * k * 4, ip + q0 * k * 8, cp + q0 * 8, block,
            )  # fmt: skip

    run_chunks(nq, threads, run)
    return TopK(D, I)


# rows per piece of run_chunks(chunk=) for the encoders and the partition's assignment: on 2 cores, 65,536 rows
# in pieces of 2,048 kept both cores busy 1.95-1.96 of the time, two halves 1.81-1.91 (RQ16x8 beam 8)
ENCODE_CHUNK = 2048


def run_chunks(nq: int, threads: int | None, run: Callable[[int, int], None], *, chunk: int | None = None) -> None:
    """``run(q0, q1)`` over nq queries: in this thread, or split evenly over ``threads`` (default
    ``_default_threads()``) when there are at least two queries per thread (the kernels release the GIL).

    ``chunk`` (encoders: long runs of rows): pieces of about that many rows, taken by whichever thread is free,
    so a thread that the machine slows down leaves its share to the others instead of holding the block up."""
    threads = threads or _default_threads()
    if threads <= 1 or nq < 2 * threads:
        run(0, nq)
        return
    pieces = threads if chunk is None else max(threads, min(-(-nq // chunk), 64 * threads))
    bounds = np.linspace(0, nq, pieces + 1).astype(int).tolist()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda ab: run(*ab), zip(bounds[:-1], bounds[1:], strict=True)))


def adc_scores(lut: NDArray[np.float32], codes: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(nq, M, ksub) x (nb, M) -> (nq, nb) raw LUT sums, with the kernel when built."""
    lut = np.ascontiguousarray(lut, dtype=np.float32)
    codes = np.asarray(codes)
    if _KERNEL is None:
        return adc_scores_ref(lut, codes)
    nq, M, ksub = lut.shape
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    out = np.empty((nq, len(codes)), dtype=np.float32)
    for q in range(nq):
        _KERNEL.vqrec_adc_scores(lut[q].ctypes.data, M, ksub, codes.ctypes.data, len(codes), out[q].ctypes.data)
    return out


def _default_threads() -> int:
    """VQREC_THREADS, else the number of CPUs (counted once: os.cpu_count() is slow per query)."""
    env = os.environ.get("VQREC_THREADS")
    if env:
        return max(1, int(env))
    return _cpu_count()


@functools.cache
def _cpu_count() -> int:
    return os.cpu_count() or 1
