"""Self-test probes: a few queries stored in the manifest at build time with their answers, replayed
after a load (the service's hot reload) to check the artifact answers as it did when it was built.

    manifest["probes"] = {
        "k": 10,
        "similar":   [{"item_id": "...", "ids": [...], "scores": [...]}],     # up to 5 items (non-zero rows)
        "recommend": [{"user_id": "...", "ids": [...], "scores": [...]}],     # up to 5 users, when stored
        "search":    [{"vector": [d floats], "ids": [...], "scores": [...]}], # up to 3, only without users
    }

The answers are deterministic (same code, same data), so ids must match; a swap of two ids whose
stored scores are a near tie (within float rounding) is tolerated. Artifacts built before probes
existed have none: ``run_probes`` then runs a sanity check only (a few queries answer with k results).
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
_RTOL, _ATOL = 1e-4, 1e-5


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
    users (when the index stores users), else ``search`` with the first non-zero rows of ``vectors``."""
    k = min(PROBE_K, max(1, len(index) - 1))
    out: dict[str, Any] = {"k": k, "similar": [], "recommend": [], "search": []}
    if len(index) < 2:
        return out
    item_ids = [index.item_ids[r] for r in _probe_rows(index)]
    if item_ids:
        for iid, r in zip(item_ids, index.similar(item_ids, k), strict=True):
            out["similar"].append({"item_id": iid, **_answer(r)})
    if index.users is not None and index.users.ids:
        uids = list(index.users.ids[:_N_USERS])
        for uid, r in zip(uids, index.recommend(uids, k), strict=True):
            out["recommend"].append({"user_id": uid, **_answer(r)})
    elif vectors is not None and len(vectors):
        x = np.asarray(vectors, dtype=np.float32)
        x = x[np.flatnonzero(x.any(axis=1))[:_N_VECTORS]]
        if len(x):
            for v, r in zip(x, index.search(x, k), strict=True):
                out["search"].append({"vector": [float(f) for f in v], **_answer(r)})
    return out


def _same(got: SearchResult, want: dict[str, Any]) -> str | None:
    """None when ``got`` matches the stored answer, else why not."""
    ids = [str(i) for i in got.ids]
    wids = [str(i) for i in want.get("ids", [])]
    if ids == wids:
        return None
    ws = np.asarray(want.get("scores", []), dtype=np.float64)
    gs = np.asarray(got.scores, dtype=np.float64)
    if len(ids) != len(wids) or len(ws) != len(wids) or not np.allclose(gs, ws, rtol=_RTOL, atol=_ATOL):
        return f"expected ids {wids}, got {ids}"
    # same scores: differing positions are allowed only inside near-ties of the stored scores
    for i in (i for i, (a, b) in enumerate(zip(ids, wids, strict=True)) if a != b):
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(ws) and np.isclose(ws[i], ws[j], rtol=_RTOL, atol=_ATOL)]
        if not near:
            return f"expected ids {wids}, got {ids}"
    return None


def run_probes(index: CompressedIndex) -> dict[str, Any]:
    """Replay the manifest's probes on ``index``: {"probes": n, "passed": n, "mode", "failures": [...]}.

    ``mode`` is "probes" when the manifest has them, "sanity" otherwise (a few queries must answer with
    min(k, n - 1) results and no error). Exceptions from the index are reported as failures, not raised."""
    stored = index.manifest.get("probes")
    failures: list[str] = []
    n = 0
    if isinstance(stored, dict) and any(stored.get(kind) for kind in ("similar", "recommend", "search")):
        k = int(stored.get("k", PROBE_K))
        for kind, key in (("similar", "item_id"), ("recommend", "user_id"), ("search", "vector")):
            for p in stored.get(kind) or []:
                n += 1
                try:
                    if kind == "search":
                        got = index.search(np.asarray([p["vector"]], dtype=np.float32), k)[0]
                    else:
                        got = getattr(index, kind)([p[key]], k)[0]
                    why = _same(got, p)
                except Exception as e:  # a broken candidate must fail the self-test, not the endpoint
                    why = f"{type(e).__name__}: {e}"
                if why is not None:
                    what = "vector" if kind == "search" else repr(p.get(key))
                    failures.append(f"{kind} {what}: {why}")
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
