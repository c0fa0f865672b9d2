"""bench/sa_rq.py: with w = 0 its beam search is RQ's (the kernel's codes, to float16 table rounding); with w > 0
the codes trade squared error for a smaller residual along the item's own direction."""

from __future__ import annotations

import faiss
import numpy as np

from bench.sa_rq import encode_sa
from vqrec.index import rq_encode
from vqrec.index.codebooks import normalize_rows


def _setup() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = normalize_rows(rng.standard_normal((3000, 16)).astype(np.float32))
    rq = faiss.ResidualQuantizer(16, 4, 5)
    rq.cp.niter = 5
    rq.max_beam_size = 1
    rq.train(x)
    C = faiss.vector_to_array(rq.codebooks).reshape(4, 32, 16)
    return normalize_rows(rng.standard_normal((300, 16)).astype(np.float32)), C


def _res(y: np.ndarray, C: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return y - C[np.arange(C.shape[0]), codes.astype(np.intp)].sum(axis=1)


def test_plain_is_rq_beam_search() -> None:
    y, C = _setup()
    ours = encode_sa(y, C, 4, 0.0)
    kernel = rq_encode.encode(y, C, 4, impl="numpy")
    assert (ours == kernel).all(axis=1).mean() >= 0.97
    e_ours, e_kernel = ((_res(y, C, c) ** 2).sum(axis=1).mean() for c in (ours, kernel))
    assert abs(e_ours - e_kernel) <= 1e-3 * e_kernel


def test_score_aware_shrinks_the_parallel_residual() -> None:
    y, C = _setup()
    plain, sa = encode_sa(y, C, 4, 0.0), encode_sa(y, C, 4, 4.0)
    par = [np.abs(np.einsum("nd,nd->n", _res(y, C, c), y)).mean() for c in (plain, sa)]
    sq = [(_res(y, C, c) ** 2).sum(axis=1).mean() for c in (plain, sa)]
    assert par[1] < par[0] and sq[1] >= sq[0]
