"""The C ADC kernel against the numpy reference (faiss TestPQTables style).

Oracle: ``adc_scores_ref`` + ``topk_from_scores`` (a plain numpy loop and a lexsort), and for the
scores themselves an independent float64 gather. LUTs of small integers make every sum exact in
float32, so ids must match exactly even with many ties; random float LUTs check scores to 1e-5.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from vqrec.index import adc
from vqrec.index.adc import adc_scores, adc_scores_ref, adc_topk, kernel_available, topk_from_scores


def random_case(rng: np.random.Generator, nq: int, M: int, ksub: int, nb: int, *, integer: bool = False):
    if integer:  # small integers: float32 sums are exact, so summation order cannot matter
        lut = rng.integers(-8, 9, (nq, M, ksub)).astype(np.float32)
    else:
        lut = rng.standard_normal((nq, M, ksub)).astype(np.float32)
    codes = rng.integers(0, ksub, (nb, M), dtype=np.uint8)
    return lut, codes


def gather_f64(lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(nq, nb) float64 sums sum_m lut[q, m, codes[i, m]]: the oracle for the raw scores."""
    M = lut.shape[1]
    return lut.astype(np.float64)[:, np.arange(M), codes.astype(np.intp)].sum(axis=2)


def brute_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by (score desc, row asc) with a full stable sort; -inf/NaN never returned."""
    nq, nb = scores.shape
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)  # noqa: E741
    for q in range(nq):
        s = np.where(np.isnan(scores[q]), -np.inf, scores[q])
        order = np.argsort(-s, kind="stable")
        order = order[s[order] > -np.inf][:k]
        D[q, : len(order)] = s[order]
        I[q, : len(order)] = order
    return D, I


def test_kernel_is_built():
    # `pip install -e .` compiles index/_adc.c; the fallback is for machines without a compiler, not CI
    assert kernel_available(), "index/_adc*.so was not built or cannot be loaded"


@pytest.mark.parametrize(
    ("nq", "M", "ksub", "nb", "k"),
    [
        (7, 8, 256, 3000, 10),
        (3, 5, 64, 1000, 37),  # M not a multiple of 4: the kernel's remainder loop
        (1, 1, 16, 50, 5),
        (4, 7, 32, 1, 3),  # nb < k
        (5, 16, 256, 2000, 1),
    ],
)
def test_kernel_equals_reference_random_floats(rng, nq, M, ksub, nb, k):
    lut, codes = random_case(rng, nq, M, ksub, nb)
    ref = adc_topk(lut, codes, k, use_kernel=False)
    ker = adc_topk(lut, codes, k)
    np.testing.assert_array_equal(ker.I, ref.I)
    np.testing.assert_allclose(ker.D, ref.D, rtol=1e-5, atol=1e-6)
    # and both equal the float64 brute force
    D, I = brute_topk(gather_f64(lut, codes), k)  # noqa: E741
    np.testing.assert_array_equal(ker.I, I)
    np.testing.assert_allclose(ker.D, D, rtol=1e-5, atol=1e-5)
    assert ker.D.dtype == np.float32 and ker.I.dtype == np.int64 and ker.D.shape == (nq, k)


def test_adc_scores_kernel_equals_reference(rng):
    lut, codes = random_case(rng, 4, 6, 64, 500)
    np.testing.assert_allclose(adc_scores(lut, codes), adc_scores_ref(lut, codes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adc_scores_ref(lut, codes), gather_f64(lut, codes), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_alpha_scale_bias(rng, use_kernel):
    nq, M, ksub, nb, k = 6, 8, 64, 800, 20
    lut, codes = random_case(rng, nq, M, ksub, nb)
    alpha = rng.uniform(-2, 2, nq).astype(np.float32)  # negative alpha reverses the order
    scale = rng.uniform(0.1, 3, nb).astype(np.float32)
    bias = rng.standard_normal(nb).astype(np.float32)
    top = adc_topk(lut, codes, k, alpha=alpha, scale=scale, bias=bias, use_kernel=use_kernel)
    want = alpha[:, None] * gather_f64(lut, codes) * scale[None, :] + bias[None, :]
    D, I = brute_topk(want, k)  # noqa: E741
    np.testing.assert_array_equal(top.I, I)
    np.testing.assert_allclose(top.D, D, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_bias_minus_inf_masks_items(rng, use_kernel):
    lut, codes = random_case(rng, 5, 4, 16, 300)
    raw = gather_f64(lut, codes)
    bias = np.zeros(300, np.float32)
    best = np.argsort(-raw, axis=1)[:, :3].ravel()  # each query's three best items
    bias[best] = -np.inf
    top = adc_topk(lut, codes, 50, bias=bias, use_kernel=use_kernel)
    assert not np.isin(top.I, best).any()
    D, I = brute_topk(np.where(np.isinf(bias)[None, :], -np.inf, raw), 50)  # noqa: E741
    np.testing.assert_array_equal(top.I, I)
    # everything masked: all padding
    top = adc_topk(lut, codes, 5, bias=np.full(300, -np.inf, np.float32), use_kernel=use_kernel)
    assert (top.I == -1).all() and np.isneginf(top.D).all()


@pytest.mark.parametrize("use_kernel", [True, False])
def test_nan_scores_are_never_returned(rng, use_kernel):
    lut, codes = random_case(rng, 2, 4, 16, 100)
    scale = np.ones(100, np.float32)
    scale[[3, 50]] = np.nan
    top = adc_topk(lut, codes, 100, scale=scale, use_kernel=use_kernel)
    assert not np.isin(top.I, [3, 50]).any()
    assert (top.I[:, :98] >= 0).all() and (top.I[:, 98:] == -1).all()


@pytest.mark.parametrize("use_kernel", [True, False])
def test_exact_ties_broken_by_lower_row(use_kernel):
    M, ksub = 4, 16
    lut = np.zeros((1, M, ksub), np.float32)
    lut[0, :, 1] = 1.0  # score = number of codes equal to 1
    codes = np.zeros((20, M), np.uint8)
    top_rows = [17, 3, 11, 8, 0]  # all score M: a five-way tie, inserted in scrambled order
    codes[top_rows] = 1
    codes[[5, 9], :3] = 1  # score 3, tied with each other
    top = adc_topk(lut, codes, 7, use_kernel=use_kernel)
    assert top.I[0].tolist() == [0, 3, 8, 11, 17, 5, 9]
    assert top.D[0].tolist() == [4, 4, 4, 4, 4, 3, 3]
    # the tie is cut at k: the lowest rows win
    top = adc_topk(lut, codes, 2, use_kernel=use_kernel)
    assert top.I[0].tolist() == [0, 3]
    # the rest of the table (all score 0) in row order
    top = adc_topk(lut, codes, 20, use_kernel=use_kernel)
    rest = [r for r in range(20) if r not in (0, 3, 8, 11, 17, 5, 9)]
    assert top.I[0].tolist() == [0, 3, 8, 11, 17, 5, 9, *rest]


def test_kernel_equals_reference_with_many_ties(rng):
    # integer LUTs over few codewords: hundreds of exact ties per query, sums exact in float32
    lut, codes = random_case(rng, 9, 6, 4, 2000, integer=True)
    scale = rng.integers(1, 3, 2000).astype(np.float32)
    bias = rng.integers(-2, 3, 2000).astype(np.float32)
    for k in (1, 10, 100, 1999, 2000):
        ref = adc_topk(lut, codes, k, scale=scale, bias=bias, use_kernel=False)
        ker = adc_topk(lut, codes, k, scale=scale, bias=bias)
        np.testing.assert_array_equal(ker.I, ref.I)
        np.testing.assert_array_equal(ker.D, ref.D)
        D, I = brute_topk(gather_f64(lut, codes) * scale + bias, k)  # noqa: E741
        np.testing.assert_array_equal(ker.I, I)


@pytest.mark.parametrize("integer", [False, True])
def test_batched_kernel_across_code_blocks(rng, integer):
    """A query batch scans the code table in blocks of max(1024, 256 KiB / M) rows; with M=256 that is
    1024 rows, so nb=3500 spans four blocks. Results must equal one query at a time and the reference,
    including exact ties that straddle block boundaries (rows 1023/1024, 2047/2048, 3071/3072)."""
    nq, M, ksub, nb, k = 6, 256, 4, 3500, 40
    lut, codes = random_case(rng, nq, M, ksub, nb, integer=integer)
    scale = np.ones(nb, np.float32) if integer else rng.uniform(0.5, 2, nb).astype(np.float32)
    best = np.argmax(gather_f64(lut, codes)[0] * scale)
    for r in (1023, 1024, 2047, 2048, 3071, 3072, 3499):
        codes[r] = codes[best]
        scale[r] = scale[best]
    batch = adc_topk(lut, codes, k, scale=scale, threads=1)
    single = [adc_topk(lut[q : q + 1], codes, k, scale=scale, threads=1) for q in range(nq)]
    ref = adc_topk(lut, codes, k, scale=scale, use_kernel=False)
    np.testing.assert_array_equal(batch.I, np.concatenate([s.I for s in single]))
    np.testing.assert_array_equal(batch.D, np.concatenate([s.D for s in single]))
    np.testing.assert_array_equal(batch.I, ref.I)
    np.testing.assert_allclose(batch.D, ref.D, rtol=1e-5, atol=1e-5)
    tied = sorted({best, 1023, 1024, 2047, 2048, 3071, 3072, 3499})
    assert batch.I[0, : len(tied)].tolist() == tied  # the best score, 8 ways tied, in row order


@pytest.mark.parametrize("use_kernel", [True, False])
def test_k_larger_than_nb_pads(rng, use_kernel):
    lut, codes = random_case(rng, 3, 4, 16, 6)
    top = adc_topk(lut, codes, 10, use_kernel=use_kernel)
    assert top.I.shape == (3, 10)
    assert (top.I[:, :6] >= 0).all() and (top.I[:, 6:] == -1).all()
    assert np.isneginf(top.D[:, 6:]).all() and np.isfinite(top.D[:, :6]).all()
    assert all(sorted(r) == list(range(6)) for r in top.I[:, :6].tolist())
    assert (np.diff(top.D[:, :6], axis=1) <= 0).all()


def test_threads_do_not_change_results(rng):
    lut, codes = random_case(rng, 64, 8, 256, 2000)
    one = adc_topk(lut, codes, 25, threads=1)
    two = adc_topk(lut, codes, 25, threads=2)
    many = adc_topk(lut, codes, 25, threads=5)  # uneven split of 64 queries
    for other in (two, many):
        np.testing.assert_array_equal(one.I, other.I)
        np.testing.assert_array_equal(one.D, other.D)


def test_threads_from_env(rng, monkeypatch):
    lut, codes = random_case(rng, 16, 4, 16, 300)
    monkeypatch.setenv("VQREC_THREADS", "3")
    assert adc._default_threads() == 3
    np.testing.assert_array_equal(adc_topk(lut, codes, 5).I, adc_topk(lut, codes, 5, threads=1).I)


def test_non_contiguous_inputs(rng):
    lut, codes = random_case(rng, 4, 8, 32, 600)
    wide = np.zeros((600, 12), np.uint8)
    wide[:, 2:10] = codes
    view = wide[:, 2:10]  # (nb, M) view, not C-contiguous (usearch's vectors[:, 1:])
    assert not view.flags.c_contiguous
    lut_f = np.asfortranarray(lut)
    want = adc_topk(lut, codes, 10, use_kernel=False)
    for use_kernel in (True, False):
        got = adc_topk(lut_f, view, 10, use_kernel=use_kernel)
        np.testing.assert_array_equal(got.I, want.I)


def test_code_shape_mismatch_raises(rng):
    lut, codes = random_case(rng, 2, 4, 16, 10)
    with pytest.raises(ValueError, match="M=4"):
        adc_topk(lut, codes[:, :3], 5)


def test_topk_from_scores_reference():
    s = np.array([[1, 5, 5, -np.inf, 2, 5, np.nan]], np.float32)
    top = topk_from_scores(np.where(np.isnan(s), -np.inf, s).astype(np.float32), 4)
    assert top.I.tolist() == [[1, 2, 5, 4]]
    top = topk_from_scores(s[:, :4], 6)
    assert top.I.tolist() == [[1, 2, 0, -1, -1, -1]]


def test_kernel_k0_does_not_touch_the_output_buffers(rng):
    lut, codes = random_case(rng, 1, 4, 16, 100)
    codes = np.ascontiguousarray(codes)
    D = np.full(1, -1e30, np.float32)  # canaries just past the k=0 region
    I = np.full(1, 10**9, np.int64)  # noqa: E741
    n = adc._KERNEL.vqrec_adc_topk(
        lut[0].ctypes.data,
        4,
        16,
        codes.ctypes.data,
        len(codes),
        ctypes.c_float(1.0),
        None,
        None,
        0,
        D.ctypes.data,
        I.ctypes.data,
    )
    assert n == 0
    assert D[0] == np.float32(-1e30) and I[0] == 10**9


@pytest.mark.parametrize("n,threads,chunk", [(10, 2, None), (65536, 2, 2048), (5000, 2, 2048), (3, 2, 2048),
                                             (100_000, 3, 7), (1, 1, None)])  # fmt: skip
def test_run_chunks_covers_every_row_once(n, threads, chunk):
    """Pieces are disjoint and cover [0, n) (the encoders write their rows in place); with ``chunk``, about that
    many rows each, at most 64 per thread."""
    import threading

    from vqrec.index.adc import run_chunks

    seen = np.zeros(n, np.int64)
    pieces: list[tuple[int, int]] = []
    lock = threading.Lock()

    def run(a: int, b: int) -> None:
        with lock:
            pieces.append((a, b))
            seen[a:b] += 1

    run_chunks(n, threads, run, chunk=chunk)
    assert (seen == 1).all()
    if chunk is None or n < 2 * threads:
        assert len(pieces) == (1 if n < 2 * threads or threads == 1 else threads)
    else:
        assert len(pieces) == max(threads, min(-(-n // chunk), 64 * threads))
