"""``method="auto"``: train the candidate code families and keep the one that finds the most exact
neighbours of held-out queries.

Which codes win depends on the data: norm-explicit codes (the ``ip`` default) win on the synthetic
recipe by a wide margin, while on the small real ml-100k catalogue joint RQ finds more user→item
neighbours (0.99 vs 0.95 at 16 bytes). Rather than fix one choice per metric, auto measures:

1. candidates, cheapest first: pq, opq, rq (pq/opq only when d is divisible by M), each with the
   metric's norm handling first and the other one second (``norm`` set to explicit/joint restricts
   them; cosine has no norm); each pq/opq codebook is scored twice, with nearest-codeword codes and
   with score-aware codes (index/score_aware.py; the same codebooks, another encoding);
2. each candidate is trained on the training sample (restricted to at most ``auto_max_items`` items
   on a large catalogue) and scored by recall@10 against exact search for ``auto_queries`` held-out
   queries — users from the query file when given, else held-out items — disjoint from the
   training report's queries where there are enough;
3. the first candidate within ``auto_tolerance`` of the best recall@10 wins (a cheaper family at
   the same recall encodes and trains faster);
4. the winner is trained on the full sample (reused when the selection already used every item),
   and its report carries every candidate's figures and the reason (``report["auto"]``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqrec.index.codebooks import Codebooks
from vqrec.index.embeddings import Embeddings
from vqrec.index.progress import progress

from .config import TrainConfig
from .fitting import attach_report, check_inputs, fit, report_queries, training_sample

AUTO_SCORE_AWARE = 0.3  # ScaNN's threshold for auto's score-aware candidates (unless the config sets one)


def candidates(cfg: TrainConfig, d: int) -> list[TrainConfig]:
    """The candidate configs of an auto config, cheapest first: each pq/opq codebook is tried with nearest
    codeword codes, then with score-aware codes (the same codebooks, another encoding)."""
    methods = [m for m in ("pq", "opq", "rq") if m == "rq" or d % cfg.M == 0]
    if cfg.metric == "cosine":
        norms = ["auto"]
    elif cfg.norm != "auto":
        norms = [cfg.norm]
    else:
        norms = ["explicit", "joint"] if cfg.metric == "ip" else ["joint", "explicit"]
    t = cfg.score_aware or AUTO_SCORE_AWARE
    out = []
    for m in methods:
        for n in norms:
            out.append(dataclasses.replace(cfg, method=m, norm=n, score_aware=0.0))
            if m != "rq":
                out.append(dataclasses.replace(cfg, method=m, norm=n, score_aware=t))
    return out


def _label(c: TrainConfig) -> str:
    name = c.method if c.metric == "cosine" else f"{c.method}-{'explicit' if c.norm_explicit else 'joint'}"
    return f"{name}+sa" if c.score_aware else name


def _selection_queries(
    emb: Embeddings, cfg: TrainConfig, queries: Embeddings | None, held: NDArray[np.int64]
) -> tuple[NDArray[np.float32], str, bool]:
    """The queries candidates are compared on: (vectors, where from, disjoint from the report's)."""
    if queries is not None:
        perm = np.random.default_rng(cfg.seed).permutation(queries.n)  # the report takes perm[:eval_queries]
        sel = perm[cfg.eval_queries : cfg.eval_queries + cfg.auto_queries]
        if len(sel) >= min(cfg.auto_queries, 50):
            return queries.vectors[np.sort(sel)], "queries file", True
        return queries.vectors[np.sort(perm[: cfg.auto_queries])], "queries file", False
    sel = held[cfg.eval_queries :]
    if len(sel) >= min(cfg.auto_queries, 50):
        return emb.vectors[sel], "items", True
    return emb.vectors[held], "items", False


def train_auto(
    emb: Embeddings, cfg: TrainConfig, *, queries: Embeddings | None = None, show_progress: bool = True
) -> Codebooks:
    check_inputs(emb, cfg, queries)
    cands = candidates(cfg, emb.d)
    has_q = queries is not None
    train_rows, held = training_sample(emb, cands[0], has_queries=has_q, extra_held=0 if has_q else cfg.auto_queries)
    xsel, sel_from, disjoint = _selection_queries(emb, cfg, queries, held)
    if cfg.metric == "cosine":
        xsel = xsel[np.linalg.norm(xsel, axis=1) > 0]
    # the selection database: every item, or a seeded sample of a large catalogue (training rows inside it)
    if emb.n > cfg.auto_max_items:
        db_rows = np.sort(np.random.default_rng(cfg.seed + 2).choice(emb.n, cfg.auto_max_items, replace=False))
        db = Embeddings(ids=[emb.ids[i] for i in db_rows], vectors=emb.vectors[db_rows], source=emb.source)
        pos = np.searchsorted(db_rows, train_rows)
        inside = (pos < len(db_rows)) & (db_rows[np.minimum(pos, len(db_rows) - 1)] == train_rows)
        sel_train = pos[inside].astype(np.int64)
    else:
        db, sel_train = emb, train_rows
    if len(sel_train) > cfg.auto_max_train:
        pick = np.random.default_rng(cfg.seed + 3).choice(len(sel_train), cfg.auto_max_train, replace=False)
        sel_train = sel_train[np.sort(pick)]
    rows: list[dict[str, Any]] = []
    trained: list[Codebooks] = []
    t_all = time.perf_counter()
    with progress(total=len(cands), desc="train auto: candidates", unit="candidate", disable=not show_progress) as bar:
        for i, c in enumerate(cands):
            bar.set_postfix_str(_label(c))
            if c.score_aware and trained and cands[i - 1] == dataclasses.replace(c, score_aware=0.0):
                # the plain candidate's codebooks, encoded score-aware
                cb = dataclasses.replace(trained[-1], score_aware=c.score_aware, _faiss=None, _lut_matrix=None)
                cb.config, cb.report = c.to_dict(), dict(trained[-1].report)
            else:
                cb = fit(db, c, sel_train, show_progress=False, warn=i == 0)
            every_item = dataclasses.replace(c, eval_max_items=max(c.eval_max_items, db.n))
            rep = attach_report(
                cb, db, every_item, xq=xsel, queries_source=sel_from, held_out=disjoint, show_progress=False
            ).report
            rows.append(
                {
                    "candidate": _label(c),
                    "method": c.method,
                    "norm": c.norm,
                    "norm_explicit": c.norm_explicit,
                    "score_aware": c.score_aware,
                    "recall@10": rep["eval"]["recall@10"],
                    "recall@100": rep["eval"]["recall@100"],
                    "relative_mse": rep["relative_mse"],
                    "train_seconds": rep["train_seconds"],
                }
            )
            trained.append(cb)
            bar.update(1)
    best = max(r["recall@10"] for r in rows)
    win = next(i for i, r in enumerate(rows) if r["recall@10"] >= best - cfg.auto_tolerance)
    best_row = max(rows, key=lambda r: r["recall@10"])
    winner = cands[win]
    if rows[win] is best_row:
        reason = f"highest recall@10 ({best:.4f})"
    else:
        reason = (
            f"cheapest within {cfg.auto_tolerance} of the best recall@10 "
            f"({rows[win]['recall@10']:.4f} vs {best_row['candidate']} {best:.4f})"
        )
    selection = {
        "chosen": rows[win]["candidate"],
        "reason": reason,
        "queries": int(len(xsel)),
        "queries_from": sel_from,
        "queries_disjoint_from_report": disjoint,
        "database": int(db.n),
        "tolerance": cfg.auto_tolerance,
        "seconds": round(time.perf_counter() - t_all, 3),
        "candidates": rows,
    }
    if db is emb and len(sel_train) == len(train_rows):  # the candidate trained on exactly the final sample
        cb = trained[win]
        cb.report = {"n_train": len(train_rows), "train_seconds": rows[win]["train_seconds"]}
    else:
        cb = fit(emb, winner, train_rows, show_progress=show_progress, warn=False)
    xq, source, held_out = report_queries(emb, winner, queries, held, train_rows)
    attach_report(cb, emb, winner, xq=xq, queries_source=source, held_out=held_out, show_progress=show_progress)
    cb.report["auto"] = selection
    return cb
