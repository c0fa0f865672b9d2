"""The partitioned scan: 4-bit fast-scan (``_fastscan.c``) and 8-bit codes per list, with numpy references.

See ``_fastscan.c`` for the layout and the arithmetic. Here:

- ``pack`` / ``unpack_rows``: the packed 4-bit layout (blocks of 32 items, two codes a byte);
- ``ListScan``: one index's arrays for the kernel, ``search`` (batches, threads over query chunks: the GIL is
  released in the kernel) and ``search_one`` (the latency path); a numpy fallback when the kernel is not built;
- ``PackedCodes``: the code table read back from the packed layout;
- the numpy references the tests hold every kernel path to live in ``fastscan_ref.py`` (re-exported here).

``impl`` selects the kernel path: "auto" (AVX2 when the CPU has it), "scalar", "avx2".
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .adc import _KERNEL, ENCODE_CHUNK, TopK, _ptr, run_chunks
from .errors import NonFiniteError
from .fastscan_ref import (  # noqa: F401 (re-exported: the references sit beside what they check)
    BLOCK,
    C8_BLOCK,
    CoarseTable,
    _exact8_ref,
    _exact_keys,
    _key_terms,
    approx_scores_ref,
    block_sums_ref,
    coarse_table,
    exact_scores_ref,
    item_vectors_f32,
    lut_ref,
    pack_ref,
    probe_ref,
    quantize_lut_ref,
    rerank_ref,
    rerank_scores,
    search_ref,
)

Impl = Literal["auto", "scalar", "avx2"]
_IMPLS = {"auto": 0, "scalar": 1, "avx2": 2}


def _bind() -> bool:
    lib = _KERNEL
    if lib is None or not hasattr(lib, "vqrec_fs_search_many"):
        return False
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    sig = {
        "vqrec_fs_has_avx2": (i32, []),
        "vqrec_lists_lut": (None, [p, p, p, i32]),
        "vqrec_fs_quantize_lut": (None, [p, i64, p, p, p, i32]),
        "vqrec_coarse_assign": (i64, [p, i64, i64, p, p, p, i64, p, i32]),
        "vqrec_fs_pack": (None, [p, i64, i64, p]),
        "vqrec_fs_unpack": (None, [p, i64, p, p, i64, p]),
        "vqrec_fs_sums": (None, [p, i64, p, i64, p, i32]),
        "vqrec_fs_search_many": (
            None,
            [i64, p, i64, p, p, p, i64, p, i64, p, p, p, i64, p, p, p, p, i64, i64, p, p, p, p, p, p, p, p, i32],
        ),
        "vqrec_ivf8_search_many": (
            None,
            [i64, p, i64, i64, p, p, i64, p, i64, p, p, p, i64, p, p, p, p, i64, p, p, p, p, p, p, i32],
        ),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return True


_BOUND = _bind()


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps the pages of large temporaries otherwise: measured at
    1M items, 59 -> 47 bytes of RSS per item for a loaded 4-bit index). Called after a load and after the
    one-time set-up of a score's scan. A no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fastscan_available() -> bool:
    return _BOUND


@functools.cache
def has_avx2() -> bool:
    return bool(_BOUND and _KERNEL.vqrec_fs_has_avx2())  # type: ignore[union-attr]


def kernel_paths() -> list[str]:
    """The kernel paths this machine can run (tests compare each with the numpy reference)."""
    if not _BOUND:
        return []
    return ["scalar", "avx2"] if has_avx2() else ["scalar"]


def supports(M: int, nbits: int) -> bool:
    """Codes the 4-bit layout holds: 4-bit codes, an even number of them, at most 256."""
    return nbits == 4 and M % 2 == 0 and 2 <= M <= 256


# ---- layout ----------------------------------------------------------------------------------------
def list_blocks(list_rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """(nlist+1,) first block of each list: every list starts a new block of 32."""
    sizes = np.diff(list_rows)
    return np.concatenate([[0], np.cumsum((sizes + BLOCK - 1) // BLOCK)]).astype(np.int64)


def pack(codes: NDArray[np.uint8], list_rows: NDArray[np.int64]) -> NDArray[np.uint8]:
    """All lists packed, each from a block boundary: (total blocks, 16*M) bytes."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    M = codes.shape[1]
    lb = list_blocks(list_rows)
    out = np.zeros((int(lb[-1]), 16 * M), np.uint8)
    for ll in range(len(list_rows) - 1):
        r0, r1 = int(list_rows[ll]), int(list_rows[ll + 1])
        if r1 <= r0:
            continue
        if _BOUND:
            _KERNEL.vqrec_fs_pack(_ptr(codes[r0:r1]), r1 - r0, M, _ptr(out[lb[ll] : lb[ll + 1]]))  # type: ignore[union-attr]
        else:
            out[lb[ll] : lb[ll + 1]] = pack_ref(codes[r0:r1])
    return out


def unpack_rows(
    packed: NDArray[np.uint8], M: int, list_rows: NDArray[np.int64], rows: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """(len(rows), M) codes of the given rows, read back from the packed layout."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    lists = np.searchsorted(list_rows, rows, side="right") - 1
    j = rows - list_rows[lists]
    blocks = list_blocks(list_rows)[lists] + j // BLOCK
    pos = j % BLOCK
    if _BOUND:
        out = np.empty((len(rows), M), np.uint8)
        blocks, pos = np.ascontiguousarray(blocks), np.ascontiguousarray(pos)
        _KERNEL.vqrec_fs_unpack(_ptr(packed), M, _ptr(blocks), _ptr(pos), len(rows), _ptr(out))  # type: ignore[union-attr]
        return out
    blk = packed[blocks].reshape(len(rows), M // 2, 2, 16)
    byte = blk[np.arange(len(rows)), :, :, (pos % 16)]  # (n, M/2, 2)
    shift = np.where(pos < 16, 0, 4).astype(np.uint8)[:, None, None]
    return ((byte >> shift) & 15).reshape(len(rows), M).astype(np.uint8)


# ---- numpy references ------------------------------------------------------------------------------


def _contig(a: NDArray | None, dtype: type) -> NDArray | None:
    if a is None:
        return None
    return a if a.dtype == dtype and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=dtype)


class PackedCodes:
    """The (n, M) code table read back from the packed 4-bit layout on demand: what an index holds as its
    codes when they are packed (M/2 bytes per item instead of M). Indexing returns uint8 arrays, as the
    table would; ``np.asarray`` unpacks every row (artifact writing, tests)."""

    dtype = np.dtype(np.uint8)
    ndim = 2

    def __init__(self, packed: NDArray[np.uint8], M: int, list_rows: NDArray[np.int64]) -> None:
        self.packed, self.M, self.list_rows = packed, M, list_rows
        self.shape = (int(list_rows[-1]), M)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.packed.nbytes)

    def __getitem__(self, key: object) -> NDArray[np.uint8]:
        n = self.shape[0]
        if isinstance(key, tuple):
            rows_key, rest = key[0], key[1:]
            return self[rows_key][(slice(None), *rest) if not np.isscalar(rows_key) else rest]
        if isinstance(key, (int, np.integer)):
            r = int(key) + n if key < 0 else int(key)
            if not 0 <= r < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return unpack_rows(self.packed, self.M, self.list_rows, np.array([r]))[0]
        rows = np.arange(n)[key] if isinstance(key, slice) else np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        flat = rows.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + n, flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"row out of range for {n} rows")
        return unpack_rows(self.packed, self.M, self.list_rows, flat).reshape(*rows.shape, self.M)

    def __array__(self, dtype: object = None, copy: object = None) -> NDArray:
        full = unpack_rows(self.packed, self.M, self.list_rows, np.arange(self.shape[0]))
        return full if dtype is None else full.astype(dtype)  # type: ignore[call-overload]

    def tolist(self) -> list[list[int]]:
        return np.asarray(self).tolist()


class _Coarse(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("c16", "c8", "c8s", "c8sum")]

    @classmethod
    def of(cls, table: CoarseTable) -> _Coarse:
        """The kernel's view of ``table`` (valid while the table lives)."""
        return cls(*(_ptr(a) for a in (table.c16, table.c8, table.c8s, table.c8sum)))


class _Lists(ctypes.Structure):
    _fields_ = [
        *[(name, ctypes.c_int64) for name in ("M", "ksub", "nlist", "d")],
        *[
            (name, ctypes.c_void_p)
            for name in ("packed", "codes", "list_rows", "list_blocks", "ct", "w", "b", "scale", "add", "lutmat")
        ],
        ("lut_dt", ctypes.c_int64),
        ("lut_ystep", ctypes.c_int64),
        ("vecs", ctypes.c_void_p),
        ("vec_type", ctypes.c_int64),
        ("vec_scale", ctypes.c_void_p),
    ]


_VEC_TYPES = {np.dtype(np.float32): 1, np.dtype(np.float16): 2, np.dtype(np.int8): 3}
RERANK_MODES = {"ip": 0, "cosine": 1, "l2": 2}


def lut_matrix(centroids: NDArray[np.float32], kind: str) -> tuple[NDArray[np.float32], int]:
    """(M, dt, ksub) table and the step of y per sub-quantizer for the kernel's lookup tables:
    pq/opq (M, ksub, dsub) centroids -> (M, dsub, ksub), step dsub; rq (M, ksub, d) -> (M, d, ksub), step 0."""
    mat = np.ascontiguousarray(np.asarray(centroids, np.float32).transpose(0, 2, 1))
    return mat, (0 if kind == "rq" else mat.shape[1])


if _BOUND:
    _f = _KERNEL.vqrec_lists_search  # type: ignore[union-attr]
    _f.restype = ctypes.c_int64
    _f.argtypes = [ctypes.c_void_p, ctypes.c_int64, *[ctypes.c_void_p] * 3, ctypes.c_int64, ctypes.c_void_p,
                   ctypes.c_int64, ctypes.c_int64, *[ctypes.c_void_p] * 3, ctypes.c_int]  # fmt: skip
    _h = _KERNEL.vqrec_lists_search_rr  # type: ignore[union-attr]
    _h.restype = ctypes.c_int64
    _h.argtypes = [*_f.argtypes, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    _g = _KERNEL.vqrec_lists_search_ws  # type: ignore[union-attr]
    _g.restype = ctypes.c_int64
    _g.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


ID_ROOM = 1 << 18  # bytes of a search workspace's id buffer at most


def coarse_assign(
    y: NDArray[np.float32],
    table: CoarseTable,
    w: NDArray[np.float32] | None,
    b: NDArray[np.float32] | None,
    *,
    impl: Impl = "auto",
    threads: int | None = None,
) -> NDArray[np.int64]:
    """The best list of each row of ``y`` (n, d) by the keys <y, c_l> * w_l + b_l over ``table``'s centroids
    (``coarse_table``), found as a query's nprobe 1 finds it (int8 shortlist, exact keys on the float16 rows): the
    build's assignment. Rows in parallel over ``threads``; numpy (probe_ref) without the kernel."""
    y = np.ascontiguousarray(y, np.float32)
    w, b = _contig(w, np.float32), _contig(b, np.float32)
    n, d = y.shape
    out = np.empty(n, np.int64)
    if not _BOUND:
        for i in range(n):
            out[i] = probe_ref(y[i], table, w, b, 1)[0]
        return out
    coarse = _Coarse.of(table)
    nlist = table.nlist

    def run(r0: int, r1: int) -> None:
        rc = _KERNEL.vqrec_coarse_assign(  # type: ignore[union-attr]
            ctypes.addressof(coarse), nlist, d, _ptr(w), _ptr(b), _ptr(y[r0:r1]), r1 - r0, _ptr(out[r0:r1]),
            _IMPLS[impl],
        )  # fmt: skip
        if rc:
            raise MemoryError("coarse assignment: out of memory")

    run_chunks(n, threads, run, chunk=ENCODE_CHUNK)
    return out


class ListScan:
    """The partitioned search of one index under one score: the index's arrays, held (and their addresses
    computed) once, so a query pays for its own arrays only.

    4-bit codes when ``packed`` is given (candidates by the 8-bit table, the best ``kcand`` re-scored with the
    float table), else ``codes`` (n, M) of any width in row order, scored exactly with the float table.
    ``centroids_t`` is (d, nlist); keys of list l are <y, c_l> * w_l + b_l (w, b optional).
    """

    def __init__(
        self,
        *,
        M: int,
        ksub: int,
        list_rows: NDArray[np.int64],
        centroids_t: NDArray[np.float32],
        scale: NDArray[np.float32] | None,
        add: NDArray[np.float32] | None,
        w: NDArray[np.float32] | None = None,
        b: NDArray[np.float32] | None = None,
        packed: NDArray[np.uint8] | None = None,
        codes: NDArray[np.uint8] | None = None,
        lutmat: NDArray[np.float32] | None = None,
        lut_ystep: int = 0,
        vectors: NDArray | None = None,
        vector_scale: NDArray[np.float32] | None = None,
    ) -> None:
        if packed is None and codes is None:
            raise ValueError("ListScan needs packed 4-bit codes or a code table")
        self.M, self.ksub = M, ksub
        self.list_rows = _contig(list_rows, np.int64)
        # float16 and int8 rows in the kernel (keys only order the lists; the int8 key picks a shortlist)
        self.d, self.nlist = centroids_t.shape
        self.coarse = coarse_table(np.asarray(centroids_t, np.float32).T)
        self._coarse = _Coarse.of(self.coarse)
        self.w, self.b = _contig(w, np.float32), _contig(b, np.float32)
        # per-row terms, used in place when float32 and contiguous (e.g. the artifact's item_scale.npy, mapped)
        n = int(self.list_rows[-1])  # type: ignore[index]
        for a in (scale, add):
            if a is not None and len(a) < n:
                raise ValueError(f"per-row terms hold {len(a)} rows, the lists {n}")
        self.scale, self.add = _contig(scale, np.float32), _contig(add, np.float32)
        self.packed = None if packed is None else _contig(packed, np.uint8)
        self.codes = None if codes is None else _contig(codes, np.uint8)
        self.list_blocks = list_blocks(self.list_rows) if packed is not None else None  # type: ignore[arg-type]
        self.lutmat = None if lutmat is None else _contig(lutmat, np.float32)
        self.lut_ystep = lut_ystep
        # item vectors for the exact re-rank in the kernel (a memory map is read in place)
        self.vectors = None
        if vectors is not None and vectors.dtype in _VEC_TYPES and vectors.flags.c_contiguous:
            if vectors.dtype != np.int8 or vector_scale is not None:
                self.vectors = vectors
        self.vector_scale = None if vector_scale is None else _contig(vector_scale, np.float32)
        self._struct = _Lists(
            M, ksub, self.nlist, self.d,
            *(_ptr(a) for a in (self.packed, None if packed is not None else self.codes, self.list_rows,
                                self.list_blocks, None, self.w, self.b, self.scale, self.add,
                                self.lutmat)),
            0 if lutmat is None else lutmat.shape[1], lut_ystep,
            _ptr(self.vectors), 0 if self.vectors is None else _VEC_TYPES[self.vectors.dtype], _ptr(self.vector_scale),
        )  # fmt: skip
        self._struct.ct = ctypes.addressof(self._coarse)
        self._addr = ctypes.addressof(self._struct)
        self._local = threading.local()
        self._ids: Any = None
        self._id_view: tuple[int, int, int, int] | None = None

    @property
    def centroids_t(self) -> NDArray[np.float16]:
        """(d, nlist) float16 centroids, as the kernel holds them for the exact keys."""
        return self.coarse.c16.T

    def _workspace(self, k: int) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.k != k:
            ws = self._local.ws = _Workspace(self.M, self.ksub, self.d, k, self._id_view)
        return ws

    def set_ids(self, ids: Any) -> None:
        """The item ids (an ``IdList`` in row order): ``search_one`` then returns the answer's ids, written by the
        kernel in the same call."""
        view = ids.kernel_view() if _BOUND else None
        self._ids, self._id_view = ids, view
        self._local = threading.local()  # workspaces made before lack the id buffer

    @property
    def rerank_available(self) -> bool:
        return self.vectors is not None

    def lut(self, y: NDArray[np.float32], impl: Impl = "auto") -> NDArray[np.float32]:
        """The kernel's lookup table of one code-space vector (tests compare it with ``lut_ref``)."""
        if self.lutmat is None:
            raise ValueError("this ListScan was made without a lookup-table matrix")
        y = np.ascontiguousarray(y, np.float32).reshape(self.d)
        out = np.empty((self.M, self.ksub), np.float32)
        if _BOUND:
            _KERNEL.vqrec_lists_lut(self._addr, _ptr(y), _ptr(out), _IMPLS[impl])  # type: ignore[union-attr]
            return out
        return lut_ref(y, self.lutmat, self.lut_ystep)

    def _run_workspace(
        self,
        lut: NDArray[np.float32] | None,
        y: NDArray[np.float32],
        alpha: float | None,
        nprobe: int,
        kcand: int,
        k: int,
        code: int,
        rerank: int,
        xr: NDArray[np.float32] | None,
        mode: str,
        ids: bool = False,
    ) -> _Workspace:
        """One query through this thread's workspace (inputs copied to known addresses, one two-argument kernel
        call); the answer is left in the workspace's D / I / scanned, and (``ids``, after ``set_ids``) its ids in
        the workspace's id buffer."""
        ws = self._workspace(k)
        ws.y[:] = y  # (d,) or (1, d)
        if lut is not None:
            ws.lut[0] = lut.reshape(ws.lut.shape[1:])
        if alpha is not None:
            ws.alpha[0] = alpha
        if rerank:
            ws.xr[:] = xr
        key = (lut is None, alpha is None, nprobe, kcand, code, rerank, mode, ids)
        if key != ws.key:  # the header changes only with the settings (numpy scalar writes cost ~0.1 us each)
            h = ws.head
            h[0], h[1], h[3] = nprobe, kcand, code
            h[4] = 0 if lut is None else ws.p_lut
            h[6] = 0 if alpha is None else ws.p_alpha
            h[10], h[11], h[12] = ws.p_xr, rerank, RERANK_MODES[mode]
            h[13] = ws.id_blob if ids else 0  # the kernel writes ids only for a caller that reads them
            ws.key = key
        rc = _KERNEL.vqrec_lists_search_ws(self._addr, ws.p_head)  # type: ignore[union-attr]
        if rc == -2:
            raise NonFiniteError("Query vector contains NaN or inf, or its squared norm overflows float32.")
        if rc:
            raise MemoryError("partitioned search: out of memory")
        return ws

    @property
    def answers_ids(self) -> bool:
        """The kernel is bound and holds the item ids: ``answer_one`` can be used."""
        return _BOUND and self._id_view is not None

    def answer_one(
        self, y: NDArray[np.float32], nprobe: int, k: int, kcand: int, rerank: int
    ) -> tuple[list[int], list[float], list[str]] | None:
        """The latency path of an ip query in one kernel call: ``y`` a C-contiguous float32 (1, d) row, the same
        for the re-rank; ``k``, ``kcand``, ``nprobe`` (<= nlist) and ``rerank`` (> 0 only with item vectors)
        checked by the caller, which also checked ``answers_ids``. -> (rows, scores, ids) best first, or None
        when ``y`` is not finite or its squared norm overflows (nothing searched)."""
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.k != k:
            ws = self._workspace(k)
        ws.y[...] = y
        if rerank:
            ws.xr[...] = y
        key = (True, True, nprobe, kcand, 0, rerank, "ip", True)  # as _run_workspace's for the same call
        if key != ws.key:
            h = ws.head
            h[0], h[1], h[3], h[4], h[6] = nprobe, kcand, 0, 0, 0
            h[10], h[11], h[12], h[13] = ws.p_xr, rerank, RERANK_MODES["ip"], ws.id_blob
            ws.key = key
        rc = _KERNEL.vqrec_lists_search_ws(self._addr, ws.p_head)  # type: ignore[union-attr]
        if rc:
            if rc == -2:
                return None
            raise MemoryError("partitioned search: out of memory")
        n, nb = ws.out.tolist()
        if nb < 0:  # the ids did not fit the workspace's buffer
            rows = ws.I0[:n].tolist()
            return rows, ws.D0[:n].tolist(), self._ids.take(rows)
        return ws.I0[:n].tolist(), ws.D0[:n].tolist(), (str(ws.ids[:nb], "utf-8").split("\n") if n else [])

    def search_one(
        self,
        y: NDArray[np.float32],
        *,
        nprobe: int,
        k: int,
        kcand: int,
        alpha: float | None = None,
        rerank: int = 0,
        xr: NDArray[np.float32] | None = None,
        mode: str = "ip",
    ) -> tuple[list[int], list[float], list[str] | None]:
        """One vector query (the table made in the kernel) -> (rows, scores, ids) best first, without padding: the
        latency path of ``search`` with no arrays made per call besides the answer lists. ``ids`` is None unless
        ``set_ids`` was called (and the kernel is built)."""
        if not _BOUND or (rerank and not self.rerank_available):
            a = None if alpha is None else np.array([alpha], np.float32)
            top, _ = self.search(None, y.reshape(1, -1), a, nprobe=nprobe, k=k, kcand=kcand, rerank=rerank,
                                 xr=None if xr is None else xr.reshape(1, -1), mode=mode)  # fmt: skip
            rows, scores = top.I[0].tolist(), top.D[0].tolist()
            n = len(rows)
            while n and rows[n - 1] < 0:
                n -= 1
            return rows[:n], scores[:n], None
        ws = self._run_workspace(None, y, alpha, min(max(1, nprobe), self.nlist), max(kcand, k), k, 0, rerank, xr,
                                 mode, ids=self._id_view is not None)  # fmt: skip
        n, nb = ws.out.tolist()
        rows, scores = ws.I0.tolist()[:n], ws.D0.tolist()[:n]
        if self._id_view is None or nb < 0:
            return rows, scores, None
        return rows, scores, (str(ws.ids[:nb], "utf-8").split("\n") if n else [])

    def search(
        self,
        luts: NDArray[np.float32] | None,
        ys: NDArray[np.float32],
        alpha: NDArray[np.float32] | None,
        *,
        nprobe: int,
        k: int,
        kcand: int = 0,
        probes: NDArray[np.int64] | None = None,
        impl: Impl = "auto",
        threads: int | None = None,
        rerank: int = 0,
        xr: NDArray[np.float32] | None = None,
        mode: str = "ip",
    ) -> tuple[TopK, NDArray[np.int64]]:
        """Top-k over the nprobe best lists of each query; returns (TopK, items scanned per query).

        ``luts`` (nq, M, ksub) given, or None: computed in the kernel from ``ys`` (needs ``lutmat``).
        ``alpha`` (nq,) per-query factors, or None for 1. ``rerank`` > 0: the best max(rerank, k) are re-scored
        with the stored item vectors against ``xr`` (nq, d input-space queries) under ``mode`` (ip, cosine,
        l2), and the best k of those returned (needs ``rerank_available``)."""
        nq = len(ys)
        if luts is None and self.lutmat is None:
            raise ValueError("luts=None needs a ListScan made with lutmat")
        if rerank and (not self.rerank_available or xr is None):
            raise ValueError("rerank needs item vectors in the ListScan and the input-space queries xr")
        nprobe = max(1, min(int(nprobe), self.nlist))
        kcand = max(kcand, k)
        if not _BOUND:
            if luts is None:
                luts = np.stack([lut_ref(y, self.lutmat, self.lut_ystep) for y in ys])  # type: ignore[arg-type]
            a = np.ones(nq, np.float32) if alpha is None else alpha
            if not rerank:
                return _search_numpy(self, luts, ys, a, nprobe, k, kcand, probes)
            kr = max(rerank, k)
            top, scanned = _search_numpy(self, luts, ys, a, nprobe, kr, max(kcand, kr), probes)
            return rerank_ref(self, top, xr, mode, k), scanned  # type: ignore[arg-type]
        rr_mode = RERANK_MODES[mode]
        code = _IMPLS[impl]
        if nq == 1 and probes is None:  # the latency path: the query copied into a workspace of known address
            a = None if alpha is None else float(np.asarray(alpha).reshape(-1)[0])
            ws = self._run_workspace(luts, ys, a, nprobe, kcand, k, code, rerank, xr, mode)
            return TopK(ws.D.copy(), ws.I.copy()), ws.scanned.copy()
        luts = None if luts is None else _contig(luts, np.float32)
        ys = _contig(ys, np.float32)  # type: ignore[assignment]
        alpha = None if alpha is None else _contig(np.asarray(alpha).reshape(nq), np.float32)
        if probes is not None:
            probes = _contig(probes, np.int64)
            nprobe = probes.shape[1]  # type: ignore[union-attr]
        D = np.empty((nq, k), np.float32)
        I = np.empty((nq, k), np.int64)  # noqa: E741
        scanned = np.zeros(nq, np.int64)
        xr = None if not rerank else _contig(xr, np.float32)
        lp, yp, ap, dp, ip, sp, xp = (_ptr(a) for a in (luts, ys, alpha, D, I, scanned, xr))
        pp = _ptr(probes)
        lut_bytes = self.M * self.ksub * 4
        failed = []

        def run(q0: int, q1: int) -> None:
            if q1 > q0 and _KERNEL.vqrec_lists_search_rr(  # type: ignore[union-attr]
                self._addr, q1 - q0, None if lp is None else lp + q0 * lut_bytes, yp + q0 * self.d * 4,
                None if ap is None else ap + q0 * 4, nprobe, None if pp is None else pp + q0 * nprobe * 8, kcand, k,
                dp + q0 * k * 4, ip + q0 * k * 8, sp + q0 * 8, code, None if xp is None else xp + q0 * self.d * 4,
                rerank, rr_mode,
            ):  # fmt: skip
                failed.append(q0)

        run_chunks(nq, threads, run)
        if failed:
            raise MemoryError("partitioned search: out of memory")
        return TopK(D, I), scanned


class _Workspace:
    """One query's input and output arrays in one buffer, with their addresses computed once; ``id_room`` bytes
    for the answer's ids (``ids``: the id map's kernel view, or None)."""

    def __init__(self, M: int, ksub: int, d: int, k: int, ids: tuple[int, int, int, int] | None = None) -> None:
        # room for k of the longest id, at most ID_ROOM bytes (an answer that does not fit is taken from the id
        # list instead: search_one then returns no ids)
        id_room = 0 if ids is None else min(k * (ids[3] + 1), ID_ROOM)
        sizes = [160, M * ksub * 4, d * 4, 8, k * 4, k * 8, 8, d * 4, id_room]
        offs = np.concatenate([[0], np.cumsum([(s + 63) // 64 * 64 for s in sizes])]).astype(int)
        self.k = k
        self.key: tuple | None = None  # the settings the header holds
        self.buf = np.zeros(int(offs[-1]), np.uint8)
        base = _ptr(self.buf)
        # nprobe, kcand, k, impl, six addresses, xr, rerank, mode, the id map (blob, offsets, flags), the id buffer
        # and its room; out: results, id bytes
        self.head = self.buf[: sizes[0]].view(np.int64)
        self.out = self.head[18:20]  # results, id bytes (written by the kernel)
        self.ids = memoryview(self.buf[offs[8] : offs[8] + id_room])
        self.id_blob = 0 if ids is None else ids[0]  # head[13] when a call wants the ids written
        if ids is not None:
            self.head[13:16] = ids[:3]
            self.head[16:18] = [base + int(offs[8]), id_room]
        self.lut = self.buf[offs[1] : offs[1] + sizes[1]].view(np.float32).reshape(1, M, ksub)
        self.y = self.buf[offs[2] : offs[2] + sizes[2]].view(np.float32).reshape(1, d)
        self.alpha = self.buf[offs[3] : offs[3] + 4].view(np.float32)
        self.D = self.buf[offs[4] : offs[4] + sizes[4]].view(np.float32).reshape(1, k)
        self.I = self.buf[offs[5] : offs[5] + sizes[5]].view(np.int64).reshape(1, k)
        self.D0, self.I0 = self.D[0], self.I[0]
        self.scanned = self.buf[offs[6] : offs[6] + 8].view(np.int64)
        self.xr = self.buf[offs[7] : offs[7] + sizes[7]].view(np.float32).reshape(1, d)
        self.p_xr = base + int(offs[7])
        self.head[2] = k
        self.head[4:10] = [base + int(o) for o in offs[1:7]]
        self.p_head, self.p_lut, self.p_alpha = base, base + int(offs[1]), base + int(offs[3])


def _search_numpy(ls: ListScan, luts, ys, alpha, nprobe, k, kcand, probes):  # type: ignore[no-untyped-def]
    """The kernel's search without the kernel (slow; used only when the C library is not built)."""
    nq = len(luts)
    lr, nlist = ls.list_rows, ls.nlist
    codes = ls.codes if ls.packed is None else unpack_rows(ls.packed, ls.M, lr, np.arange(lr[-1]))
    alpha = np.asarray(alpha, np.float32).reshape(nq)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)  # noqa: E741
    scanned = np.zeros(nq, np.int64)
    for q in range(nq):
        lists = probes[q] if probes is not None else probe_ref(ys[q], ls.coarse, ls.w, ls.b, nprobe)
        lists = lists[(lists >= 0) & (lists < nlist)]
        scanned[q] = int(sum(lr[ll + 1] - lr[ll] for ll in lists))
        if ls.packed is not None:
            top = search_ref(luts[q], codes, lr, lists, float(alpha[q]), ls.scale, ls.add, kcand, k)
        else:
            top = _exact8_ref(luts[q], codes, lr, lists, float(alpha[q]), ls.scale, ls.add, k)
        D[q], I[q] = top.D[0], top.I[0]
    return TopK(D, I), scanned
