"""Residual-quantizer encoding by beam search on lookup tables, for 2 cores.

Codes minimize ||y - sum_m C[m, code_m]||^2 by beam search, stage by stage (faiss's ResidualQuantizer does the
same with ``use_beam_LUT``). A partial code b with error e_b (up to the constant ||y||^2) extends by codeword j
of stage m to

    e_b + (t[m, j] + sum_{l<m} X_m[l, code_b[l]][j]),   t[m, j] = ||C[m, j]||^2 - 2 <y, C[m, j]>,
                                                        X_m[l, i][j] = 2 <C[l, i], C[m, j]>,

and the ``beam`` smallest (a stable sort: ties keep the lower parent, then the lower j) go on; the smallest at
the last stage is the code. The cross-product tables X are built once per codebook (``tables``) and kept in
float16 (RQ16x8: 15.7 MB, half the memory traffic of float32; 2.2 % of the 1M recipe's rows then take another
code than faiss's float32 search, at the same error). The C kernel (index/_rq_encode.c, threads over rows)
computes t itself (no BLAS: its spinning threads would take the cores the kernel runs on), reads each distinct
prefix's table row once and offers only the candidates under a bound on the kept errors; ``encode_ref`` below
is its numpy reference, which gives the same codes bit for bit (tests).

Measured on the 1M x 64 recipe (RQ16x8, beam 8, 2 cores): see docs/indexing.md.
"""

from __future__ import annotations

import ctypes
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

Impl = Literal["auto", "scalar", "avx2", "numpy"]
_IMPLS = {"auto": 0, "scalar": 1, "avx2": 2}
# the cross-product tables are M(M-1)/2 blocks of ksub x ksub float16: RQ16x8 15.7 MB. Beyond this faiss encodes
MAX_TABLE_BYTES = 256 << 20
_REF_ROWS = 4096  # rows of the numpy reference at a time


class Tables(NamedTuple):
    cross: NDArray[np.float16]  # the flat cross-product tables (see ``tables``)
    ct: NDArray[np.float32]  # (M, d, K): each stage's codewords transposed
    cn: NDArray[np.float32]  # (M, K): their squared norms


def _kernel():  # type: ignore[no-untyped-def]
    from .adc import _KERNEL

    f = getattr(_KERNEL, "vqrec_rq_encode", None)
    if f is not None and f.argtypes is None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        f.restype = i64
        f.argtypes = [p, i64, i64, i64, i64, p, p, p, i64, p, ctypes.c_int32]
    return f


def available(M: int, ksub: int) -> bool:
    """The kernel is built and the tables of M stages of ksub codewords fit MAX_TABLE_BYTES."""
    return _kernel() is not None and table_bytes(M, ksub) <= MAX_TABLE_BYTES


def table_bytes(M: int, ksub: int) -> int:
    return 2 * ksub * ksub * M * (M - 1) // 2


def tables(C: NDArray[np.float32]) -> Tables:
    """What encoding with the (M, K, d) codebooks C reads. The cross-product tables, flat, in float16: for stage
    m >= 1, the (m * K, K) block 2 <C[l, i], C[m, j]> (row l * K + i) at offset K * K * m * (m - 1) / 2."""
    C = np.ascontiguousarray(C, dtype=np.float32)
    M, K, d = C.shape
    flat = C.reshape(M * K, d)
    cross = np.empty(K * K * M * (M - 1) // 2, np.float16)
    for m in range(1, M):
        o = K * K * m * (m - 1) // 2
        cross[o : o + m * K * K] = (2.0 * (flat[: m * K] @ C[m].T)).astype(np.float16).ravel()
    ct = np.ascontiguousarray(C.transpose(0, 2, 1))
    cn = np.zeros((M, K), np.float32)
    for k in range(d):  # in dimension order, as the kernel's t
        cn += C[:, :, k] * C[:, :, k]
    return Tables(cross, ct, cn)


def stage_tables(y: NDArray[np.float32], tabs: Tables) -> NDArray[np.float32]:
    """(n, d) rows -> t (n, M, K) = ||C[m, j]||^2 - 2 <y, C[m, j]>, the products summed in dimension order (the
    kernel's order, so both round alike)."""
    M, d, K = tabs.ct.shape
    t = np.zeros((len(y), M, K), np.float32)
    for k in range(d):
        t += y[:, k, None, None] * tabs.ct[None, :, k, :]
    return tabs.cn[None] - np.float32(2) * t


def encode_ref(y: NDArray[np.float32], tabs: Tables, beam: int) -> NDArray[np.uint8]:
    """The kernel's steps in numpy: codes (n, M) of the rows y (n, d)."""
    t = stage_tables(y, tabs)
    n, M, K = t.shape
    e = np.zeros((n, 1), np.float32)
    codes = np.zeros((n, 1, 0), np.uint8)
    for m in range(M):
        nb = e.shape[1]
        X = tabs.cross[K * K * m * (m - 1) // 2 :][: m * K * K].reshape(m * K, K).astype(np.float32)
        acc = np.zeros((n, nb, K), np.float32)
        for l in range(m):
            acc += X[l * K + codes[:, :, l].astype(np.intp)]
        cand = (e[:, :, None] + (t[:, m][:, None, :] + acc)).reshape(n, nb * K)
        keep = np.argsort(cand, axis=1, kind="stable")[:, : min(beam, nb * K)]
        parent, j = keep // K, keep % K
        e = np.take_along_axis(cand, keep, axis=1)
        codes = np.concatenate([np.take_along_axis(codes, parent[:, :, None], axis=1), j[:, :, None]], axis=2)
        codes = codes.astype(np.uint8)
    return np.ascontiguousarray(codes[:, 0])


def encode(
    y: NDArray[np.float32],
    C: NDArray[np.float32],
    beam: int,
    *,
    tabs: Tables | None = None,
    impl: Impl = "auto",
    threads: int | None = None,
) -> NDArray[np.uint8]:
    """RQ codes (n, M) of the (n, d) code-space rows ``y`` with codebooks C (M, K, d), beam width ``beam``.
    ``tabs``: ``tables(C)`` when the caller keeps them. ``impl``: "auto" (AVX2 when the CPU has it), "scalar",
    "avx2" (the kernel's paths) or "numpy" (the reference)."""
    M, K, d = C.shape
    y = np.ascontiguousarray(y, dtype=np.float32)
    tabs = tables(C) if tabs is None else tabs
    out = np.empty((len(y), M), np.uint8)
    if impl == "numpy":
        for i0 in range(0, len(y), _REF_ROWS):
            out[i0 : i0 + _REF_ROWS] = encode_ref(y[i0 : i0 + _REF_ROWS], tabs, beam)
        return out
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("the C kernel (index/_rq_encode.c) is not built")
    from .adc import ENCODE_CHUNK, run_chunks

    addr = [a.ctypes.data for a in (tabs.ct, tabs.cn, tabs.cross)]

    def run(a: int, b: int) -> None:
        if kernel(y[a:b].ctypes.data, b - a, d, M, K, *addr, beam, out[a:b].ctypes.data, _IMPLS[impl]) < 0:
            raise MemoryError("rq encoding: no memory for the beam")

    run_chunks(len(y), threads, run, chunk=ENCODE_CHUNK)
    return out
