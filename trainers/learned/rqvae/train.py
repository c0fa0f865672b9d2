"""RQ-VAE / CoST training (torch): the model of ``model`` with the settings of ``config``.

Each level is initialised by k-means (faiss) on the first batch's residuals; after every epoch, a code that
fewer than ``dead_code_threshold`` points of a data sample choose is reset to a residual sampled at its level.
Deterministic for a seed: the model is built under a seeded generator, batches and resets draw from
their own generator, and the checkpoint holds all of it (weights, EMA buffers, optimizer, generators,
epoch, reset counts, the "k-means done" flag), so a resumed run equals an uninterrupted one.

The trained weights are written as a tokenizer artifact (index.semantic.Tokenizer, numpy), which
``vqrec build --semantic-ids`` uses to give every item its semantic id without torch.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from vqrec.index.embeddings import Embeddings
from vqrec.index.errors import ConfigError
from vqrec.index.progress import progress
from vqrec.index.semantic import Tokenizer, assign_suffixes, semantic_report

from .._torch import require_torch
from .config import RQVAEConfig
from .model import RQVAE, info_nce, sq_err

torch = require_torch()

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


@dataclass
class TrainState:
    model: Any
    optimizer: Any
    gen: Any  # torch.Generator: batch order and dead-code samples
    epoch: int = 0
    step: int = 0
    kmeans_done: bool = False
    resets: list[int] = dataclasses.field(default_factory=list)  # codes reset per level, summed
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def checkpoint(self, cfg: RQVAEConfig) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "version": CHECKPOINT_VERSION,
                "config": cfg.to_dict(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.gen.get_state(),
                "epoch": self.epoch,
                "step": self.step,
                "kmeans_done": self.kmeans_done,
                "resets": self.resets,
                "history": self.history,
            },
            buf,
        )
        return buf.getvalue()


def _new_state(d: int, cfg: RQVAEConfig) -> TrainState:
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = RQVAE(d, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    return TrainState(
        model=model,
        optimizer=opt,
        gen=gen,
        resets=[0] * cfg.levels,
    )


def read_checkpoint(data: bytes | str) -> dict[str, Any]:
    """The checkpoint dict from bytes, a checkpoint.pt path, or a tokenizer artifact directory."""
    if isinstance(data, str):
        path = os.path.join(data, "checkpoint.pt") if os.path.isdir(data) else data
        if not os.path.exists(path):
            raise ConfigError(f"checkpoint not found: {path}")
        with open(path, "rb") as f:
            data = f.read()
    try:
        ck = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # torch raises several kinds for a bad file; weights_only refuses code in pickles
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot read checkpoint: not an RQ-VAE checkpoint written by vqrec ({first})") from None
    if not isinstance(ck, dict) or ck.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"not an RQ-VAE checkpoint of version {CHECKPOINT_VERSION}.")
    return ck


def load_checkpoint(data: bytes | str, d: int, cfg: RQVAEConfig) -> TrainState:
    """Rebuild a TrainState from checkpoint bytes (or a path / tokenizer artifact directory)."""
    ck = read_checkpoint(data)
    old = RQVAEConfig.from_dict({**ck["config"], "hidden": tuple(ck["config"]["hidden"])})
    shape_keys = ("levels", "codebook_size", "latent_dim", "hidden", "ema", "loss", "input_norm", "latent_norm")
    changed = [k for k in shape_keys if getattr(old, k) != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"cannot resume: the checkpoint was trained with different {changed}.")
    st = _new_state(d, cfg)
    try:
        st.model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise ConfigError(f"checkpoint does not fit {d}-d inputs: {e}") from None
    st.optimizer.load_state_dict(ck["optimizer"])
    for g in st.optimizer.param_groups:  # a resumed run may change the learning rate
        g["lr"] = cfg.lr
        g["weight_decay"] = cfg.weight_decay
    st.gen.set_state(ck["generator"])
    st.epoch, st.step, st.kmeans_done = int(ck["epoch"]), int(ck["step"]), bool(ck["kmeans_done"])
    st.resets, st.history = list(ck["resets"]), list(ck["history"])
    return st


@torch.no_grad()
def _kmeans_init(st: TrainState, x: Any, cfg: RQVAEConfig) -> None:
    """Initialise each level by k-means on the first batch's residuals at that level."""
    model = st.model
    order = torch.randperm(len(x), generator=st.gen)[: cfg.kmeans_init_points]
    residual = model.embed(x[order])
    for lvl in range(cfg.levels):
        r = np.ascontiguousarray(residual.numpy(), dtype=np.float32)
        km = faiss.Kmeans(r.shape[1], cfg.codebook_size, niter=20, seed=cfg.seed + lvl, verbose=False)
        km.cp.min_points_per_centroid = 1  # a small first batch is fine: dead-code reset follows
        km.train(r)
        cent = torch.from_numpy(km.centroids.copy())
        model.rq.codebooks[lvl].copy_(cent)
        if cfg.ema:
            model.rq.ema_sum[lvl].copy_(cent)
            model.rq.ema_count[lvl].fill_(1.0)
        idx = torch.argmin(torch.cdist(residual, cent), dim=1)
        residual = residual - cent[idx]
    st.kmeans_done = True


@torch.no_grad()
def reset_dead_codes(st: TrainState, x: Any, cfg: RQVAEConfig, *, rounds: int = 3) -> list[int]:
    """Replace starved codes; returns how many were reset per level.

    Usage is counted on a fresh assignment of a sample of the inputs (up to ``kmeans_init_points``) with
    the current weights: a code that fewer than ``dead_code_threshold`` sample points choose gets the
    residual of a random sample point at its level. Levels go in order (later levels see the earlier
    resets), and a level is re-checked up to ``rounds`` times, since a reset code can take every point
    of another one.
    """
    model = st.model
    out = [0] * cfg.levels
    if cfg.dead_code_threshold <= 0:
        return out
    sample = torch.randperm(len(x), generator=st.gen)[: max(cfg.kmeans_init_points, cfg.codebook_size)]
    residual = model.embed(x[sample])
    for lvl in range(cfg.levels):
        c = model.rq.codebooks[lvl]
        for _ in range(rounds):
            idx = torch.argmin((c * c).sum(1)[None, :] - 2.0 * residual @ c.T, dim=1)
            dead = torch.nonzero(torch.bincount(idx, minlength=cfg.codebook_size) < cfg.dead_code_threshold).flatten()
            if not len(dead):
                break
            pick = torch.randperm(len(residual), generator=st.gen)[: len(dead)]
            dead = dead[: len(pick)]
            c[dead] = residual[pick]
            if cfg.ema:
                model.rq.ema_sum[lvl][dead] = residual[pick]
                model.rq.ema_count[lvl][dead] = 1.0
            else:  # fresh Adam moments for the replaced rows
                state = st.optimizer.state.get(model.rq.codebooks, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key][lvl, dead] = 0.0
            out[lvl] += len(dead)
        idx = torch.argmin((c * c).sum(1)[None, :] - 2.0 * residual @ c.T, dim=1)
        residual = residual - c[idx]
    return out


def _prepare(x: np.ndarray, input_norm: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if input_norm == "l2":
        n = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(n > 0, n, 1.0).astype(np.float32)
    return np.ascontiguousarray(x)


def train_rqvae(
    emb: Embeddings,
    cfg: RQVAEConfig,
    *,
    resume: bytes | str | None = None,
    show_progress: bool = True,
    stop_after_epochs: int | None = None,
) -> tuple[Tokenizer, bytes]:
    """Train (or resume) an RQ-VAE on ``emb``; returns (tokenizer with its report, checkpoint bytes).

    ``stop_after_epochs`` ends the run early (as an interruption would) after that many epochs of this
    call; the checkpoint then resumes it.
    """
    if cfg.codebook_size > emb.n:
        raise ConfigError(f"codebook_size ({cfg.codebook_size}) exceeds the number of embeddings ({emb.n}).")
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        xin = _prepare(emb.vectors, cfg.input_norm)
        x = torch.from_numpy(xin)
        st = load_checkpoint(resume, emb.d, cfg) if resume is not None else _new_state(emb.d, cfg)
        if cfg.kmeans_init and not st.kmeans_done:
            _kmeans_init(st, x, cfg)
        model, opt = st.model, st.optimizer
        n = len(x)
        end = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, st.epoch + stop_after_epochs)
        with progress(total=cfg.epochs, initial=st.epoch, desc=f"rqvae {cfg.loss}", unit="epoch",
                      disable=not show_progress) as bar:  # fmt: skip
            while st.epoch < end:
                model.train()
                perm = torch.randperm(n, generator=st.gen)
                sums = {"loss": 0.0, "recon": 0.0, "contrastive": 0.0, "rq": 0.0}
                batches = 0
                for s in range(0, n, cfg.batch_size):
                    xb = x[perm[s : s + cfg.batch_size]]
                    out = model(xb)
                    loss = out["rq_loss"]
                    recon = sq_err(out["x_hat"], xb)
                    cl = info_nce(out["x_hat"], xb, cfg.temperature) if cfg.loss != "mse" else recon.new_zeros(())
                    if cfg.loss in ("mse", "both"):
                        loss = loss + recon
                    if cfg.loss in ("contrastive", "both"):
                        loss = loss + cfg.alpha * cl
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if cfg.ema:
                        model.rq.ema_update(out["inputs"], out["codes"])
                    st.step += 1
                    batches += 1
                    for k, v in (("loss", loss), ("recon", recon), ("contrastive", cl), ("rq", out["rq_loss"])):
                        sums[k] += float(v.detach())
                model.eval()
                resets = reset_dead_codes(st, x, cfg)
                st.resets = [a + b for a, b in zip(st.resets, resets, strict=True)]
                st.epoch += 1
                means = {k: v / batches for k, v in sums.items()}
                if st.epoch == 1 or st.epoch % 10 == 0 or st.epoch == cfg.epochs:
                    st.history.append({"epoch": st.epoch, **{k: round(v, 6) for k, v in means.items()}})
                bar.set_postfix(loss=f"{means['loss']:.4f}", reset=sum(resets))
                bar.update(1)
        model.eval()
        ckpt = st.checkpoint(cfg)
        tok = model.to_tokenizer(cfg)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads_before)
    codes = tok.encode(emb.vectors)
    suffix = assign_suffixes(codes)
    quality = semantic_report(
        xin, codes, suffix, tok.sizes, x_hat=tok.decode(codes), max_queries=cfg.report_queries, seed=cfg.seed
    )
    tok.report = {
        "n_items": emb.n,
        "d": emb.d,
        "source": emb.source,
        "source_sha256": emb.fingerprint(),
        "epochs": st.epoch,
        "steps": st.step,
        "complete": st.epoch >= cfg.epochs,
        "train_seconds": round(seconds, 2),
        "dead_code_resets": st.resets,
        "history": st.history,
        "quality": quality,
    }
    return tok, ckpt
