"""The measures of COVE's report (numpy only): leave-one-out HR@k / NDCG@k with training items excluded, by
exact inner-product search; per-level utilization and perplexity of the codes; and the tree check (every fine
code has exactly one coarse parent)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray


def leave_one_out(
    user_vectors: NDArray[np.float32],
    item_vectors: NDArray[np.float32],
    user_ids: list[str],
    item_ids: list[str],
    seen: dict[str, list[str]],
    heldout: dict[str, str],
    *,
    k: int = 10,
) -> dict[str, Any]:
    """Leave-one-out HR@k and NDCG@k by exact inner-product search, the user's seen items excluded.

    Ties are broken by item order (as index.eval.exact_hit_rate). Users unknown to the model are left
    out (counted); a held-out item unknown to the model is a miss (counted). NDCG@k = 1/log2(rank+2)."""
    urow = {u: r for r, u in enumerate(user_ids)}
    irow = {i: r for r, i in enumerate(item_ids)}
    users = [u for u in heldout if u in urow]
    hits = 0
    ndcg = 0.0
    unknown_items = 0
    for start in range(0, len(users), 1024):
        chunk = users[start : start + 1024]
        s = user_vectors[[urow[u] for u in chunk]] @ item_vectors.T
        for q, u in enumerate(chunk):
            excl = [irow[i] for i in seen.get(u, []) if i in irow]
            s[q, excl] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        for q, u in enumerate(chunk):
            target = irow.get(heldout[u])
            if target is None:
                unknown_items += 1
                continue
            pos = np.flatnonzero(top[q] == target)
            if len(pos):
                hits += 1
                ndcg += 1.0 / math.log2(int(pos[0]) + 2)
    n = len(users)
    return {
        f"hr@{k}": round(hits / n, 4) if n else float("nan"),
        f"ndcg@{k}": round(ndcg / n, 4) if n else float("nan"),
        "users": n,
        "users_unknown": len(heldout) - n,
        "heldout_items_unknown": unknown_items,
        "seen_excluded": True,
        "search": "exact inner product over the enhanced embeddings",
    }


def code_usage(codes: NDArray[np.integer], K: int) -> dict[str, float]:
    counts = np.bincount(codes, minlength=K).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return {
        "codes": int(K),
        "used": int((counts > 0).sum()),
        "utilization": round(float((counts > 0).mean()), 4),
        "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2),
    }


def tree_check(codes: NDArray[np.integer], levels: tuple[int, ...]) -> dict[str, Any]:
    """Do the (n, L) codes form a tree: does every code at level l have exactly one parent at level l+1?"""
    out: dict[str, Any] = {"is_tree": True, "levels": []}
    for lvl in range(codes.shape[1] - 1):
        fine, coarse = codes[:, lvl].astype(np.int64), codes[:, lvl + 1].astype(np.int64)
        pairs = np.unique(fine * levels[lvl + 1] + coarse)
        parents_per_child = np.bincount(pairs // levels[lvl + 1], minlength=levels[lvl])
        children = np.bincount(pairs % levels[lvl + 1], minlength=levels[lvl + 1])
        used_parents = children[children > 0]
        bad = int((parents_per_child > 1).sum())
        out["is_tree"] = out["is_tree"] and bad == 0
        out["levels"].append(
            {
                "from": lvl,
                "to": lvl + 1,
                "codes_with_several_parents": bad,
                "children_per_parent_mean": round(float(used_parents.mean()), 2),
                "children_per_parent_max": int(used_parents.max()),
            }
        )
    return out
