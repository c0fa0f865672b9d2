"""RQ-VAE / CoST model (torch): MLP encoder -> latent -> L residual levels x K codes -> MLP decoder.

    z = enc(x);  r_0 = z;  q_l = C_l[argmin_k |r_l - C_l[k]|];  r_{l+1} = r_l - q_l;  x_hat = dec(sum_l q_l)

Straight-through estimator: the decoder sees sum_l q_l, gradients pass to the encoder as if it saw z.
Per level: codebook loss |sg(r_l) - q_l|^2 (skipped with EMA codebooks, which move to the running mean
of their assigned residuals instead) + beta * commitment |r_l - sg(q_l)|^2; L_rq is their sum over
levels. Scales, measured on ml-100k (MiniLM titles and ALS items): the reconstruction term is summed over
dimensions per row and L_rq is a per-element mean (torch's mse_loss). Both as per-element means, or both
summed, collapsed the encoder onto one code (contrastive: InfoNCE stuck at log(batch)); the latent is
L2-normalised by default (``latent_norm``) so the codebooks see one scale. Losses:

    mse          |x - x_hat|^2 + L_rq                          (RQ-VAE as in TIGER)
    contrastive  alpha * InfoNCE(x_hat, x) + L_rq              (CoST: in-batch, cosine, temperature tau)
    both         |x - x_hat|^2 + alpha * InfoNCE + L_rq

``RQVAE.to_tokenizer`` turns the weights into the numpy tokenizer (index.semantic.Tokenizer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vqrec.index.semantic import Tokenizer

from .._torch import require_torch
from .config import RQVAEConfig

torch = require_torch()
nn = torch.nn
F = torch.nn.functional


def sq_err(a: Any, b: Any) -> Any:
    """Squared L2 distance per row, averaged over the batch: the reconstruction term |x - x_hat|^2."""
    return ((a - b) ** 2).sum(dim=1).mean()


def _mlp(sizes: list[int]) -> Any:
    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualVQ(nn.Module):  # type: ignore[misc]
    """L codebooks; greedy residual assignment; codebook + commitment losses; optional EMA updates."""

    def __init__(self, levels: int, size: int, dim: int, *, beta: float, ema: bool, decay: float) -> None:
        super().__init__()
        self.levels, self.size, self.dim, self.beta, self.ema, self.decay = levels, size, dim, beta, ema, decay
        init = torch.randn(levels, size, dim) * 0.01
        if ema:
            self.register_buffer("codebooks", init)
            self.register_buffer("ema_count", torch.ones(levels, size))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebooks = nn.Parameter(init)

    def forward(self, z: Any) -> tuple[Any, Any, Any, list[Any]]:
        """(z_q = sum of chosen codewords, codes (n, L), L_rq, residual inputs per level)."""
        residual = z
        zq = torch.zeros_like(z)
        codes = []
        loss = z.new_zeros(())
        inputs = []
        for lvl in range(self.levels):
            c = self.codebooks[lvl]
            r = residual.detach()
            idx = torch.argmin((c * c).sum(1)[None, :] - 2.0 * r @ c.T, dim=1)
            q = c[idx]
            if not self.ema:
                loss = loss + F.mse_loss(q, r)  # codebook loss: moves codewords to residuals
            loss = loss + self.beta * F.mse_loss(residual, q.detach())  # commitment: encoder -> codewords
            zq = zq + q.detach()
            inputs.append(r)
            residual = residual - q.detach()
            codes.append(idx)
        return zq, torch.stack(codes, dim=1), loss, inputs

    @torch.no_grad()
    def ema_update(self, inputs: list[Any], codes: Any) -> None:
        for lvl, r in enumerate(inputs):
            onehot = F.one_hot(codes[:, lvl], self.size).to(r.dtype)
            self.ema_count[lvl].mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
            self.ema_sum[lvl].mul_(self.decay).add_(onehot.T @ r, alpha=1 - self.decay)
            n = self.ema_count[lvl].sum()
            count = (self.ema_count[lvl] + 1e-5) / (n + self.size * 1e-5) * n  # Laplace smoothing
            self.codebooks[lvl].copy_(self.ema_sum[lvl] / count[:, None])

    def lookup(self, codes: Any) -> Any:
        zq = torch.zeros(codes.shape[0], self.dim, dtype=self.codebooks.dtype)
        for lvl in range(self.levels):
            zq = zq + self.codebooks[lvl][codes[:, lvl]]
        return zq


class RQVAE(nn.Module):  # type: ignore[misc]
    def __init__(self, d: int, cfg: RQVAEConfig) -> None:
        super().__init__()
        self.encoder = _mlp([d, *cfg.hidden, cfg.latent_dim])
        self.latent_norm = cfg.latent_norm
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), d])
        self.rq = ResidualVQ(
            cfg.levels, cfg.codebook_size, cfg.latent_dim, beta=cfg.beta, ema=cfg.ema, decay=cfg.ema_decay
        )

    def embed(self, x: Any) -> Any:
        z = self.encoder(x)
        return F.normalize(z, dim=1) if self.latent_norm else z

    def forward(self, x: Any) -> dict[str, Any]:
        z = self.embed(x)
        zq, codes, rq_loss, inputs = self.rq(z)
        # straight-through: the value is exactly zq (so the output equals decode(codes)), the gradient is z's
        z_st = (z - z.detach()) + zq
        return {"x_hat": self.decoder(z_st), "codes": codes, "rq_loss": rq_loss, "inputs": inputs, "z": z}

    @torch.no_grad()
    def encode(self, x: Any) -> Any:
        return self.rq(self.embed(x))[1]

    @torch.no_grad()
    def decode(self, codes: Any) -> Any:
        return self.decoder(self.rq.lookup(codes))

    def to_tokenizer(self, cfg: RQVAEConfig, report: dict[str, Any] | None = None) -> Tokenizer:
        def layers(seq: Any) -> list[tuple[np.ndarray, np.ndarray]]:
            return [
                (m.weight.detach().numpy().astype(np.float32).copy(), m.bias.detach().numpy().astype(np.float32).copy())
                for m in seq
                if isinstance(m, nn.Linear)
            ]

        return Tokenizer(
            encoder=layers(self.encoder),
            codebooks=[c.detach().numpy().astype(np.float32).copy() for c in self.rq.codebooks],
            decoder=layers(self.decoder),
            input_norm=cfg.input_norm,
            latent_norm=cfg.latent_norm,
            config=cfg.to_dict(),
            report=report or {},
        )


def info_nce(x_hat: Any, x: Any, temperature: float) -> Any:
    """CoST's in-batch contrastive loss: each reconstruction should be most similar (cosine) to its own input."""
    logits = F.normalize(x_hat, dim=1) @ F.normalize(x, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(x)))
