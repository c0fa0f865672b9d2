"""The COVE model (torch): user and item embedding tables with one cascade of vector quantizers per side.

    e            user / item embedding tables (dim), N(0, init_std)
    q_1 = VQ_1(e)        level 1: nearest of K_1 codewords (finest)
    q_l = VQ_l(q_{l-1})  level l quantizes level l-1's codeword (coarser: K_l <= K_{l-1})
    e' = e + alpha * mean(q_1 .. q_L)          the enhanced embedding; score(u, i) = <u', i'>
    loss = BPR(u, i, sampled negatives) + omega * sum_l (|sg(z_l) - c_l|^2 + beta |z_l - sg(c_l)|^2)
           + reg * (|e_u|^2 + |e_i|^2 + |e_j|^2)

One cascade per side (users, items). Each q_l goes on with the straight-through estimator, so the ranking
gradient reaches e; codebooks learn from the codebook term; codewords no entity picked during an epoch are
re-seeded from that level's inputs (seeded generator) so every level keeps its codes in use. Because level
l+1 sees only level l's codeword, every fine code has exactly one coarse parent: the codes of each side form
a tree (a learned category tree), which the report checks.

Also here: the seeded initialisation (``_init``), the dead-code re-seeding (``_reset_dead``) and the export
of the enhanced embeddings, codes and codebooks (``_export``); the loop that uses them is in ``train``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._torch import require_torch
from .config import CoveConfig

torch = require_torch()
nn = torch.nn


class CascadeVQ(nn.Module):
    """Cascaded vector quantizers: level l quantizes level l-1's (straight-through) output."""

    def __init__(self, levels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.levels = levels
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(K, dim)) for K in levels])

    @staticmethod
    def nearest(z: Any, cb: Any) -> Any:
        d = (z * z).sum(1, keepdim=True) - 2.0 * z @ cb.T + (cb * cb).sum(1)[None, :]
        return d.argmin(1)

    def forward(self, e: Any, beta: float) -> tuple[Any, Any, list[Any], list[Any]]:
        """-> (mean of the level outputs, sum of quantization losses, codes per level, inputs per level)."""
        z = e
        outs, codes, inputs = [], [], []
        loss = e.new_zeros(())
        for cb in self.codebooks:
            with torch.no_grad():
                k = self.nearest(z, cb)
            c = cb[k]
            zd = z.detach()
            loss = loss + ((c - zd) ** 2).sum(1).mean() + beta * ((z - c.detach()) ** 2).sum(1).mean()
            q = z + (c - z).detach()  # straight-through: value c, gradient to z (and on to e)
            outs.append(q)
            codes.append(k)
            inputs.append(zd)
            z = q
        return torch.stack(outs).mean(0), loss, codes, inputs


class CoveModel(nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: CoveConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.user = nn.Parameter(torch.zeros(n_users, cfg.dim))
        self.item = nn.Parameter(torch.zeros(n_items, cfg.dim))
        self.user_vq = CascadeVQ(cfg.levels, cfg.dim) if cfg.quantize else None
        self.item_vq = CascadeVQ(cfg.levels, cfg.dim) if cfg.quantize else None

    def side(self, table: Any, vq: CascadeVQ | None, rows: Any) -> tuple[Any, Any, Any, list[Any]]:
        """-> (enhanced rows e', quantization loss, raw rows e, codes per level of the distinct rows).

        Each distinct entity of the batch is quantized once (the quantization loss is a mean over them);
        plain BPR-MF takes the same path with no quantizer."""
        uniq, inv = torch.unique(rows, return_inverse=True)
        e = table[uniq]
        if vq is None:
            return e[inv], e.new_zeros(()), e[inv], []
        qm, qloss, codes, _ = vq(e, self.cfg.beta)
        return (e + self.cfg.alpha * qm)[inv], qloss, e[inv], codes


def _init(model: CoveModel, cfg: CoveConfig) -> None:
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        model.user.copy_(torch.randn(model.user.shape, generator=g) * cfg.init_std)
        model.item.copy_(torch.randn(model.item.shape, generator=g) * cfg.init_std)
        if cfg.quantize:
            gc = torch.Generator().manual_seed(cfg.seed + 1)
            for table, vq in ((model.user, model.user_vq), (model.item, model.item_vq)):
                src = table
                for cb in vq.codebooks:  # type: ignore[union-attr]
                    cb.copy_(src[torch.randperm(len(src), generator=gc)[: len(cb)]])
                    src = cb


@torch.no_grad()
def _reset_dead(vq: CascadeVQ, table: Any, used: list[Any], g: Any, beta: float) -> list[int]:
    """Re-seed every codeword no entity picked during the epoch with a random input of its level."""
    _, _, codes, inputs = vq(table, beta)
    n_reset = []
    for lvl, cb in enumerate(vq.codebooks):
        dead = torch.nonzero(~used[lvl]).flatten()
        n_reset.append(int(len(dead)))
        if len(dead):
            z = torch.unique(inputs[lvl], dim=0)  # distinct inputs (level >= 2: the used finer codewords)
            pick = torch.randperm(len(z), generator=g)[: len(dead)]
            cb[dead[: len(pick)]] = z[pick]
    return n_reset


@torch.no_grad()
def _export(model: CoveModel, cfg: CoveConfig) -> tuple[dict[str, Any], dict[str, NDArray[np.float32]]]:
    """{side: (enhanced vectors (n, dim) float32, codes (n, L) int32 or None)} and the codebooks."""
    out: dict[str, Any] = {}
    codebooks: dict[str, NDArray[np.float32]] = {}
    for side, table, vq in (("users", model.user, model.user_vq), ("items", model.item, model.item_vq)):
        enh, _, _, cl = model.side(table, vq, torch.arange(len(table)))
        codes = torch.stack(cl, 1).numpy().astype(np.int32) if cl else None
        if vq is not None:
            for lvl, cb in enumerate(vq.codebooks):
                codebooks[f"{side[:-1]}_level{lvl}"] = cb.detach().numpy().astype(np.float32).copy()
        out[side] = (np.ascontiguousarray(enh.numpy(), dtype=np.float32), codes)
    return out, codebooks
