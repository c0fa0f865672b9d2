"""Self-test probes: a few queries stored in the manifest at build time with their answers, replayed
after a load (the service's hot reload) to check the artifact answers as it did when it was built.

    manifest["probes"] = {
        "k": 10,
        "similar":   [{"item_id": "...", "ids": [...], "scores": [...]}],     # up to 5 items (non-zero rows)
        "recommend": [{"user_id": "...", "ids": [...], "scores": [...]}],     # up to 5 users, when stored
        "search":    [{"vector": [d floats], "ids": [...], "scores": [...]}], # up to 3, only without users
        "rerank":    [{"query": "similar" | "recommend" | "search", "item_id" | "user_id" | "vector": ...,
                       "rerank": 100, "ids": [...], "scores": [...]}],         # only with item vectors
    }

The answers are deterministic (same code, same data), so ids must match; a swap of two ids whose
stored scores are a near tie (within float rounding) is tolerated. Re-rank answers must also match their
scores (rtol 1e-4): they are exact scores of the stored item vectors, so vectors scaled, shuffled, cast or
NaN change them even when the ids survive. With item vectors, ``run_probes`` also checks them as re-rank
reads them: float16/float32/int8 (with a finite per-dimension scale), shape (n_items, d), every value finite
(one probe, "item_vectors": a NaN row that no probe's candidates reach is caught there).

Artifacts built before probes existed have none: ``run_probes`` then runs a sanity check only (a few
queries answer with k results, and the item_vectors check). Artifacts built before re-rank probes have no
``rerank`` list and replay the others as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .index import CompressedIndex, SearchResult

PROBE_K = 10
_N_ITEMS = 5
_N_USERS = 5
_N_VECTORS = 3
_N_RERANK = 3  # queries of each kind replayed with re-rank
PROBE_RERANK = 100  # candidates re-ranked by the re-rank probes
_RTOL, _ATOL = 1e-4, 1e-5
_KEYS = {"similar": "item_id", "recommend": "user_id", "search": "vector"}
_CHUNK = 1 << 20


def _answer(r: SearchResult) -> dict[str, Any]:
    return {"ids": [str(i) for i in r.ids], "scores": [float(s) for s in r.scores]}


def _probe_rows(index: CompressedIndex) -> list[int]:
    n = len(index)
    ok = np.flatnonzero(~np.asarray(index.zero_items, dtype=bool))
    if len(ok) == 0:
        return []
    picks = np.unique(np.linspace(0, len(ok) - 1, num=min(_N_ITEMS, len(ok))).round().astype(int))
    return [int(ok[i]) for i in picks if ok[i] < n]


def make_probes(index: CompressedIndex, vectors: NDArray[np.float32] | None = None) -> dict[str, Any]:
    """Probes for a built index: ``similar`` for evenly spaced non-zero items, ``recommend`` for the first
    users (when the index stores users), else ``search`` with the first non-zero rows of ``vectors``; with
    item vectors, ``rerank``: the first few of those queries again with ``rerank=PROBE_RERANK``."""
    k = min(PROBE_K, max(1, len(index) - 1))
    out: dict[str, Any] = {"k": k, "similar": [], "recommend": [], "search": [], "rerank": []}
    if len(index) < 2:
        return out
    rr = PROBE_RERANK if index.item_vectors is not None else 0
    item_ids = [index.item_ids[r] for r in _probe_rows(index)]
    if item_ids:
        for iid, r in zip(item_ids, index.similar(item_ids, k), strict=True):
            out["similar"].append({"item_id": iid, **_answer(r)})
        if rr:
            some = item_ids[:_N_RERANK]
            for iid, r in zip(some, index.similar(some, k, rerank=rr), strict=True):
                out["rerank"].append({"query": "similar", "item_id": iid, "rerank": rr, **_answer(r)})
    if index.users is not None and index.users.ids:
        uids = list(index.users.ids[:_N_USERS])
        for uid, r in zip(uids, index.recommend(uids, k), strict=True):
            out["recommend"].append({"user_id": uid, **_answer(r)})
        if rr:
            some = uids[:_N_RERANK]
            for uid, r in zip(some, index.recommend(some, k, rerank=rr), strict=True):
                out["rerank"].append({"query": "recommend", "user_id": uid, "rerank": rr, **_answer(r)})
    elif vectors is not None and len(vectors):
        x = np.asarray(vectors, dtype=np.float32)
        x = x[np.flatnonzero(x.any(axis=1))[:_N_VECTORS]]
        if len(x):
            for v, r in zip(x, index.search(x, k), strict=True):
                out["search"].append({"vector": [float(f) for f in v], **_answer(r)})
            if rr:
                some = x[:_N_RERANK]
                for v, r in zip(some, index.search(some, k, rerank=rr), strict=True):
                    out["rerank"].append(
                        {"query": "search", "vector": [float(f) for f in v], "rerank": rr, **_answer(r)}
                    )
    return out


def _same(got: SearchResult, want: dict[str, Any], *, scores: bool = False) -> str | None:
    """None when ``got`` matches the stored answer, else why not. With ``scores`` equal ids are not enough:
    the scores must match too (NaN never does)."""
    ids = [str(i) for i in got.ids]
    wids = [str(i) for i in want.get("ids", [])]
    ws = np.asarray(want.get("scores", []), dtype=np.float64)
    gs = np.asarray(got.scores, dtype=np.float64)
    close = len(gs) == len(ws) and bool(np.allclose(gs, ws, rtol=_RTOL, atol=_ATOL))
    if ids == wids:
        if scores and not close:
            return f"expected scores {ws.tolist()}, got {gs.tolist()}"
        return None
    if len(ids) != len(wids) or len(ws) != len(wids) or not close:
        return f"expected ids {wids}, got {ids}"
    # same scores: differing positions are allowed only inside near-ties of the stored scores
    for i in (i for i, (a, b) in enumerate(zip(ids, wids, strict=True)) if a != b):
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(ws) and np.isclose(ws[i], ws[j], rtol=_RTOL, atol=_ATOL)]
        if not near:
            return f"expected ids {wids}, got {ids}"
    return None


def _replay(index: CompressedIndex, kind: str, p: Any, k: int) -> tuple[str, str | None]:
    """(what was asked, why it failed or None) for one stored probe; never raises."""
    rerank = kind == "rerank"
    query = p.get("query") if rerank and isinstance(p, dict) else kind
    key = _KEYS.get(query) if isinstance(query, str) else None
    if not isinstance(p, dict) or key is None:
        return f"{kind} entry", f"not a probe: {str(p)[:60]}"
    what = f"{'rerank ' if rerank else ''}{query} " + ("vector" if key == "vector" else repr(p.get(key)))
    try:
        opts = {"rerank": int(p["rerank"])} if rerank else {}
        if query == "search":
            got = index.search(np.asarray([p["vector"]], dtype=np.float32), k, **opts)[0]
        else:
            got = getattr(index, query)([p[key]], k, **opts)[0]
        return what, _same(got, p, scores=rerank)
    except Exception as e:  # a broken candidate must fail the self-test, not the endpoint
        return what, f"{type(e).__name__}: {e}"


def check_item_vectors(index: CompressedIndex) -> str | None:
    """Why the item vectors cannot serve re-rank (dtype, shape, a NaN or inf), or None (also without them)."""
    iv = index.item_vectors
    if iv is None:
        return None
    try:
        dtype, shape = np.dtype(iv.dtype), tuple(iv.shape)
        if dtype not in (np.float16, np.float32, np.int8):
            return f"dtype {dtype}, expected float16, float32 or int8"
        if dtype == np.int8:
            sc = index.item_vectors_scale
            if sc is None or np.shape(sc) != (index.d,) or not np.isfinite(sc).all() or (np.asarray(sc) < 0).any():
                return "int8 vectors without a finite, non-negative (d,) scale"
        if shape != (len(index), index.d):
            return f"shape {shape}, expected {(len(index), index.d)}"
        rows = max(1, _CHUNK // max(1, shape[1]))
        for r0 in range(0, shape[0], rows):
            block = np.asarray(iv[r0 : r0 + rows])
            if not np.isfinite(block).all():
                return f"row {r0 + int(np.argmin(np.isfinite(block).all(axis=1)))} holds NaN or inf"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def run_probes(index: CompressedIndex) -> dict[str, Any]:
    """Replay the manifest's probes on ``index``: {"probes": n, "passed": n, "mode", "failures": [...]}.

    ``mode`` is "probes" when the manifest has them, "sanity" otherwise (a few queries must answer with
    min(k, n - 1) results and no error). With item vectors the ``check_item_vectors`` check counts as one
    more probe. Nothing in the index or its manifest makes this raise: every fault is a failure."""
    stored = index.manifest.get("probes")
    failures: list[str] = []
    n = 0
    if index.item_vectors is not None:
        n += 1
        why = check_item_vectors(index)
        if why is not None:
            failures.append(f"item_vectors: {why}")
    kinds = (*_KEYS, "rerank")
    if isinstance(stored, dict) and any(isinstance(stored.get(kind), list) and stored[kind] for kind in kinds):
        k = stored.get("k", PROBE_K)
        k = k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else PROBE_K
        for kind in kinds:
            entries = stored.get(kind)
            for p in entries if isinstance(entries, list) else []:
                n += 1
                what, why = _replay(index, kind, p, k)
                if why is not None:
                    failures.append(f"{what}: {why}")
        return {"mode": "probes", "probes": n, "passed": n - len(failures), "failures": failures}
    # no stored probes (an artifact built before them): answers come back, k of them, no error
    k = min(PROBE_K, max(1, len(index) - 1))
    for r in _probe_rows(index)[:3]:
        n += 1
        try:
            got = index.similar([index.item_ids[r]], k)[0]
            if len(got.ids) != k:
                failures.append(f"similar {index.item_ids[r]!r}: {len(got.ids)} results, expected {k}")
        except Exception as e:
            failures.append(f"similar {index.item_ids[r]!r}: {type(e).__name__}: {e}")
    return {"mode": "sanity", "probes": n, "passed": n - len(failures), "failures": failures}
