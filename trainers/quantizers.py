"""``train``: codebooks of one method (pq / opq / rq, trainers/fitting.py) or of the best candidate
(``method="auto"``, trainers/auto.py), with the training report attached.

Deterministic given cfg.seed on a given machine (faiss k-means is seeded; the training sample is drawn with
numpy's Generator). The trainers and the steps are re-exported here for the callers that use them.
"""

from __future__ import annotations

from vqrec.index.codebooks import Codebooks
from vqrec.index.embeddings import Embeddings

from .auto import train_auto
from .config import TrainConfig
from .fitting import (
    TRAINERS,
    attach_report,
    check_inputs,
    fit,
    report_queries,
    train_opq,
    train_pq,
    train_rq,
    training_sample,
)

__all__ = [
    "TRAINERS",
    "attach_report",
    "check_inputs",
    "fit",
    "report_queries",
    "train",
    "train_opq",
    "train_pq",
    "train_rq",
    "training_sample",
]


def train(
    emb: Embeddings, cfg: TrainConfig, *, queries: Embeddings | None = None, show_progress: bool = True
) -> Codebooks:
    """Train codebooks of cfg.method on ``emb`` and attach the training report.

    ``queries`` (e.g. user embeddings) are the report's held-out queries; without them a sample of
    items is used (held out of training when the catalogue is large enough). ``method="auto"`` trains
    the candidate code families and keeps the one that finds the most exact neighbours of held-out
    queries (trainers/auto.py).
    """
    if cfg.method == "auto":
        return train_auto(emb, cfg, queries=queries, show_progress=show_progress)
    check_inputs(emb, cfg, queries)
    train_rows, held = training_sample(emb, cfg, has_queries=queries is not None)
    cb = fit(emb, cfg, train_rows, show_progress=show_progress)
    xq, source, held_out = report_queries(emb, cfg, queries, held, train_rows)
    return attach_report(cb, emb, cfg, xq=xq, queries_source=source, held_out=held_out, show_progress=show_progress)
