"""The training report written into every codebook artifact."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqrec.index.build import build_index
from vqrec.index.codebooks import Codebooks
from vqrec.index.embeddings import Embeddings
from vqrec.index.eval import codebook_usage, recall_at_k, reconstruction_mse
from vqrec.index.exact import exact_search

from .config import TrainConfig


def training_report(
    cb: Codebooks,
    emb: Embeddings,
    cfg: TrainConfig,
    *,
    xq: NDArray[np.float32],
    n_train: int,
    queries_source: str,
    held_out: bool,
    train_seconds: float,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Reconstruction MSE, recall@10/100 of ADC search vs exact search for held-out queries,
    codebook utilization and perplexity per (sub)codebook, and time taken."""
    rng = np.random.default_rng(cfg.seed + 1)
    n = emb.n
    db_rows = np.arange(n) if n <= cfg.eval_max_items else np.sort(rng.choice(n, cfg.eval_max_items, replace=False))
    db = Embeddings(ids=[emb.ids[i] for i in db_rows], vectors=emb.vectors[db_rows], source=emb.source)
    # the codebook's own quality: every item scanned (no partition), rows in db order
    index = build_index(cb, db, show_progress=show_progress, max_pair_table_bytes=0, nlist=0)
    if cb.metric == "cosine":
        xq = xq[np.linalg.norm(xq, axis=1) > 0]
    kmax = min(100, len(db_rows))
    _, truth = exact_search(db.vectors, xq, kmax, cb.metric)
    res = index.search(xq, kmax)
    found = np.full((len(xq), kmax), -1, np.int64)
    for q, r in enumerate(res):
        found[q, : len(r.rows)] = r.rows
    return {
        "n_train": int(n_train),
        "n_items": int(n),
        "train_seconds": round(train_seconds, 3),
        **reconstruction_mse(cb, db.vectors, index.codes),
        "eval": {
            "queries": int(len(xq)),
            "queries_from": queries_source,
            "queries_held_out_of_training": held_out,
            "database": int(len(db_rows)),
            "recall@10": round(recall_at_k(found, truth, 10), 4),
            "recall@100": round(recall_at_k(found, truth, kmax), 4),
        },
        "usage": codebook_usage(index.codes, cb.ksub),
    }
