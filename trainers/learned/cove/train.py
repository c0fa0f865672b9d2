"""COVE training: BPR matrix factorization with cascaded vector quantizers on user and item embeddings (torch).

From an implicit-feedback log (``user TAB item`` lines, see ``data``) it learns, from random initialisation and
end to end, the model of ``model`` (the equations and the code tree are described there); ``quantize=False``
is the plain BPR-MF baseline on the same code path (see ``config``).

Output (an artifact directory, published atomically): ``users.npy`` + ``user_ids.txt`` and ``items.npy`` +
``item_ids.txt`` (the enhanced e' used for scoring, float32, in vqrec's embeddings format so ``vqrec build``
indexes them directly), ``user_codes.npy`` / ``item_codes.npy`` (n, L) int32 (column 0 = finest level),
``codebooks.npz`` (``user_level{l}`` / ``item_level{l}`` (K_l, dim) float32) and ``manifest.json`` with the
config and the report (time, losses, per-level utilization and perplexity, the tree check and, with a
held-out file, leave-one-out HR@k / NDCG@k with training items excluded, by exact inner-product search;
see ``evaluate``).

Deterministic: the same config (seed) and thread count on one machine give identical files; initial tables
and codebooks, the data order, negatives and dead-code re-seeding each come from their own seeded generator.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqrec.index.artifact_io import atomic_dir, write_manifest
from vqrec.index.errors import ConfigError, InputError
from vqrec.index.progress import progress

from .._torch import require_torch
from .config import CoveConfig
from .data import Interactions
from .evaluate import code_usage, leave_one_out, tree_check
from .model import CoveModel, _export, _init, _reset_dead

torch = require_torch()
F = torch.nn.functional

ARTIFACT = "cove"
FORMAT_VERSION = 1


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class CoveResult:
    """Trained embeddings (enhanced e'), codes, codebooks, config and report."""

    config: CoveConfig
    user_ids: list[str]
    item_ids: list[str]
    user_vectors: NDArray[np.float32]
    item_vectors: NDArray[np.float32]
    user_codes: NDArray[np.int32] | None
    item_codes: NDArray[np.int32] | None
    codebooks: dict[str, NDArray[np.float32]]
    report: dict[str, Any]
    source: dict[str, Any]

    def save(self, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Publish the artifact directory atomically; returns the manifest."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.save(os.path.join(tmp, "users.npy"), self.user_vectors)
            np.save(os.path.join(tmp, "items.npy"), self.item_vectors)
            for name, ids in (("user_ids.txt", self.user_ids), ("item_ids.txt", self.item_ids)):
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    f.writelines(f"{i}\n" for i in ids)
            if self.user_codes is not None and self.item_codes is not None:
                np.save(os.path.join(tmp, "user_codes.npy"), self.user_codes)
                np.save(os.path.join(tmp, "item_codes.npy"), self.item_codes)
                np.savez(os.path.join(tmp, "codebooks.npz"), **self.codebooks)
            manifest = write_manifest(
                tmp,
                {
                    "artifact": ARTIFACT,
                    "format_version": FORMAT_VERSION,
                    "kind": self.config.kind,
                    "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "d": int(self.user_vectors.shape[1]),
                    "n_users": len(self.user_ids),
                    "n_items": len(self.item_ids),
                    "levels": list(self.config.levels) if self.config.quantize else [],
                    "embeddings": "enhanced e' = e + alpha * mean(q_1..q_L); score = <user, item>"
                    if self.config.quantize
                    else "plain BPR-MF embeddings; score = <user, item>",
                    "source": self.source,
                    "config": self.config.to_dict(),
                    "report": self.report,
                },
            )
        return manifest


def train_cove(
    data: Interactions,
    cfg: CoveConfig,
    *,
    heldout: dict[str, str] | None = None,
    eval_every: int = 0,
    show_progress: bool = True,
) -> CoveResult:
    """Train COVE (or plain BPR-MF with ``cfg.quantize=False``) on ``data``; evaluate on ``heldout`` at the
    end (and every ``eval_every`` epochs into ``report["eval_history"]``, outside the training time)."""
    nu, ni = len(data.user_ids), len(data.item_ids)
    seen = data.seen() if heldout is not None else {}
    eval_history: list[dict[str, Any]] = []
    eval_seconds = 0.0
    if cfg.quantize:
        for side, n in (("users", nu), ("items", ni)):
            if cfg.levels[0] > n:
                raise ConfigError(
                    f"levels[0]={cfg.levels[0]} codes but the log has only {n} {side}; "
                    "a level cannot have more codes than entities"
                    + (f" (e.g. --set levels={n // 4},2)." if n >= 8 else "; train bpr instead.")
                )
    if heldout is not None and not any(u in data.user_rows for u in heldout):
        raise InputError(
            f"none of the {len(heldout)} held-out users appears in the training log {data.source}; "
            "is --test the held-out split of --interactions?"
        )
    with _torch_threads(cfg.threads):
        t0 = time.perf_counter()
        model = CoveModel(nu, ni, cfg)
        _init(model, cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        g_data = torch.Generator().manual_seed(cfg.seed + 2)
        g_dead = torch.Generator().manual_seed(cfg.seed + 3)
        pu = torch.from_numpy(data.users)
        pi = torch.from_numpy(data.items)
        n = data.n
        history: list[dict[str, float]] = []
        resets = {"users": [0] * len(cfg.levels), "items": [0] * len(cfg.levels)} if cfg.quantize else {}
        bar = progress(total=cfg.epochs, desc=f"train {cfg.kind}", unit="epoch", disable=not show_progress)
        with bar:
            for epoch in range(cfg.epochs):
                perm = torch.randperm(n, generator=g_data)
                negs = torch.randint(ni, (n, cfg.negatives), generator=g_data)
                sums = torch.zeros(3, dtype=torch.float64)
                used = {
                    "users": [torch.zeros(K, dtype=torch.bool) for K in cfg.levels],
                    "items": [torch.zeros(K, dtype=torch.bool) for K in cfg.levels],
                }
                for start in range(0, n, cfg.batch_size):
                    b = perm[start : start + cfg.batch_size]
                    u, i, j = pu[b], pi[b], negs[b]
                    uq, lu, ue, ucodes = model.side(model.user, model.user_vq, u)
                    rows = torch.cat([i, j.reshape(-1)])
                    iq, li, ie, icodes = model.side(model.item, model.item_vq, rows)
                    pos, neg = iq[: len(b)], iq[len(b) :].reshape(len(b), cfg.negatives, -1)
                    diff = (uq * pos).sum(1, keepdim=True) - (uq[:, None, :] * neg).sum(2)
                    bpr = F.softplus(-diff).mean()
                    reg = cfg.reg * ((ue**2).sum() + (ie**2).sum()) / len(b) if cfg.reg else torch.zeros(())
                    qloss = lu + li if cfg.quantize else torch.zeros(())
                    loss = bpr + cfg.omega * qloss + reg if cfg.quantize else bpr + reg
                    if not torch.isfinite(loss):
                        raise ConfigError(
                            f"training diverged in epoch {epoch + 1} (loss {float(loss.detach())}); "
                            f"lower lr ({cfg.lr}) or init_std ({cfg.init_std}). Nothing was written."
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    w = len(b) / n
                    bpr, qloss, reg = bpr.detach(), qloss.detach(), reg.detach()
                    sums += torch.tensor([float(bpr), float(qloss), float(reg)], dtype=torch.float64) * w
                    for lvl, (ku, ki) in enumerate(zip(ucodes, icodes, strict=True)):
                        used["users"][lvl][ku] = True
                        used["items"][lvl][ki] = True
                if cfg.quantize and cfg.dead_code_reset and epoch < cfg.epochs - 1:
                    for side, table, vq in (("users", model.user, model.user_vq), ("items", model.item, model.item_vq)):
                        assert vq is not None
                        for lvl, c in enumerate(_reset_dead(vq, table.detach(), used[side], g_dead, cfg.beta)):
                            resets[side][lvl] += c
                ep = {"bpr": float(sums[0]), "quantization": float(sums[1]), "reg": float(sums[2])}
                history.append({k: round(v, 5) for k, v in ep.items()})
                bar.set_postfix(bpr=f"{ep['bpr']:.4f}", vq=f"{ep['quantization']:.4f}", refresh=False)
                bar.update(1)
                if heldout is not None and eval_every and (epoch + 1) % eval_every == 0 and epoch + 1 < cfg.epochs:
                    t1 = time.perf_counter()
                    o, _ = _export(model, cfg)
                    ev = leave_one_out(
                        o["users"][0], o["items"][0], data.user_ids, data.item_ids, seen, heldout, k=cfg.eval_k
                    )
                    eval_history.append(
                        {"epoch": epoch + 1, **{k: ev[k] for k in (f"hr@{cfg.eval_k}", f"ndcg@{cfg.eval_k}")}}
                    )
                    eval_seconds += time.perf_counter() - t1
        train_seconds = time.perf_counter() - t0 - eval_seconds

        out, codebooks = _export(model, cfg)

    report: dict[str, Any] = {
        "kind": cfg.kind,
        "n_users": nu,
        "n_items": ni,
        "n_interactions": n,
        "duplicates_dropped": data.duplicates,
        "train_seconds": round(train_seconds, 3),
        "torch_threads": cfg.threads or torch.get_num_threads(),
        "loss": "bpr + omega * quantization + reg (quantization: unweighted, summed over levels and both sides)"
        if cfg.quantize
        else "bpr + reg",
        "final_losses": history[-1],
        "loss_history": history,
    }
    if cfg.quantize:
        report["quantization"] = {}
        for side in ("users", "items"):
            codes = out[side][1]
            report["quantization"][side] = {
                "levels": [code_usage(codes[:, lvl], K) for lvl, K in enumerate(cfg.levels)],
                "dead_code_resets": resets[side],
                "tree": tree_check(codes, cfg.levels),
            }
    if heldout is not None:
        report["eval"] = leave_one_out(
            out["users"][0], out["items"][0], data.user_ids, data.item_ids, seen, heldout, k=cfg.eval_k
        )
        if eval_history:
            report["eval_history"] = eval_history
    return CoveResult(
        config=cfg,
        user_ids=list(data.user_ids),
        item_ids=list(data.item_ids),
        user_vectors=out["users"][0],
        item_vectors=out["items"][0],
        user_codes=out["users"][1],
        item_codes=out["items"][1],
        codebooks=codebooks,
        report=report,
        source={"interactions": data.source, "sha256": data.sha256, "lines": data.lines},
    )
