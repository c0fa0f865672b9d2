"""RQ beam-search encoding (index/rq_encode.py, index/_rq_encode.c): every kernel path gives the numpy
reference's codes bit for bit, and the codes are faiss's beam search's (the same recurrence) up to the float16
cross-product tables' rounding."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vqrec.index import rq_encode
from vqrec.index.codebooks import Codebooks, _unpack_bits
from vqrec.index.fastscan import kernel_paths

pytestmark = pytest.mark.skipif(rq_encode._kernel() is None, reason="the C kernel (index/_rq_encode.c) is not built")


def _trained(d: int, M: int, nbits: int, seed: int = 0) -> tuple[faiss.ResidualQuantizer, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max(2000, 40 << nbits), d)).astype(np.float32)
    rq = faiss.ResidualQuantizer(d, M, nbits)
    rq.cp.niter = 5
    rq.cp.seed = seed
    rq.max_beam_size = 1
    rq.train(x)
    return rq, faiss.vector_to_array(rq.codebooks).reshape(M, 1 << nbits, d)


def _err(y: np.ndarray, C: np.ndarray, codes: np.ndarray) -> np.ndarray:
    rec = C[np.arange(C.shape[0]), codes.astype(np.intp)].sum(axis=1)
    return ((y - rec) ** 2).sum(axis=1)


@pytest.mark.parametrize(
    ("d", "M", "nbits", "beam", "n"),
    [
        (16, 6, 5, 4, 300),  # K 32: the SIMD runs of 32
        (12, 5, 4, 8, 200),  # K 16 < 32: runs of K; d not a multiple of 8
        (8, 4, 2, 8, 150),  # K 4 < beam: the first stage keeps every candidate
        (24, 3, 8, 3, 120),  # K 256
        (10, 1, 6, 5, 90),  # one stage
        (16, 4, 5, 1, 2100),  # greedy; more rows than a block of the kernel (1,024)
    ],
)
def test_paths_equal_reference(d: int, M: int, nbits: int, beam: int, n: int) -> None:
    _, C = _trained(d, M, nbits)
    y = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    ref = rq_encode.encode(y, C, beam, impl="numpy")
    assert ref.shape == (n, M) and ref.dtype == np.uint8
    for impl in (*kernel_paths(), "auto"):
        np.testing.assert_array_equal(rq_encode.encode(y, C, beam, impl=impl, threads=2), ref, err_msg=impl)


@pytest.mark.parametrize(("M", "nbits", "beam"), [(6, 5, 4), (5, 4, 8), (4, 8, 8)])
def test_codes_are_faiss_beam_search(M: int, nbits: int, beam: int) -> None:
    """The same search as faiss's: the same codes but where float16 table rounding breaks a near-tie, and then
    an error as small to within that rounding."""
    d = 16
    rq, C = _trained(d, M, nbits)
    rq.max_beam_size = beam
    rq.compute_codebook_tables()
    rq.use_beam_LUT = 1
    y = np.random.default_rng(2).standard_normal((400, d)).astype(np.float32)
    ours = rq_encode.encode(y, C, beam)
    theirs = rq.compute_codes(y)
    theirs = theirs.reshape(len(y), M) if nbits == 8 else _unpack_bits(theirs, M, nbits)
    assert (ours == theirs).all(axis=1).mean() >= 0.97
    e_ours, e_theirs = _err(y, C, ours), _err(y, C, theirs)
    assert e_ours.mean() <= e_theirs.mean() * 1.001
    # a wider beam never does worse on average, greedy is the worst
    assert _err(y, C, rq_encode.encode(y, C, 1)).mean() >= e_ours.mean()


def test_zero_and_repeated_rows() -> None:
    _, C = _trained(8, 4, 4)
    y = np.zeros((5, 8), np.float32)
    y[2:] = np.random.default_rng(3).standard_normal(8)
    codes = rq_encode.encode(y, C, 4)
    np.testing.assert_array_equal(codes, rq_encode.encode(y, C, 4, impl="numpy"))
    assert (codes[0] == codes[1]).all() and (codes[2] == codes[3]).all() and (codes[3] == codes[4]).all()
    assert rq_encode.encode(y[:0], C, 4).shape == (0, 4)


def test_codebooks_encode_uses_it() -> None:
    """Codebooks.encode for rq: the kernel's codes, which decode at least as close as faiss's on average."""
    rq, C = _trained(16, 4, 6)
    cb = Codebooks(kind="rq", metric="l2", d=16, M=4, nbits=6, centroids=C, beam_size=8)
    assert rq_encode.available(cb.M, cb.ksub)
    y = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    codes = cb.encode(y)
    np.testing.assert_array_equal(codes, rq_encode.encode(y, C, 8, impl="numpy"))
    q = cb.faiss_quantizer()
    faiss_codes = _unpack_bits(q.compute_codes(y), 4, 6)
    assert _err(y, C, codes).mean() <= _err(y, C, faiss_codes).mean() * 1.001


def test_table_layout_and_limit() -> None:
    _, C = _trained(8, 4, 3)
    tabs = rq_encode.tables(C)
    K = 8
    assert tabs.cross.dtype == np.float16 and tabs.cross.size == rq_encode.table_bytes(4, K) // 2
    m, l, i = 3, 1, 5  # the row of codeword (l, i) in stage m's block
    o = K * K * m * (m - 1) // 2
    row = tabs.cross[o + (l * K + i) * K : o + (l * K + i + 1) * K]
    np.testing.assert_allclose(row, 2 * C[m] @ C[l, i], rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(tabs.cn, (C * C).sum(axis=2), rtol=1e-6)
    t = rq_encode.stage_tables(C[2, :3], tabs)  # a codeword's own distance term is -|c|^2
    np.testing.assert_allclose(t[np.arange(3), 2, np.arange(3)], -tabs.cn[2, :3], rtol=1e-5)
    assert rq_encode.available(16, 256)  # RQ16x8: 15.7 MB of tables
    assert not rq_encode.available(96, 256)  # 598 MB: over the limit, faiss encodes


def test_over_the_table_limit_faiss_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    rq, C = _trained(16, 4, 6)
    monkeypatch.setattr(rq_encode, "MAX_TABLE_BYTES", 0)
    cb = Codebooks(kind="rq", metric="l2", d=16, M=4, nbits=6, centroids=C, beam_size=8)
    y = np.random.default_rng(5).standard_normal((200, 16)).astype(np.float32)
    np.testing.assert_array_equal(cb.encode(y), _unpack_bits(cb.faiss_quantizer().compute_codes(y), 4, 6))
    assert cb._rq_tables is None
