"""The 4-bit fast-scan kernel and the 8-bit list scan, every dispatch path against the numpy reference.

The kernel is compiled without fused multiply-add, so the scalar path, the AVX2 path and the numpy reference
give the same bits: ids and scores are compared for equality, not closeness.
"""

from __future__ import annotations

import numpy as np
import pytest

from vqrec.index import fastscan as fs
from vqrec.index.adc import _KERNEL

pytestmark = pytest.mark.skipif(not fs.fastscan_available(), reason="the C kernel (index/_fastscan.c) is not built")
PATHS = fs.kernel_paths() or ["scalar"]


def _lists(n: int, sizes: list[int]) -> np.ndarray:
    assert sum(sizes) == n
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@pytest.mark.parametrize("M", [2, 8, 32, 64])
def test_pack_matches_reference_and_unpacks(M: int) -> None:
    rng = np.random.default_rng(M)
    n = 100
    codes = rng.integers(0, 16, (n, M), dtype=np.uint8)
    rows = _lists(n, [0, 33, 0, 31, 32, 4])  # empty lists, a full block, partial blocks
    packed = fs.pack(codes, rows)
    lb = fs.list_blocks(rows)
    assert packed.shape == (int(lb[-1]), 16 * M)
    for ll in range(len(rows) - 1):
        assert np.array_equal(packed[lb[ll] : lb[ll + 1]], fs.pack_ref(codes[rows[ll] : rows[ll + 1]]))
    assert np.array_equal(fs.unpack_rows(packed, M, rows, np.arange(n)), codes)
    assert np.array_equal(fs.unpack_rows(packed, M, rows, np.array([99, 0, 40])), codes[[99, 0, 40]])


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("M", [2, 16, 32])
def test_lut_quantization_matches_reference(M: int, impl: str) -> None:
    rng = np.random.default_rng(1)
    wide = (rng.standard_normal((M, 16)) * rng.uniform(0.01, 100, (M, 1))).astype(np.float32)  # one table sets delta
    for lut in (rng.standard_normal((M, 16)).astype(np.float32), wide, np.zeros((M, 16), np.float32)):
        q, delta, bias = fs.quantize_lut_ref(lut)
        qq = np.empty(16 * M, np.uint8)
        out = np.zeros(2, np.float32)
        _KERNEL.vqrec_fs_quantize_lut(lut.ctypes.data, M, qq.ctypes.data, out[:1].ctypes.data, out[1:].ctypes.data,
                                      fs._IMPLS[impl])  # fmt: skip
        assert (out[0], out[1]) == (delta, bias)
        assert np.array_equal(qq.reshape(M // 2, 2, 16).reshape(M, 16), q)
        # the quantized table approximates the float one within half a step per sub-quantizer
        assert np.abs(q * delta + lut.min(axis=1, keepdims=True) - lut).max() <= delta / 2 * 1.0001


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("M", [2, 8, 32, 64])
def test_block_sums_every_path(impl: str, M: int) -> None:
    rng = np.random.default_rng(M)
    n = 96
    codes = rng.integers(0, 16, (n, M), dtype=np.uint8)
    lut = (rng.standard_normal((M, 16)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
    q, _, _ = fs.quantize_lut_ref(lut)
    qpairs = np.ascontiguousarray(q.reshape(M // 2, 32))
    blk = fs.pack_ref(codes)
    out = np.empty(len(blk) * 32, np.uint16)
    _KERNEL.vqrec_fs_sums(qpairs.ctypes.data, M, blk.ctypes.data, len(blk), out.ctypes.data, fs._IMPLS[impl])
    assert np.array_equal(out.astype(np.int64), fs.block_sums_ref(q, codes))


def _scan(M: int, n: int, sizes: list[int], seed: int, *, terms: bool, d: int = 12) -> tuple:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (n, M), dtype=np.uint8)
    rows = _lists(n, sizes)
    cent = rng.standard_normal((len(sizes), d)).astype(np.float32)
    scale = add = None
    if terms:
        scale = rng.uniform(0.2, 3, n).astype(np.float32)
        add = rng.standard_normal(n).astype(np.float32)
        add[[3, 50]] = -np.inf  # masked items are never returned
        scale[7] = np.nan
    ls = fs.ListScan(
        M=M, ksub=16, list_rows=rows, centroids_t=cent.T, scale=scale, add=add, packed=fs.pack(codes, rows)
    )
    return ls, codes, rows, cent, scale, add


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("terms", [False, True])
@pytest.mark.parametrize("M", [2, 8, 32])
def test_search_every_path_equals_reference(impl: str, terms: bool, M: int) -> None:
    n, sizes = 700, [0, 1, 130, 64, 200, 5, 300]
    ls, codes, rows, cent, scale, add = _scan(M, n, sizes, seed=M, terms=terms)
    rng = np.random.default_rng(7)
    for _ in range(5):
        lut = rng.standard_normal((M, 16)).astype(np.float32)
        y = rng.standard_normal((1, cent.shape[1])).astype(np.float32)
        alpha = np.float32(rng.uniform(0.5, 2))
        for nprobe, kcand, k in ((1, 10, 10), (3, 40, 10), (7, 16, 25), (7, 700, 5)):
            top, scanned = ls.search(lut[None], y, np.array([alpha]), nprobe=nprobe, k=k, kcand=kcand, impl=impl)
            lists = fs.probe_ref(y[0], ls.coarse, None, None, nprobe)
            ref = fs.search_ref(lut, codes, rows, lists, float(alpha), scale, add, kcand, k)
            assert np.array_equal(top.I, ref.I), (nprobe, kcand, k)
            assert np.array_equal(top.D, ref.D)
            assert scanned[0] == sum(sizes[ll] for ll in lists)
            if terms:
                assert not set(top.I[0].tolist()) & {3, 7, 50}


@pytest.mark.parametrize("impl", PATHS)
def test_batch_and_threads_equal_one_by_one(impl: str) -> None:
    M, n = 16, 2000
    ls, *_ = _scan(M, n, [500, 700, 800], seed=3, terms=True)
    rng = np.random.default_rng(5)
    luts = rng.standard_normal((9, M, 16)).astype(np.float32)
    ys = rng.standard_normal((9, 12)).astype(np.float32)
    alpha = np.ones(9, np.float32)
    batch, sb = ls.search(luts, ys, alpha, nprobe=2, k=10, kcand=20, impl=impl, threads=2)
    for i in range(9):
        one, so = ls.search(luts[i : i + 1], ys[i : i + 1], alpha[i : i + 1], nprobe=2, k=10, kcand=20, impl=impl)
        assert np.array_equal(one.I, batch.I[i : i + 1]) and np.array_equal(one.D, batch.D[i : i + 1])
        assert so[0] == sb[i]


def test_exact_rescore_recovers_float_ranking() -> None:
    """With every item a candidate, the 4-bit search returns the float-table top-k exactly."""
    M, n = 8, 500
    ls, codes, rows, _, scale, add = _scan(M, n, [n], seed=11, terms=True)
    lut = np.random.default_rng(2).standard_normal((M, 16)).astype(np.float32)
    top, _ = ls.search(lut[None], np.zeros((1, 12), np.float32), None, nprobe=1, k=10, kcand=n)
    exact = fs.exact_scores_ref(lut, codes, np.arange(n), 1.0, scale, add)
    exact[np.isnan(exact)] = -np.inf
    order = np.lexsort((np.arange(n), -exact))[:10]
    assert np.array_equal(top.I[0], order)


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("ksub", [16, 64, 256])
def test_code_table_lists_equal_reference(impl: str, ksub: int) -> None:
    """The 8-bit (any width) scan per list: exact ADC over the probed lists, ties by lower row."""
    rng = np.random.default_rng(ksub)
    M, n, sizes = 6, 400, [100, 0, 150, 150]
    codes = rng.integers(0, ksub, (n, M), dtype=np.uint8)
    rows = _lists(n, sizes)
    cent = rng.standard_normal((4, 5)).astype(np.float32)
    w = rng.uniform(0.5, 2, 4).astype(np.float32)
    scale = rng.uniform(0.5, 2, n).astype(np.float32)
    ls = fs.ListScan(M=M, ksub=ksub, list_rows=rows, centroids_t=cent.T, scale=scale, add=None, w=w, codes=codes)
    for _ in range(4):
        lut = rng.standard_normal((M, ksub)).astype(np.float32)
        y = rng.standard_normal((1, 5)).astype(np.float32)
        for nprobe in (1, 2, 4):
            top, _ = ls.search(lut[None], y, np.array([1.5], np.float32), nprobe=nprobe, k=12, impl=impl)
            lists = fs.probe_ref(y[0], ls.coarse, w, None, nprobe)
            ref = fs._exact8_ref(lut, codes, rows, lists, 1.5, scale, None, 12)
            assert np.array_equal(top.I, ref.I)
            assert np.allclose(top.D, ref.D, rtol=1e-6)


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("ksub", [4, 16, 256])
@pytest.mark.parametrize("kind", ["pq", "rq"])
def test_kernel_lookup_table_equals_reference(kind: str, ksub: int, impl: str) -> None:
    rng = np.random.default_rng(4)
    M, d = 4, 8
    cent = rng.standard_normal((M, ksub, d if kind == "rq" else d // M)).astype(np.float32)
    mat, step = fs.lut_matrix(cent, kind)
    ls = fs.ListScan(
        M=M, ksub=ksub, list_rows=np.array([0, 0]), centroids_t=np.zeros((d, 1), np.float32), scale=None, add=None,
        codes=np.zeros((0, M), np.uint8), lutmat=mat, lut_ystep=step,
    )  # fmt: skip
    y = rng.standard_normal(d).astype(np.float32)
    assert np.array_equal(ls.lut(y, impl), fs.lut_ref(y, mat, step))
    want = np.einsum("mkt,mt->mk", cent, y.reshape(M, -1)) if kind == "pq" else np.einsum("mkd,d->mk", cent, y)
    assert np.allclose(ls.lut(y), want, rtol=1e-5, atol=1e-5)


def test_numpy_fallback_equals_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C library the same search runs in numpy, with the same answers."""
    M, n = 8, 600
    ls, *_ = _scan(M, n, [200, 100, 300], seed=9, terms=True)
    rng = np.random.default_rng(8)
    luts = rng.standard_normal((3, M, 16)).astype(np.float32)
    ys = rng.standard_normal((3, 12)).astype(np.float32)
    want, ws = ls.search(luts, ys, None, nprobe=2, k=10, kcand=20)
    monkeypatch.setattr(fs, "_BOUND", False)
    got, gs = ls.search(luts, ys, None, nprobe=2, k=10, kcand=20)
    assert np.array_equal(got.I, want.I) and np.array_equal(got.D, want.D) and np.array_equal(gs, ws)


@pytest.mark.parametrize("d", [12, 16])  # 16: the SIMD sums (d a multiple of 8, on an AVX2 machine)
@pytest.mark.parametrize("vtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("mode", ["ip", "cosine", "l2"])
def test_kernel_rerank_equals_reference(vtype: str, mode: str, d: int) -> None:
    """The re-rank inside the kernel: the candidates' exact scores with the stored vectors, best k."""
    M, n = 8, 900
    rng = np.random.default_rng(21)
    ls0, *_ = _scan(M, n, [300, 200, 400], seed=21, terms=False, d=d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[[4, 9]] = 0.0  # zero vectors: never returned under cosine
    scale = None
    if vtype == "int8":
        scale = (np.abs(x).max(axis=0) / 127).astype(np.float32)
        vec = np.rint(x / scale).clip(-127, 127).astype(np.int8)
    else:
        vec = x.astype(vtype)
    ls = fs.ListScan(M=M, ksub=16, list_rows=ls0.list_rows, centroids_t=ls0.centroids_t.astype(np.float32),
                     scale=None, add=None, packed=ls0.packed, vectors=vec, vector_scale=scale)  # fmt: skip
    luts = rng.standard_normal((4, M, 16)).astype(np.float32)
    ys = rng.standard_normal((4, d)).astype(np.float32)
    xr = rng.standard_normal((4, d)).astype(np.float32)
    for q in range(4):
        got, _ = ls.search(luts[q : q + 1], ys[q : q + 1], None, nprobe=2, k=7, kcand=80, rerank=60, xr=xr[q : q + 1],
                           mode=mode)  # fmt: skip
        cand, _ = ls.search(luts[q : q + 1], ys[q : q + 1], None, nprobe=2, k=60, kcand=80)
        want = fs.rerank_ref(ls, cand, xr[q : q + 1], mode, 7)
        assert np.array_equal(got.I, want.I)
        assert np.allclose(got.D, want.D, rtol=1e-6, atol=1e-6)
    batch, _ = ls.search(luts, ys, None, nprobe=2, k=7, kcand=80, rerank=60, xr=xr, mode=mode, threads=2)
    one, _ = ls.search(luts[3:], ys[3:], None, nprobe=2, k=7, kcand=80, rerank=60, xr=xr[3:], mode=mode)
    assert np.array_equal(batch.I[3:], one.I)


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("nlist", [1, 31, 32, 33, 65, 203])
@pytest.mark.parametrize("d", [13, 24])
def test_probing_over_blocks_of_lists_equals_reference(impl: str, nlist: int, d: int) -> None:
    """The int8 centroid table is held in blocks of C8_BLOCK lists (the last one padded, d padded to a multiple of
    4): every list is probed in the reference's order (int8 shortlist, exact float16 keys), whatever nlist and d
    are; the int8 rows are the centroids to half a step."""
    rng = np.random.default_rng(nlist + d)
    M = 8
    sizes = rng.integers(0, 6, nlist).tolist()
    n = int(sum(sizes))
    codes = rng.integers(0, 16, (n, M), dtype=np.uint8)
    rows = _lists(n, sizes)
    cent = rng.standard_normal((nlist, d)).astype(np.float32)
    w = rng.uniform(0.5, 2, nlist).astype(np.float32)
    ls = fs.ListScan(M=M, ksub=16, list_rows=rows, centroids_t=cent.T, scale=None, add=None, w=w,
                     packed=fs.pack(codes, rows))  # fmt: skip
    table = ls.coarse
    assert table.c8.shape == (-(-nlist // fs.C8_BLOCK), -(-d // 4), fs.C8_BLOCK, 4)
    step = table.c8s[:, None]
    assert np.all(np.abs(table.rows8() * step - cent) <= step / 2 * (1 + 1e-5))
    assert np.array_equal(table.c8sum, table.rows8().sum(axis=1))
    for _ in range(4):
        lut = rng.standard_normal((M, 16)).astype(np.float32)
        y = rng.standard_normal((1, d)).astype(np.float32)
        for nprobe in sorted({1, 5, max(1, nlist - 1)}):
            top, scanned = ls.search(lut[None], y, None, nprobe=nprobe, k=10, kcand=n or 1, impl=impl)
            lists = fs.probe_ref(y[0], table, w, None, nprobe)
            assert scanned[0] == sum(sizes[ll] for ll in lists), nprobe
            ref = fs.search_ref(lut, codes, rows, lists, 1.0, None, None, n or 1, 10)
            assert np.array_equal(top.I, ref.I) and np.array_equal(top.D, ref.D)


@pytest.mark.parametrize("impl", PATHS)
def test_int8_shortlist_finds_the_exact_best_lists(impl: str) -> None:
    """The int8 key only picks which lists get an exact key: on clustered data the probed lists are those of the
    exact keys (float16 rows, every list keyed). A zero query or one with a NaN keys every list exactly."""
    rng = np.random.default_rng(3)
    nlist, d, M = 300, 32, 8
    cent = (rng.standard_normal((nlist, d)) * rng.uniform(0.2, 3, (nlist, 1))).astype(np.float32)
    w = rng.uniform(0.5, 2, nlist).astype(np.float32)
    b = rng.uniform(-1, 1, nlist).astype(np.float32)
    sizes = [3] * nlist
    rows = _lists(3 * nlist, sizes)
    codes = rng.integers(0, 16, (3 * nlist, M), dtype=np.uint8)
    ls = fs.ListScan(M=M, ksub=16, list_rows=rows, centroids_t=cent.T, scale=None, add=None, w=w, b=b,
                     packed=fs.pack(codes, rows))  # fmt: skip
    c16 = ls.coarse.c16.astype(np.float64)
    lut = np.zeros((1, M, 16), np.float32)
    same = 0
    ys = (cent[rng.integers(0, nlist, 200)] + 0.3 * rng.standard_normal((200, d))).astype(np.float32)
    for y in ys:
        for nprobe in (1, 4, 16, 64):
            exact = (c16 @ y.astype(np.float64)) * w + b
            want = set(np.argsort(-exact, kind="stable")[:nprobe].tolist())
            got = fs.probe_ref(y, ls.coarse, w, b, nprobe)
            top, _ = ls.search(lut, y[None], None, nprobe=nprobe, k=3 * nprobe, kcand=3 * nprobe, impl=impl)
            assert set((top.I[0] // 3).tolist()) == set(got.tolist())  # the kernel probes the reference's lists
            same += set(got.tolist()) == want
    assert same >= 0.99 * 4 * len(ys)
    for y in (np.zeros(d, np.float32), np.where(np.arange(d) == 3, np.nan, ys[0]).astype(np.float32)):
        full = fs.probe_ref(y, fs.coarse_table(cent), w, b, 5)
        with np.errstate(invalid="ignore"):
            keys = fs._key_terms(fs._exact_keys(y, ls.coarse.c16), np.arange(nlist), w, b)
        assert np.array_equal(full, np.lexsort((np.arange(nlist), -keys))[:5])
        if np.isfinite(y).all():  # the kernel keys every list of a zero query exactly too
            top, _ = ls.search(lut, y[None], None, nprobe=5, k=15, kcand=15, impl=impl)
            assert set((top.I[0] // 3).tolist()) == set(full.tolist())
        else:  # the kernel refuses a NaN query before it probes anything
            with pytest.raises(fs.NonFiniteError):
                ls.search(lut, y[None], None, nprobe=5, k=15, kcand=15, impl=impl)


def test_search_one_writes_the_answer_ids() -> None:
    """search_one returns the ids of its rows, written by the kernel (any UTF-8, any length); without set_ids it
    returns None for them; a query with NaN/inf or a squared norm beyond float32 is refused before any search."""
    from vqrec.index.errors import NonFiniteError
    from vqrec.index.ids import IdList

    M, n = 8, 300
    ls, *_ = _scan(M, n, [100, 120, 80], seed=4, terms=False)
    rng = np.random.default_rng(9)
    ys = rng.standard_normal((6, 12)).astype(np.float32)
    lutmat = rng.standard_normal((M, 1, 16)).astype(np.float32)  # lut[m] = y[m] * lutmat[m, 0]
    base = fs.ListScan(M=M, ksub=16, list_rows=ls.list_rows, centroids_t=ls.centroids_t.astype(np.float32),
                       scale=None, add=None, packed=ls.packed, lutmat=lutmat, lut_ystep=1)  # fmt: skip
    for y in ys:
        rows, scores, ids = base.search_one(y, nprobe=2, k=7, kcand=20)
        assert ids is None and len(rows) == len(scores) == 7
    names = [f"item-{i}-" + "ü" * (i % 7) + "z" * (i % 61) for i in range(n)]
    base.set_ids(IdList.from_list(names))
    for y in ys:
        rows, scores, ids = base.search_one(y, nprobe=2, k=7, kcand=20)
        top, _ = base.search(None, y[None], None, nprobe=2, k=7, kcand=20)
        assert rows == top.I[0].tolist() and ids == [names[r] for r in rows]
    for bad in (np.full(12, np.nan, np.float32), np.full(12, 1e19, np.float32)):
        with pytest.raises(NonFiniteError):
            base.search_one(bad, nprobe=2, k=7, kcand=20)
