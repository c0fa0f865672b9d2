"""PQ, OPQ and RQ trainers on faiss (k-means, OPQMatrix, ResidualQuantizer with beam search), and the steps
of a training run: the sample (``training_sample``), the fit (``fit``) and the report (``attach_report``).

Each trainer returns index.Codebooks; ``quantizers.train`` runs the steps for one method, ``auto.train_auto``
for every candidate. Deterministic given cfg.seed on
a given machine (faiss k-means is seeded; the training sample is drawn with numpy's Generator).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import faiss
import numpy as np
from numpy.typing import NDArray

from vqrec.index.codebooks import Codebooks, normalize_rows
from vqrec.index.embeddings import Embeddings
from vqrec.index.errors import InputError
from vqrec.index.progress import progress

from .config import TrainConfig

logger = logging.getLogger(__name__)


def _kmeans(x: NDArray[np.float32], ksub: int, cfg: TrainConfig, seed: int) -> NDArray[np.float32]:
    km = faiss.Kmeans(
        x.shape[1],
        ksub,
        niter=cfg.niter,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=1 << 30,
    )
    km.train(np.ascontiguousarray(x))
    return km.centroids.astype(np.float32)


def _every_point(cp: faiss.ClusteringParameters, seed: int) -> None:
    """faiss clustering parameters as ours: seeded, every training point used, no small-sample warning."""
    cp.seed = seed
    cp.min_points_per_centroid = 1
    cp.max_points_per_centroid = 1 << 30


def train_pq(xt: NDArray[np.float32], cfg: TrainConfig, *, show_progress: bool = True) -> Codebooks:
    """M independent k-means (faiss) on the dsub-dim slices: centroids (M, ksub, dsub).

    The k-means run side by side, one faiss thread each, as many at once as faiss has threads: each is small
    (a few dimensions, at most 256 centroids) and spends much of its time outside its parallel loops, so this
    is faster than one at a time on every thread (measured, PQ32x4 on 100k x 64, 2 cores: 2.1 s vs 3.7 s).
    Each sub-space's k-means has its own seed: the centroids do not depend on the order they finish in."""
    n, d = xt.shape
    dsub = d // cfg.M
    cents = np.empty((cfg.M, cfg.ksub, dsub), np.float32)

    def one(m: int) -> None:
        faiss.omp_set_num_threads(1)  # this worker thread's faiss calls only
        cents[m] = _kmeans(xt[:, m * dsub : (m + 1) * dsub], cfg.ksub, cfg, cfg.seed + m)

    workers = max(1, min(cfg.M, faiss.omp_get_max_threads()))
    with progress(total=cfg.M, desc="train pq", unit="step", disable=not show_progress) as bar:
        with ThreadPoolExecutor(workers) as pool:
            for fut in as_completed([pool.submit(one, m) for m in range(cfg.M)]):
                fut.result()
                bar.update(1)
    return Codebooks(kind="pq", metric=cfg.metric, d=d, M=cfg.M, nbits=cfg.nbits, centroids=cents)


ROTATION_POINTS = 1 << 15  # OPQ's rotation sample (train_opq)


def train_opq(xt: NDArray[np.float32], cfg: TrainConfig, *, show_progress: bool = True) -> Codebooks:
    """faiss OPQMatrix learns an orthogonal rotation R; then PQ on the rotated sample.

    The rotation is learnt on a sample of ROTATION_POINTS (32,768) of the training points, for any nbits (faiss
    takes 256 per codeword: 65,536 for 8-bit codes). Measured (plain codes, recall@10 of 1,000 users; on the 1M
    x 64 recipe over a 200k-item sample, 100k training points; on 100k x 128 over every item, 50k training
    points; 2 cores):
    - OPQ16x8: 1M recipe 65,536 points 14.7 s and 0.7308, 32,768 6.7 s and 0.7302; 100k x 128 all 50,000
      12.4 s and 0.7810, 32,768 8.9 s and 0.7787.
    - OPQ32x4 score-aware (1M recipe): 32,768 points 7.8 s and 0.7570, 65,536 12.1 s and 0.7581.
    - 20 OPQ iterations (opq_niter) instead of 25: 1-1.6 s faster; recall@10 on three sets (1M recipe, 100k x 64
      and 100k x 128; OPQ16x8 and OPQ32x4, plain codes) moved by -0.0042 to +0.0057, -0.0008 on average, the
      run-to-run spread of a retrained codebook. 10 k-means iterations for the first PQ (faiss's niter_pq_0 is
      40) were faster too but lost up to 0.015 on 100k x 128."""
    n, d = xt.shape
    with progress(total=1, desc="train opq rotation", disable=not show_progress) as bar:
        opq = faiss.OPQMatrix(d, cfg.M)
        opq.niter = cfg.opq_niter
        opq.max_train_points = ROTATION_POINTS
        opq.verbose = False
        # the PQ that OPQ alternates with: ours, so it has our nbits, our seed, and no k-means warning spam
        inner = faiss.ProductQuantizer(d, cfg.M, cfg.nbits)
        _every_point(inner.cp, cfg.seed)
        opq.pq = inner
        opq.train(np.ascontiguousarray(xt))
        bar.update(1)
    R = faiss.vector_to_array(opq.A).reshape(d, d).astype(np.float32)
    pq = train_pq(np.ascontiguousarray(xt @ R.T), cfg, show_progress=show_progress)
    return Codebooks(kind="opq", metric=cfg.metric, d=d, M=cfg.M, nbits=cfg.nbits, centroids=pq.centroids, rotation=R)


def train_rq(xt: NDArray[np.float32], cfg: TrainConfig, *, show_progress: bool = True) -> Codebooks:
    """faiss ResidualQuantizer: M stages of ksub codewords in the full space; items are encoded by beam search
    (width cfg.beam_size, index/rq_encode.py).

    Each stage's k-means runs on the residuals of the codes so far: plain k-means (not faiss's default
    progressive-dimension k-means), with the training sample encoded between stages by a beam of
    cfg.train_beam_size (default 1, greedy). Measured on the 1M x 64 recipe (100k training points, RQ16x8,
    recall@10 of 1,000 users over a 200k-item sample, items encoded with beam 8, 2 cores): greedy 7-9 s, recall
    0.834, squared error 0.0524; a training beam of 2: 13.4 s, 0.835, 0.0529; 4: 27.8 s, 0.835, 0.0529; faiss's
    default with a training beam of 8: 249 s, 0.836, 0.0527. On 100k x 128 (seed 1362, 20k training points)
    greedy 0.865, beam 2 0.874, faiss's default 0.868; on ml-100k ALS greedy 0.986, faiss's default 0.959."""
    n, d = xt.shape
    with progress(total=1, desc=f"train rq ({cfg.M} stages)", disable=not show_progress) as bar:
        rq = faiss.ResidualQuantizer(d, cfg.M, cfg.nbits)
        # plain k-means per stage; the cross-product tables are index/rq_encode.py's
        rq.train_type = faiss.ResidualQuantizer.Skip_codebook_tables
        rq.max_beam_size = cfg.train_beam_size
        _every_point(rq.cp, cfg.seed)
        rq.cp.niter = cfg.niter
        rq.verbose = False
        rq.train(np.ascontiguousarray(xt))
        bar.update(1)
    cents = faiss.vector_to_array(rq.codebooks).reshape(cfg.M, cfg.ksub, d).astype(np.float32)
    return Codebooks(
        kind="rq", metric=cfg.metric, d=d, M=cfg.M, nbits=cfg.nbits, centroids=cents, beam_size=cfg.beam_size
    )


TRAINERS = {"pq": train_pq, "opq": train_opq, "rq": train_rq}


def training_sample(
    emb: Embeddings, cfg: TrainConfig, *, has_queries: bool, extra_held: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train rows, held-out query rows), drawn with cfg.seed.

    With a separate query file (users) every item may train. Otherwise items are held out of
    training as report queries only when enough remain for k-means (39 per centroid); on a small
    catalogue all items train and the report says its queries were not held out. ``extra_held``
    more items are held out after the report's (``train auto`` chooses its candidate on them); the
    first ``cfg.eval_queries`` held rows are the report's.
    """
    n = emb.n
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    nq = min(cfg.eval_queries + extra_held, n)
    held = perm[:nq]
    if not has_queries and n - nq >= 39 * cfg.ksub:
        rest = perm[nq:]
    else:
        rest = perm
    train_rows = np.sort(rest[: cfg.max_train_points])
    report_rows = np.sort(held[: cfg.eval_queries])
    if extra_held:
        return train_rows.astype(np.int64), np.concatenate([report_rows, np.sort(held[cfg.eval_queries :])])
    return train_rows.astype(np.int64), report_rows.astype(np.int64)


def fit(
    emb: Embeddings, cfg: TrainConfig, train_rows: NDArray[np.int64], *, show_progress: bool = True, warn: bool = True
) -> Codebooks:
    """Codebooks of cfg.method trained on ``emb.vectors[train_rows]`` (no report); ``cb.report`` holds
    only ``n_train`` and ``train_seconds`` until ``attach_report``."""
    nt = len(train_rows)
    if nt < cfg.ksub:
        raise InputError(
            f"{emb.source}: {nt} training vectors for {cfg.ksub} codewords per codebook "
            f"(nbits={cfg.nbits}); need at least {cfg.ksub}. Lower nbits or add data."
        )
    if nt < 39 * cfg.ksub and warn:
        logger.warning(
            "%d training vectors for %d codewords: k-means wants >= %d (39 per centroid); codebooks may overfit",
            nt,
            cfg.ksub,
            39 * cfg.ksub,
        )
    xt = emb.vectors[train_rows]
    if cfg.metric == "cosine" or cfg.norm_explicit:
        xt = normalize_rows(xt)
        xt = xt[xt.any(axis=1)]
        if len(xt) < cfg.ksub:
            raise InputError(f"{emb.source}: only {len(xt)} non-zero training vectors for {cfg.ksub} codewords.")
    t0 = time.perf_counter()
    cb = TRAINERS[cfg.method](np.ascontiguousarray(xt), cfg, show_progress=show_progress)
    cb.norm_explicit = cfg.norm_explicit
    cb.score_aware = float(cfg.score_aware)
    cb.config = cfg.to_dict()
    cb.report = {"n_train": int(nt), "train_seconds": time.perf_counter() - t0}
    return cb


def report_queries(
    emb: Embeddings,
    cfg: TrainConfig,
    queries: Embeddings | None,
    held: NDArray[np.int64],
    train_rows: NDArray[np.int64],
) -> tuple[NDArray[np.float32], str, bool]:
    """The training report's queries: ``cfg.eval_queries`` rows of the query file drawn with the seed,
    else the held-out items. (vectors, where from, held out of training)."""
    if queries is not None:
        rows = np.random.default_rng(cfg.seed).permutation(queries.n)[: cfg.eval_queries]
        return queries.vectors[np.sort(rows)], "queries file", True
    held = held[: cfg.eval_queries]
    return emb.vectors[held], "items", bool(len(np.intersect1d(held, train_rows)) == 0)


def attach_report(
    cb: Codebooks,
    emb: Embeddings,
    cfg: TrainConfig,
    *,
    xq: NDArray[np.float32],
    queries_source: str,
    held_out: bool,
    show_progress: bool = True,
) -> Codebooks:
    """Replace ``cb.report`` (from ``fit``) by the full training report on queries ``xq``."""
    from .report import training_report

    cb.report = training_report(
        cb,
        emb,
        cfg,
        xq=xq,
        n_train=cb.report["n_train"],
        queries_source=queries_source,
        held_out=held_out,
        train_seconds=cb.report["train_seconds"],
        show_progress=show_progress,
    )
    return cb


def check_inputs(emb: Embeddings, cfg: TrainConfig, queries: Embeddings | None) -> None:
    cfg.check_dim(emb.d)
    if queries is not None and queries.d != emb.d:
        raise InputError(f"{queries.source}: query dimension ({queries.d}) does not match the items ({emb.d}).")
