"""Search effort chosen for the user: a sweep of (nprobe, rerank) on held-out queries at build time.

``tune_search`` measures recall@k against exact search and the batch QPS of every setting on a grid, and picks
the fastest setting whose recall reaches the target (with a margin of one standard error, so the choice holds
on other queries from the same distribution); when none does, the most accurate one, and says so. The curve
and the choice go into the manifest (``search`` section); the index then scans ``nprobe`` lists and
re-ranks ``rerank`` candidates by default (a request may set either).

Without item vectors only codes-only settings exist; ``target_recall=None`` then picks the fewest lists within
0.01 of the best codes-only recall (the plateau of the curve). With a target, each re-rank depth's fewest lists
that reach it compete on measured QPS.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .exact import ExactIndex
from .index import CompressedIndex

NPROBE_GRID = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800, 1200, 2000)
RERANK_GRID = (0, 20, 50, 100, 200)
DEFAULT_TARGET = 0.95
PLATEAU = 0.01
# a step of the sweep that gains less recall than this ends it (500 queries: 5 of 5,000 neighbours, a sixth of the
# standard error). On the 1M recipe's RQ16 index the curve creeps up by 0.0006 from nprobe 300 to 500 and on to
# 1,200, where those steps took 4.4 of the sweep's 9 s
FLAT = 0.001
# without a target (codes only: the cheapest setting within PLATEAU of the best recall), a step gaining less than a
# quarter of PLATEAU ends the sweep: the recall still to come is then a fraction of PLATEAU. On the 1M recipe's
# RQ16x8 index the steps after nprobe 200 gained 0.0016, 0.0010 and 0 and took ~1.6 s of the sweep's 4.4 s; the
# choice (nprobe 80) is the same
PLATEAU_FLAT = PLATEAU / 4


def _recall(found: list[Any], truth: NDArray[np.int64], k: int) -> float:
    hits = [len(set(r.rows[:k]) & set(t[:k].tolist())) / k for r, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def tune_search(
    index: CompressedIndex,
    xb: NDArray[np.float32],
    queries: NDArray[np.float32],
    *,
    target_recall: float | None = DEFAULT_TARGET,
    k: int = 10,
    query_source: str = "queries",
    order: NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    """Sweep (nprobe, rerank) for ``queries`` (input space) on ``index`` whose items are ``xb`` in the index's
    row order, or in input order with ``order`` (index row j holds input row order[j]); returns the manifest's
    ``search`` section and sets the index's defaults to the choice."""
    if index.partition is None:
        raise ConfigError("tuning chooses nprobe: it needs a partitioned index (--nlist).")
    if target_recall is not None and not 0 < target_recall <= 1:
        raise ConfigError(f"target recall must be in (0, 1], got {target_recall}.")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = ExactIndex(xb, index.metric).search(q, k)
    if order is not None:  # input rows -> index rows
        inv = np.empty(len(order), np.int64)
        inv[order] = np.arange(len(order))
        truth = np.where(truth >= 0, inv[np.maximum(truth, 0)], -1)
    nlist = index.nlist
    flat = FLAT if target_recall is not None else PLATEAU_FLAT
    grid = sorted({p for p in NPROBE_GRID if p <= nlist} | {nlist})
    reranks = RERANK_GRID if index.item_vectors is not None else (0,)
    curve: list[dict[str, Any]] = []
    for rr in reranks:
        best_here = -1.0
        index.search(q[:1], k, nprobe=1, rerank=rr)  # the score's one-time set-up, outside the timings
        for p in grid:
            t0 = time.perf_counter()  # one timed pass gives both the answers and the QPS
            res = index.search(q, k, nprobe=p, rerank=rr)
            dt = time.perf_counter() - t0
            r = _recall(res, truth, k)
            curve.append({"nprobe": p, "rerank": rr, "recall": round(r, 4), "qps": round(len(q) / max(dt, 1e-9), 1)})
            if r >= 1.0 or (best_here >= 0 and r - best_here < flat and p >= 8):
                break  # the curve is flat from here: more lists cost time and find next to nothing
            best_here = max(best_here, r)
    chosen, met, rule = _choose(curve, target_recall, len(q) * k)
    index.partition.nprobe = int(chosen["nprobe"])  # type: ignore[union-attr]
    index.default_rerank = int(chosen["rerank"])
    return {
        "k": k,
        "queries": len(q),
        "query_source": query_source,
        "target_recall": target_recall,
        "rule": rule,
        "met": met,
        "nprobe": int(chosen["nprobe"]),
        "rerank": int(chosen["rerank"]),
        "recall": chosen["recall"],
        "qps": chosen["qps"],
        "curve": curve,
    }


def _choose(curve: list[dict[str, Any]], target: float | None, trials: int) -> tuple[dict[str, Any], bool, str]:
    if target is None:
        codes = [c for c in curve if c["rerank"] == 0]
        top = max(c["recall"] for c in codes)
        ok = [c for c in codes if c["recall"] >= top - PLATEAU]
        # the fewest lists: a scan's work grows with nprobe, and one timed pass each is too noisy to rank
        # neighbours (1M recipe, PQ32x4: nprobe 1 measured 15,758 QPS, nprobe 2 57,288; picking by QPS, the same
        # build defaulted to recall 0.7285 in one run and 0.7345 in another)
        return (
            min(ok, key=lambda c: c["nprobe"]),
            True,
            f"codes only: fewest lists within {PLATEAU} of the best recall {top}",
        )
    se = math.sqrt(max(target * (1 - target), 1e-4) / max(trials, 1))
    ok = [c for c in curve if c["recall"] >= target + se]
    if ok:  # each re-rank depth's fewest lists, then the fastest of those (depths differ in kind: timed)
        fewest = [
            min((c for c in ok if c["rerank"] == r), key=lambda c: c["nprobe"]) for r in {c["rerank"] for c in ok}
        ]
        return max(fewest, key=lambda c: c["qps"]), True, f"fastest with recall >= target + 1 s.e. ({se:.4f})"
    best = max(curve, key=lambda c: (c["recall"], -c["rerank"], -c["nprobe"]))
    return best, False, "no setting reached the target: the most accurate one"
