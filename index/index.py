"""CompressedIndex: a code table plus everything queries need, searched with ADC.

Scores are higher-is-better everywhere:

    index metric   recommend / search by vector (user->item)    similar (item->item)
    ip             <q, x_hat_i>                                  cos(x_hat_q, x_hat_i)
    cosine         cos(q, x_hat_i)                               cos(x_hat_q, x_hat_i)
    l2             -|q - x_hat_i|^2                              -|x_hat_q - x_hat_i|^2

One code table serves both columns: per-item reconstruction norms |y_hat_i| are computed at build
time, so cosine is ADC(ip) / |y_hat_i| and l2 is 2 * ADC(ip) - |x_hat_i|^2 - |q|^2, applied in the scan.
With norm-explicit codebooks the codes hold unit directions y_hat and x_hat = |x| * y_hat, so ip is
ADC(ip) * |x_i| (``item_scale``); otherwise x_hat = y_hat.

Zero vectors. An item whose input embedding is all zeros (ALS gives them to items with no
interactions) has no cosine direction. Under a cosine score it is never returned as a neighbour, and
item->item for such an item returns an empty result list (no error: it is a known item with no
neighbours). A zero *query vector* under a cosine score is an input error. Under ip such items take
part normally (their reconstruction is whatever the codebook gives them).

Queries by id (a known item, or a user stored as codes) build their lookup table from the stored
codes: by decoding and one BLAS product (``lut_path="decode"``, the default: measured faster), or by
gathering precomputed codeword-pair tables when the index was built with them (``"pairs"``). Both
give the same table up to float rounding; the per-item terms (norms) are precomputed either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from . import fastscan
from .adc import TopK, adc_topk
from .codebooks import Codebooks, normalize_rows
from .errors import (
    ConfigError,
    DimensionMismatchError,
    InputError,
    NonFiniteError,
    UnknownItemError,
    UnknownUserError,
)
from .ids import IdList
from .partition import Partition
from .semantic import SemanticIds

logger = logging.getLogger(__name__)

LutPath = Literal["pairs", "decode"]
_F32_MAX = float(np.finfo(np.float32).max)
MAX_K = 1000
# 4-bit fast-scan: candidates kept by the 8-bit table and re-scored with the float table: k + k/4, at least
# RESCORE_MIN. On the 1M recipe (300 queries, nprobe 3 and 20) 16 candidates for k=10 and 110 for k=100 returned
# the same top-k as 1,000; 12 for k=10 missed one item in 3,000. With a re-rank the re-rank depth is the candidate
# count: the vectors re-score them anyway.
RESCORE_MIN = 16


def _rescore_depth(k: int) -> int:
    return max(k + k // 4, RESCORE_MIN)


def _row_fits(xq: NDArray[np.float32]) -> bool:
    """The (1, d) float32 query's squared norm, summed in float64, is finite and within float32 (so is each
    value): False for NaN, inf or overflow."""
    row = xq[0].astype(np.float64)
    return bool(float(row @ row) <= _F32_MAX)


def _l2_alpha(alpha: NDArray[np.float32] | None, nq: int) -> NDArray[np.float32]:
    """The l2 score's per-query factor: 2<q, x_hat> (alpha None meaning 1)."""
    return np.full(nq, 2, np.float32) if alpha is None else alpha * 2


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 us, a tenth of a 1M-item query's Python
class SearchResult:
    """One query's answer: ``ids`` best first, ``scores`` higher-is-better, same length (<= k)."""

    ids: list[str]
    scores: list[float]
    rows: list[int]


@dataclass
class UserStore:
    """User embeddings for queries by user id: float32 / float16 vectors, or codes of the item codebooks."""

    ids: list[str]
    storage: Literal["float32", "float16", "codes"]
    vectors: NDArray[Any] | None = None  # (nu, d) input space
    codes: NDArray[np.uint8] | None = None  # (nu, M)
    scale: NDArray[np.float32] | None = None  # (nu,) user norms, with codes of norm-explicit codebooks
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rows = {s: i for i, s in enumerate(self.ids)}

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._rows

    def row_of(self, user_id: str) -> int:
        try:
            return self._rows[user_id]
        except KeyError:
            raise UnknownUserError(user_id) from None


@dataclass
class CompressedIndex:
    codebooks: Codebooks
    codes: NDArray[np.uint8]  # (n, M)
    item_ids: list[str]
    recon_norms: NDArray[np.float32]  # (n,) |x_hat| in code space
    zero_items: NDArray[np.bool_]  # (n,) input vector was all zeros
    item_scale: NDArray[np.float32] | None = None  # (n,) |x| for norm-explicit codebooks: x_hat = |x| * y_hat
    pair_tables: NDArray[np.float32] | None = None
    users: UserStore | None = None
    item_vectors: NDArray[Any] | None = None  # (n, d) float16/32 or int8 for exact re-ranking (input space)
    manifest: dict[str, Any] = field(default_factory=dict)
    lut_path: LutPath = "pairs"
    path: str | None = None
    semantic_items: SemanticIds | None = None  # rows aligned with item_ids
    semantic_users: SemanticIds | None = None  # rows aligned with users.ids
    partition: Partition | None = None  # rows stored contiguously per list; None: one list of every row
    item_vectors_scale: NDArray[np.float32] | None = None  # (d,) per-dimension scale of int8 item vectors
    default_rerank: int = 0  # candidates re-ranked when a query does not say (set by tuning: index/tune.py)

    def __post_init__(self) -> None:
        n = len(self.codes)
        if len(self.item_ids) != n or len(self.recon_norms) != n or len(self.zero_items) != n:
            raise ConfigError("codes, item ids, norms and zero flags must have the same length.")
        # ids as one blob + a table of rows (index/ids.py): ~20 B per item where a list and a dict held ~140
        self.item_ids = IdList.from_list(self.item_ids)  # type: ignore[assignment]
        self.recon_norms = np.asarray(self.recon_norms, dtype=np.float32)
        rho = None if self.item_scale is None else np.asarray(self.item_scale, dtype=np.float32)
        if rho is not None and len(rho) != n:
            raise ConfigError("item scale must have one entry per item.")
        self.item_scale = self._ip_scale = rho  # the kernels read it in place (mapped from the artifact, or not)
        self._flat_terms: dict[str, tuple[Any, Any]] = {}
        if self.pair_tables is None and self.lut_path == "pairs":
            self.lut_path = "decode"
        if self.item_vectors is not None and self.item_vectors.dtype == np.int8:
            sc = self.item_vectors_scale
            if sc is None or np.shape(sc) != (self.codebooks.d,):
                raise ConfigError("int8 item vectors need their (d,) per-dimension scale.")
        if self.partition is not None and self.partition.n != n:
            raise ConfigError(f"the partition holds {self.partition.n} rows, the index {n}.")
        cb = self.codebooks
        # the 4-bit layout, when the codes fit it and the kernel is built (else the 8-bit scan per list)
        self._packed: NDArray[np.uint8] | None = None
        self._list_rows = self.partition.list_rows if self.partition is not None else np.array([0, n], dtype=np.int64)
        fits = fastscan.fastscan_available() and fastscan.supports(cb.M, cb.nbits) and n > 0
        if isinstance(self.codes, fastscan.PackedCodes):  # the layout as saved (load_index: codes_fs4.npy)
            if not np.array_equal(self.codes.list_rows, self._list_rows) or self.codes.M != cb.M:
                raise ConfigError("the packed codes' lists do not match the index's partition.")
            if fits:
                self._packed = self.codes.packed  # used in place: memory-mapped pages stay shared between processes
            else:
                self.codes = np.asarray(self.codes)
        elif fits:
            self._packed = fastscan.pack(self.codes, self._list_rows)
            # the packed layout is the only copy held: rows are read back from it on demand (half the bytes)
            self.codes = fastscan.PackedCodes(self._packed, cb.M, self._list_rows)  # type: ignore[assignment]
        self._scans: dict[str, fastscan.ListScan] = {}
        # the latency path of search (one float32 row, no exclusions): partitioned or 4-bit indexes
        self._n = n
        self._one_shape = (1, cb.d)
        self._latency_ok = self.scan_kind != "flat" and n > 0
        self._code_space_differs = cb.metric == "cosine" or cb.rotation is not None
        self._ip_direct = cb.metric == "ip" and not self._code_space_differs
        # (the Embeddings.ids a build reordered, the order): set by build_index, never saved (eval.index_order)
        self._source_order: tuple[Any, NDArray[np.int64]] | None = None

    def packed_layout(self) -> NDArray[np.uint8]:
        """The codes in the 4-bit block layout (what ``codes_fs4.npy`` holds): the layout searched, else packed
        now (the numpy reference when the kernel is not built: the same bytes)."""
        if self._packed is not None:
            return self._packed
        return fastscan.pack(np.asarray(self.codes, dtype=np.uint8), self._list_rows)

    # ---- per-item score terms (derived when a score first needs them, not stored seven times) ---------
    def _score_terms(self, score: str) -> tuple[NDArray[np.float32] | None, NDArray[np.float32] | None]:
        """(scale, add) per row: ip rho (or none); cosine 1/|x_hat| with masked (zero or unreconstructed)
        items at -inf; l2 rho and -|x_hat|^2 (x_hat = rho * y_hat)."""
        if score == "ip":
            return self._ip_scale, None
        norms = self.recon_norms
        if score == "cosine":
            ok = (~np.asarray(self.zero_items)) & (norms > 0)
            scale = np.where(ok, 1.0 / np.where(ok, norms, 1.0), 0.0).astype(np.float32)
            return scale, np.where(ok, 0.0, -np.inf).astype(np.float32)
        return self._ip_scale, (-(self._full_norms().astype(np.float64) ** 2)).astype(np.float32)

    def _full_norms(self) -> NDArray[np.float32]:
        """|x_hat| per row (the reconstruction in input scale)."""
        return self.recon_norms if self._ip_scale is None else (self.recon_norms * self._ip_scale).astype(np.float32)

    def _flat(self, score: str) -> tuple[NDArray[np.float32] | None, NDArray[np.float32] | None]:
        """The score terms of the flat scan, kept once made (it scans every row each query)."""
        t = self._flat_terms.get(score)
        if t is None:
            t = self._flat_terms[score] = self._score_terms(score)
        return t

    # ---- the partitioned / 4-bit scan ----------------------------------------------------------
    @property
    def scan_kind(self) -> str:
        """How queries scan: "fastscan4" (4-bit layout), "lists" (codes per list), "flat" (every row)."""
        if self._packed is not None:
            return "fastscan4"
        return "lists" if self.partition is not None else "flat"

    @property
    def nlist(self) -> int:
        return self.partition.nlist if self.partition is not None else 1

    @property
    def nprobe(self) -> int:
        """Lists a query scans by default."""
        return self.partition.nprobe if self.partition is not None else 1

    def _list_scan(self, score: str) -> fastscan.ListScan:
        ls = self._scans.get(score)
        if ls is None:
            cb = self.codebooks
            if self.partition is not None:
                ct = np.ascontiguousarray(self.partition.centroids.T)
                w, b = self.partition.keys(score, self._full_norms())
            else:
                ct, w, b = np.zeros((cb.d, 1), np.float32), None, None
            scale, add = self._score_terms(score)
            mat, ystep = fastscan.lut_matrix(cb.centroids, cb.kind)
            ls = fastscan.ListScan(
                M=cb.M, ksub=cb.ksub, list_rows=self._list_rows, centroids_t=ct, scale=scale, add=add, w=w, b=b,
                packed=self._packed, codes=None if self._packed is not None else self.codes, lutmat=mat,
                lut_ystep=ystep, vectors=self.item_vectors, vector_scale=self.item_vectors_scale,
            )  # fmt: skip
            ls.set_ids(self.item_ids)  # the latency path's answers carry their ids from the kernel
            self._scans[score] = ls
            fastscan.release_freed_memory()  # the set-up's temporaries (norms, keys) of a large index
        return ls

    def _check_nprobe(self, nprobe: int | None) -> int:
        if nprobe is None:
            return self.nprobe
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
            raise InputError(f"nprobe must be an integer >= 1, got {nprobe!r}.")
        return min(int(nprobe), self.nlist)

    # ---- basic facts -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.codes)

    @property
    def d(self) -> int:
        return self.codebooks.d

    @property
    def metric(self) -> str:
        return self.codebooks.metric

    @property
    def similar_metric(self) -> str:
        """Item->item score: cosine for ip/cosine indexes, l2 for l2 indexes."""
        return "l2" if self.metric == "l2" else "cosine"

    @property
    def version(self) -> str:
        return str(self.manifest.get("index_version", "unsaved"))

    def __repr__(self) -> str:
        cb = self.codebooks
        return (
            f"CompressedIndex(kind={cb.kind}, metric={cb.metric}, n={len(self)}, d={cb.d}, "
            f"M={cb.M}, nbits={cb.nbits}, users={len(self.users.ids) if self.users else 0})"
        )

    def row_of(self, item_id: str) -> int:
        r = self.item_ids.row_of(item_id)  # type: ignore[attr-defined]
        if r < 0:
            raise UnknownItemError(item_id)
        return r

    def rows_of(self, item_ids: Sequence[str], *, strict: bool = True) -> NDArray[np.int64]:
        """Rows of item ids; unknown ids raise UnknownItemError (or are skipped when not strict)."""
        out = []
        find = self.item_ids.row_of  # type: ignore[attr-defined]
        for s in item_ids:
            r = find(s)
            if r < 0:
                if strict:
                    raise UnknownItemError(s)
                continue
            out.append(r)
        return np.asarray(out, dtype=np.int64)

    def item_info(self, item_id: str) -> dict[str, Any]:
        row = self.row_of(item_id)
        return {
            "id": item_id,
            "row": row,
            "codes": self.codes[row].tolist(),
            "norm": float(self.recon_norms[row]),
            "zero_vector": bool(self.zero_items[row]),
        }

    # ---- query preparation -------------------------------------------------------------------
    def check_queries(self, xq: Any) -> NDArray[np.float32]:
        """(nq, d) float32 queries, or an InputError: wrong dimension, NaN/inf, or values (or a squared
        norm) beyond float32, which would turn scores into inf or a cosine into 0/inf."""
        if isinstance(xq, np.ndarray) and xq.dtype == np.float32 and xq.shape == (1, self.d) and _row_fits(xq):
            return xq if xq.flags.c_contiguous else np.ascontiguousarray(xq)  # one float32 row: fewer steps
        try:
            x = np.asarray(xq, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("Query vectors must be a numeric array (nq, d).") from None
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.d:
            got = x.shape[-1] if x.ndim >= 1 else 0
            raise DimensionMismatchError(
                f"Provided query dimension ({got}) does not match the index dimension ({self.d})."
            )
        sq = np.einsum("ij,ij->i", x, x)  # NaN/inf in x, or |x|^2 beyond float32, fail this test
        if not (sq <= _F32_MAX).all():
            if not np.isfinite(x).all():
                raise NonFiniteError("Query vector contains NaN or inf.")
            raise NonFiniteError("Query vector is too large: a value or its squared norm overflows float32.")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _item_luts(self, rows: NDArray[np.int64], codes: NDArray[np.uint8] | None = None) -> NDArray[np.float32]:
        """(n, M, ksub) LUTs of stored reconstructions (items by row, or given codes)."""
        c = self.codes[rows] if codes is None else codes
        if self.lut_path == "pairs" and self.pair_tables is not None:
            return self.codebooks.lut_from_codes(c, self.pair_tables)
        return self.codebooks.lut(self.codebooks.decode(c))

    # ---- the scan ----------------------------------------------------------------------------
    def _scan(
        self,
        lut: NDArray[np.float32] | None,
        alpha: NDArray[np.float32] | None,
        score: str,
        k: int,
        excludes: Sequence[NDArray[np.int64]],
        qnorm2: NDArray[np.float32] | None,
        y: NDArray[np.float32] | None = None,
        nprobe: int | None = None,
    ) -> TopK:
        """ADC top-k with exclusions (over-fetch then filter; exact because results are ranked). ``y`` (code
        space) chooses the lists of a partitioned index."""
        n = len(self)
        kfetch = max(1, min(n, k + max((len(e) for e in excludes), default=0)))
        nq = len(y) if y is not None else len(lut)  # type: ignore[arg-type]
        if self.scan_kind != "flat":
            a = _l2_alpha(alpha, nq) if score == "l2" else alpha
            assert y is not None
            top, _ = self._list_scan(score).search(
                lut, y, a, nprobe=nprobe or self.nprobe, k=kfetch, kcand=_rescore_depth(kfetch)
            )
            if score == "l2":
                top = TopK(top.D - qnorm2[:, None], top.I)  # type: ignore[index]
        elif lut is None or alpha is None:
            raise AssertionError("the flat scan needs a lookup table and alphas")
        else:
            scale, add = self._flat(score)
            if score == "l2":  # 2<q,x_hat> - |x_hat|^2 - |q|^2
                top = adc_topk(lut, self.codes, kfetch, alpha=alpha * 2, scale=scale, bias=add)
                top = TopK(top.D - qnorm2[:, None], top.I)  # type: ignore[index]
            else:
                top = adc_topk(lut, self.codes, kfetch, alpha=alpha, scale=scale, bias=add)
        if not any(len(e) for e in excludes):
            return top
        D = np.full((nq, k), -np.inf, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)  # noqa: E741
        for q, excl in enumerate(excludes):
            rows, dist = top.I[q], top.D[q]
            if len(excl):  # a set beats np.isin on the short candidate lists
                ex = set(excl.tolist())
                sel = [j for j, r in enumerate(rows.tolist()) if r >= 0 and r not in ex][:k]
                rows, dist = rows[sel], dist[sel]
            else:
                rows, dist = rows[:k], dist[:k]
            D[q, : len(rows)] = dist
            I[q, : len(rows)] = rows
        return TopK(D, I)

    def _rerank(self, xq_input: NDArray[np.float32], score: str, top: TopK, k: int) -> TopK:
        """Exact re-scoring of the ADC candidates with the stored float item vectors."""
        assert self.item_vectors is not None
        D = np.full((len(top.I), k), -np.inf, dtype=np.float32)
        I = np.full((len(top.I), k), -1, dtype=np.int64)  # noqa: E741
        for q in range(len(top.I)):
            rows = top.I[q][top.I[q] >= 0]
            xv = fastscan.item_vectors_f32(self.item_vectors, self.item_vectors_scale, rows)
            s = fastscan.rerank_scores(xq_input[q], xv, score)  # float64 sums, as the kernel's re-rank
            order = np.lexsort((rows, -s))[:k]
            D[q, : len(order)] = s[order]
            I[q, : len(order)] = rows[order]
        return TopK(D, I)

    def _finish(self, top: TopK) -> list[SearchResult]:
        """SearchResults of a (nq, k) answer, padding (rows -1, at the end) dropped; every query's ids taken in
        one call."""
        found = top.I >= 0
        counts = found.sum(axis=1).tolist()
        ids = self.item_ids.take(top.I[found])  # type: ignore[attr-defined]
        out, pos = [], 0
        for rows, scores, n in zip(top.I.tolist(), top.D.tolist(), counts, strict=True):
            out.append(SearchResult(ids=ids[pos : pos + n], scores=scores[:n], rows=rows[:n]))
            pos += n
        return out

    def _check_k(self, k: int, rerank: int | None) -> int:
        """The query's rerank (None: the index's default) after checking k and rerank."""
        if rerank is None:
            rerank = self.default_rerank if self.item_vectors is not None else 0
        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}.")
        if rerank < 0 or rerank > 10 * MAX_K:
            raise InputError(f"rerank must be between 0 and {10 * MAX_K}, got {rerank}.")
        if rerank and self.item_vectors is None:
            raise InputError(
                "rerank needs item vectors, and this index was built without them "
                "(build with --item-vectors float16|float32|int8)."
            )
        return rerank

    def _run(
        self,
        lut: NDArray[np.float32] | None,
        alpha: NDArray[np.float32] | None,
        score: str,
        k: int,
        excludes: Sequence[NDArray[np.int64]],
        qnorm2: NDArray[np.float32] | None,
        rerank: int,
        xq_rerank: NDArray[np.float32] | None,
        y: NDArray[np.float32] | None,
        nprobe: int,
    ) -> list[SearchResult]:
        if rerank and self.scan_kind != "flat" and not any(len(e) for e in excludes):
            # the kernel re-ranks (no exclusions to apply between the scan and the re-rank)
            assert xq_rerank is not None and y is not None
            a = _l2_alpha(alpha, len(y)) if score == "l2" else alpha
            top, _ = self._list_scan(score).search(
                lut, y, a, nprobe=nprobe, k=k, kcand=max(rerank, k, RESCORE_MIN), rerank=rerank, xr=xq_rerank,
                mode=score,
            )  # fmt: skip
            return self._finish(top)
        if rerank:
            top = self._scan(lut, alpha, score, max(rerank, k), excludes, qnorm2, y, nprobe)
            assert xq_rerank is not None
            top = self._rerank(xq_rerank, score, top, k)
        else:
            top = self._scan(lut, alpha, score, k, excludes, qnorm2, y, nprobe)
        return self._finish(top)

    # ---- public queries ----------------------------------------------------------------------
    def search(
        self,
        xq: Any,
        k: int = 10,
        *,
        exclude: Sequence[Sequence[str]] | None = None,
        rerank: int | None = None,
        score: str | None = None,
        nprobe: int | None = None,
    ) -> list[SearchResult]:
        """Top-k items for raw query vectors xq (nq, d) under the index metric (or ``score``). ``nprobe``:
        lists scanned in a partitioned index (default: the index's setting)."""
        if exclude is None and score is None and self._latency_ok:
            r = self._latency_one(xq, k, rerank, nprobe)
            if r is not None:
                return [r]
        rerank = self._check_k(k, rerank)
        npr = self._check_nprobe(nprobe)
        score = score or self.metric
        if score not in ("ip", "cosine", "l2"):
            raise InputError(f"score must be one of ['ip', 'cosine', 'l2'], got {score!r}.")
        x = self.check_queries(xq)
        if exclude is None and len(x) == 1 and self.scan_kind != "flat":
            return [self._one_vector(x, k, rerank, score, npr)]
        return self._vector_query(x, k, self._exclude_rows(exclude, len(x)), rerank, score, npr)

    def _latency_one(self, xq: Any, k: Any, rerank: Any, nprobe: Any) -> SearchResult | None:
        """``search`` of one float32 query row under the index metric, in as few Python steps as the checks allow
        (a 1M-item query's scan takes ~15 us: the Python around it is most of the rest), or None when the input
        is anything else (another type, shape or value out of range): the general path then answers or raises."""
        if type(xq) is not np.ndarray or xq.dtype != np.float32 or xq.shape != self._one_shape:
            return None
        if type(k) is not int or not 1 <= k <= MAX_K:
            return None
        if rerank is None:
            rerank = self.default_rerank if self.item_vectors is not None else 0
        elif type(rerank) is not int or not 0 <= rerank <= 10 * MAX_K or (rerank and self.item_vectors is None):
            return None
        if nprobe is None:
            nprobe = self.partition.nprobe if self.partition is not None else 1
        elif type(nprobe) is not int or nprobe < 1:
            return None
        if self._code_space_differs and not _row_fits(xq):  # changed before the kernel sees it: checked first
            return None  # NaN, inf or overflow: the general path says which
        if not xq.flags.c_contiguous:
            xq = np.ascontiguousarray(xq)
        if self._ip_direct:  # ip in the input space: the list scan answers with the ids, one kernel call
            ls = self._scans.get("ip") or self._list_scan("ip")
            if ls.answers_ids:
                kf = k if k <= self._n else self._n
                kcand = (kf if kf > rerank else rerank) if rerank else _rescore_depth(kf)
                r = ls.answer_one(xq, nprobe if nprobe < self.nlist else self.nlist, kf, kcand, rerank)
                return None if r is None else SearchResult(r[2], r[1], r[0])  # None: not finite (general path)
        try:  # else the kernel checks it (NonFiniteError before it searches anything)
            return self._one_vector(xq, k, rerank, self.metric, min(nprobe, self.nlist))
        except NonFiniteError:
            return None  # the general path says which

    def _one_vector(self, x: NDArray[np.float32], k: int, rerank: int, score: str, nprobe: int) -> SearchResult:
        """One query vector on a partitioned or 4-bit index without exclusions: ``_vector_query`` in fewer
        steps (the per-query Python work is a large part of a 1M-item query's time)."""
        if score == "cosine" or self._code_space_differs:
            y, x_rr = self._query_space(x, score)
        else:  # ip / l2 queries on an index with no rotation and no normalization: code space = input space
            y = x_rr = x
        kf = max(1, min(self._n, k))
        kr = max(rerank, kf) if rerank else kf
        rows, scores, ids = self._list_scan(score).search_one(
            y, nprobe=nprobe, k=kf, kcand=kr if rerank else _rescore_depth(kr),
            alpha=2.0 if score == "l2" else None,
            rerank=rerank, xr=x_rr, mode=score,
        )  # fmt: skip
        if score == "l2" and not rerank:  # as _scan: the float32 scores minus |q|^2 (einsum: the same sum)
            scores = (np.asarray(scores, np.float32) - np.einsum("ij,ij->i", y, y)[0]).tolist()
        if ids is None:
            ids = self.item_ids.take(rows)  # type: ignore[attr-defined]
        return SearchResult(ids=ids, scores=scores, rows=rows)

    def _vector_query(
        self,
        x: NDArray[np.float32],
        k: int,
        excludes: list[NDArray[np.int64]],
        rerank: int,
        score: str,
        nprobe: int,
    ) -> list[SearchResult]:
        y, x_for_rerank = self._query_space(x, score)
        qnorm2 = np.einsum("ij,ij->i", y, y) if score == "l2" else None
        if self.scan_kind != "flat":  # the kernel makes the table from y, alpha is 1
            return self._run(None, None, score, k, excludes, qnorm2, rerank, x_for_rerank, y, nprobe)
        lut = self.codebooks.lut(y)
        alpha = np.ones(len(x), np.float32)
        return self._run(lut, alpha, score, k, excludes, qnorm2, rerank, x_for_rerank, y, nprobe)

    def _query_space(self, x: NDArray[np.float32], score: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(code-space queries for the scan, input-space queries for the re-rank) of checked query vectors: unit
        length under a cosine score (a zero vector is an input error), on the sphere for a cosine index."""
        if score == "cosine":
            qn = np.sqrt(np.einsum("ij,ij->i", x, x))
            if (qn == 0).any():
                raise InputError("Query vector has zero norm: it has no cosine direction.")
            x = (x / qn[:, None]).astype(np.float32)
        x_rr = x
        if self.codebooks.metric == "cosine" and score != "cosine":
            x = normalize_rows(x)  # the index lives on the unit sphere
        return self.codebooks.to_code_space(x, normalize=False), x_rr

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        exclude: Sequence[Sequence[str]] | None = None,
        rerank: int | None = None,
        nprobe: int | None = None,
    ) -> list[SearchResult]:
        """Top-k items for stored users (user->item under the index metric)."""
        rerank = self._check_k(k, rerank)
        npr = self._check_nprobe(nprobe)
        if self.users is None:
            raise UnknownUserError(user_ids[0] if user_ids else "")
        urows = np.asarray([self.users.row_of(u) for u in user_ids], dtype=np.int64)
        excludes = self._exclude_rows(exclude, len(urows))
        if self.users.storage != "codes":
            x = np.asarray(self.users.vectors[urows], dtype=np.float32)
            return self._vector_query(x, k, excludes, rerank, self.metric, npr)
        codes = self.users.codes[urows]
        lut = self._item_luts(urows, codes)
        y = self.codebooks.decode(codes)
        rho = np.ones(len(urows), np.float32) if self.users.scale is None else self.users.scale[urows]
        yn = (np.linalg.norm(y, axis=1) * rho).astype(np.float32)  # |q_hat|
        score = self.metric
        alpha = rho.astype(np.float32)
        if score == "cosine":
            alpha = np.where(yn > 0, rho / np.where(yn > 0, yn, 1), 0).astype(np.float32)
        x_rr = self.codebooks.decode_input_space(codes) * rho[:, None]
        return self._run(lut, alpha, score, k, excludes, yn**2, rerank, x_rr, y * rho[:, None], npr)

    def similar(
        self,
        item_ids: Sequence[str],
        k: int = 10,
        *,
        exclude: Sequence[Sequence[str]] | None = None,
        rerank: int | None = None,
        nprobe: int | None = None,
    ) -> list[SearchResult]:
        """Top-k neighbours of stored items (item->item; the query item itself is never returned).

        The query is the item's reconstruction (its LUT from the codes: see ``lut_path``).
        """
        rerank = self._check_k(k, rerank)
        npr = self._check_nprobe(nprobe)
        rows = self.rows_of(item_ids)
        excludes = [np.append(e, r) for e, r in zip(self._exclude_rows(exclude, len(rows)), rows, strict=True)]
        score = self.similar_metric
        lut = self._item_luts(rows)
        yn = self.recon_norms[rows].astype(np.float32)
        if score == "cosine":
            ok = (~self.zero_items[rows]) & (yn > 0)
            alpha = np.where(ok, 1.0 / np.where(ok, yn, 1), 0).astype(np.float32)
        else:  # l2: the query is x_hat_q = rho_q * y_hat_q
            ok = np.ones(len(rows), bool)
            alpha = np.ones(len(rows), np.float32)
            if self.item_scale is not None:
                alpha = self.item_scale[rows].astype(np.float32)
            yn = yn * alpha
        x_rr = None
        if rerank:
            x_rr = fastscan.item_vectors_f32(self.item_vectors, self.item_vectors_scale, rows)  # type: ignore[arg-type]
        y = None if self.scan_kind == "flat" else self.codebooks.decode(self.codes[rows]) * alpha[:, None]
        results = self._run(lut, alpha, score, k, excludes, yn**2, rerank, x_rr, y, npr)
        # a zero item has no cosine direction: no neighbours (documented above)
        return [r if ok[i] else SearchResult([], [], []) for i, r in enumerate(results)]

    def similar_to_vector(
        self,
        xq: Any,
        k: int = 10,
        *,
        exclude: Sequence[Sequence[str]] | None = None,
        rerank: int | None = None,
        nprobe: int | None = None,
    ) -> list[SearchResult]:
        """Items most similar to raw vectors under the item->item score (cosine, or l2)."""
        rerank = self._check_k(k, rerank)
        npr = self._check_nprobe(nprobe)
        x = self.check_queries(xq)
        return self._vector_query(x, k, self._exclude_rows(exclude, len(x)), rerank, self.similar_metric, npr)

    def _exclude_rows(self, exclude: Sequence[Sequence[str]] | None, nq: int) -> list[NDArray[np.int64]]:
        if exclude is None:
            return [np.empty(0, np.int64)] * nq
        if len(exclude) != nq:
            raise InputError(f"exclude has {len(exclude)} lists for {nq} queries.")
        # unknown ids in an exclusion list cannot be returned anyway: ignore them
        return [self.rows_of(e, strict=False) for e in exclude]
