"""Quality figures (recall@K, leave-one-out HR@K) of our index and of a faiss index against exact search,
and the timing of the two lookup-table paths of queries by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqrec.index import CompressedIndex, adc_topk
from vqrec.index.build import DEFAULT_MAX_PAIR_TABLE_BYTES
from vqrec.index.eval import hit_rate, recall_at_k

from .data import RERANK, Dataset, K, Truth, drop_self
from .faiss_ref import FaissIndex
from .timing import latencies, threads, time_call


def result_rows(results: Sequence[Any], k: int) -> NDArray[np.int64]:
    out = np.full((len(results), k), -1, dtype=np.int64)
    for q, r in enumerate(results):
        out[q, : len(r.rows)] = r.rows[:k]
    return out


def rerank_ip(xv: NDArray[Any], xq: NDArray[np.float32], cand: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    """Exact inner-product re-ranking of candidate rows (nq, c) with stored item vectors -> (nq, k) rows."""
    out = np.full((len(cand), k), -1, dtype=np.int64)
    for q in range(len(cand)):
        rows = cand[q][cand[q] >= 0]
        s = np.asarray(xv[rows], dtype=np.float32) @ xq[q]
        order = np.lexsort((rows, -s))[:k]
        out[q, : len(order)] = rows[order]
    return out


def quality_ours(index: CompressedIndex, ds: Dataset, truth: Truth) -> dict[str, Any]:
    xq = ds.users.vectors
    out: dict[str, Any] = {
        "recall_u2i": recall_at_k(result_rows(index.search(xq, K), K), truth.u2i, K),
        "recall_u2i_rerank": recall_at_k(result_rows(index.search(xq, K, rerank=RERANK), K), truth.u2i, K),
    }
    found = []
    for i0 in range(0, len(truth.i2i_rows), 256):
        ids = [index.item_ids[r] for r in truth.i2i_rows[i0 : i0 + 256]]
        found.append(result_rows(index.similar(ids, K), K))
    out["recall_i2i"] = recall_at_k(np.concatenate(found), truth.i2i, K)
    out["hr"] = out["hr_rerank"] = None
    if ds.seen is not None and ds.heldout is not None:
        out["hr"] = hit_rate(index, ds.seen, ds.heldout, k=K)
        out["hr_rerank"] = hit_rate(index, ds.seen, ds.heldout, k=K, rerank=RERANK)
    return out


def faiss_hit_rate(
    fx: FaissIndex, ds: Dataset, xv: NDArray[Any], *, k: int = K, rerank: int = 0, batch: int = 256
) -> float:
    """Leave-one-out HR@k of a faiss index, seen items excluded (over-fetch then filter, as ours does)."""
    assert ds.seen is not None and ds.heldout is not None
    known = set(ds.users.ids)
    users = [u for u in ds.heldout if u in known]
    item_row = {s: i for i, s in enumerate(ds.items.ids)}
    hits = 0
    for i0 in range(0, len(users), batch):
        chunk = users[i0 : i0 + batch]
        xq = ds.users.vectors[[ds.users.row_of(u) for u in chunk]]
        seen = [np.asarray([item_row[s] for s in ds.seen.get(u, []) if s in item_row], np.int64) for u in chunk]
        want = max(rerank, k)
        kf = min(ds.items.n, want + max(len(s) for s in seen))
        I = fx.search(xq, kf)  # noqa: E741
        cand = np.full((len(chunk), want), -1, dtype=np.int64)
        for q, s in enumerate(seen):
            rows = I[q][(I[q] >= 0) & ~np.isin(I[q], s)][:want]
            cand[q, : len(rows)] = rows
        top = rerank_ip(xv, xq, cand, k) if rerank else cand[:, :k]
        target = [item_row.get(ds.heldout[u], -2) for u in chunk]
        hits += sum(int(t in top[q]) for q, t in enumerate(target))
    return hits / max(1, len(users))


def quality_faiss(fx: FaissIndex, ds: Dataset, truth: Truth, xv: NDArray[Any]) -> dict[str, Any]:
    """The same figures for a faiss index; item->item is an ip search with the item's reconstruction
    (faiss has no per-item 1/|x_hat| term, so it cannot rank by cosine over a compressed ip index)."""
    xq = ds.users.vectors
    xr = fx.reconstruct(truth.i2i_rows)
    I = fx.search(xr, K + 1)  # noqa: E741
    found = np.stack([drop_self(row, r, K) for row, r in zip(I, truth.i2i_rows, strict=True)])
    out: dict[str, Any] = {
        "recall_u2i": recall_at_k(fx.search(xq, K), truth.u2i, K),
        "recall_u2i_rerank": recall_at_k(rerank_ip(xv, xq, fx.search(xq, RERANK), K), truth.u2i, K),
        "recall_i2i": recall_at_k(found, truth.i2i, K),
        "hr": None,
        "hr_rerank": None,
    }
    if ds.seen is not None and ds.heldout is not None:
        out["hr"] = faiss_hit_rate(fx, ds, xv)
        out["hr_rerank"] = faiss_hit_rate(fx, ds, xv, rerank=RERANK)
    return out


def scan_speed(index: CompressedIndex, xq: NDArray[np.float32], n_single: int) -> dict[str, float]:
    """The C kernel alone (``adc_topk`` on precomputed LUTs, user->item ip scores): batched QPS (2 threads)
    and single-query p50 (1 thread), i.e. ``CompressedIndex.search`` without its Python and LUT work."""
    cb = index.codebooks
    lut = cb.lut(cb.to_code_space(xq, normalize=False))  # (nq, M, ksub)
    scale = index.item_scale if cb.norm_explicit else None
    with threads(2):
        t = time_call(lambda: adc_topk(lut, index.codes, K, scale=scale, threads=2))
    n1 = min(n_single, len(xq))
    lat = latencies(lambda i: adc_topk(lut[i : i + 1], index.codes, K, scale=scale, threads=1), n1)
    return {"scan_qps_batch": len(xq) / t, "scan_p50_ms": float(np.percentile(lat, 50) * 1e3)}


def lut_paths(index: CompressedIndex, rows: NDArray[np.int64], *, n_single: int = 200) -> dict[str, Any]:
    """Time ``index._item_luts`` (single rows and one batch) and end-to-end ``index.similar`` latency with
    the codeword-pair tables ("pairs", opt-in: build_index(pair_tables=True)) and with decode-then-LUT
    ("decode", the default), 1 thread. The tables are attached for the measurement and removed after,
    exactly as build_index would store them (only when they fit in its 64 MiB limit)."""
    cb = index.codebooks
    fits = cb.pair_tables_bytes() <= DEFAULT_MAX_PAIR_TABLE_BYTES
    out: dict[str, Any] = {
        "pair_tables_stored": fits,
        "pair_tables_bytes": cb.pair_tables_bytes(),
        "pair_tables_limit_bytes": DEFAULT_MAX_PAIR_TABLE_BYTES,
        "default_lut_path": index.lut_path,
        "batch": len(rows),
        "n_single": min(n_single, len(rows)),
    }
    saved_tables = index.pair_tables
    if saved_tables is None and fits:
        index.pair_tables = cb.pair_tables()
    saved = index.lut_path
    ids = [index.item_ids[r] for r in rows]
    luts = {}
    try:
        with threads(1):
            for path in ("pairs", "decode"):
                if path == "pairs" and index.pair_tables is None:
                    out[path] = None
                    continue
                index.lut_path = path
                luts[path] = index._item_luts(rows)
                single = latencies(lambda i: index._item_luts(rows[i : i + 1]), out["n_single"])
                batch_s = time_call(lambda: index._item_luts(rows))
                sim = latencies(lambda i, ids=ids: index.similar([ids[i]], K), out["n_single"])
                out[path] = {
                    "single_us": float(np.median(single) * 1e6),
                    "batch_us_per_query": batch_s / len(rows) * 1e6,
                    "similar_p50_us": float(np.percentile(sim, 50) * 1e6),
                    "similar_p99_us": float(np.percentile(sim, 99) * 1e6),
                }
    finally:
        index.lut_path = saved
        index.pair_tables = saved_tables
    if out.get("pairs") is not None:
        out["max_abs_diff"] = float(np.abs(luts["pairs"] - luts["decode"]).max())
        for what in ("single_us", "batch_us_per_query", "similar_p50_us"):
            faster = "pairs" if out["pairs"][what] < out["decode"][what] else "decode"
            out[f"faster_{what}"] = faster
            out[f"speedup_{what}"] = max(out["pairs"][what], out["decode"][what]) / min(
                out["pairs"][what], out["decode"][what]
            )
    return out
