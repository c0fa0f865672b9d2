"""RQ-VAE / CoST settings: RQVAEConfig and its validation (loaded by ``vqrec.trainers.configfile``), and LOSSES.

    mse          |x - x_hat|^2 + L_rq                          (RQ-VAE as in TIGER)
    contrastive  alpha * InfoNCE(x_hat, x) + L_rq              (CoST: in-batch, cosine, temperature tau)
    both         |x - x_hat|^2 + alpha * InfoNCE + L_rq

(the terms and their scales are described in ``model``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vqrec.index.errors import ConfigError
from vqrec.index.semantic import INPUT_NORMS
from vqrec.trainers.configfile import config_from_dict

LOSSES = ("mse", "contrastive", "both")


@dataclass(frozen=True, kw_only=True)
class RQVAEConfig:
    """Defaults follow the papers: CoST (3 levels, K = 64..256, latent 96, tau 0.1, alpha 0.1) and
    TIGER / RQ-VAE (beta 0.25, encoder 512-256-128, k-means init, dead-code reset)."""

    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 96
    hidden: tuple[int, ...] = (512, 256, 128)
    loss: str = "mse"  # mse | contrastive | both
    temperature: float = 0.1  # CoST's tau
    alpha: float = 0.1  # weight of the contrastive loss
    beta: float = 0.25  # commitment weight
    ema: bool = False  # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_init_points: int = 4096  # size of the first batch the k-means initialisation reads
    dead_code_threshold: float = 1.0  # codes used fewer times than this in an epoch are reset (0: never)
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    latent_norm: bool = True  # l2-normalise the encoder output before quantization (see model.py's docstring)
    input_norm: str = "l2"  # l2: inputs are L2-normalised (semantic ids should follow cosine neighbourhoods)
    seed: int = 1234
    threads: int = 1  # torch intra-op threads (0 = torch's default); 1 measured 8-20x faster on 2 busy cores
    report_queries: int = 2000  # items sampled for the neighbourhood-preservation report

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}.")
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm must be one of {list(INPUT_NORMS)}, got {self.input_norm!r}.")
        if isinstance(self.hidden, str | int) or not all(isinstance(h, int) and h > 0 for h in self.hidden):
            raise ConfigError(f"hidden must be a list of positive layer widths, got {self.hidden!r}.")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for name in ("levels", "codebook_size", "latent_dim", "epochs", "batch_size", "kmeans_init_points",
                     "report_queries"):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
        if self.codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2, got {self.codebook_size}.")
        if not isinstance(self.seed, int) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError("seed must be an integer and threads a non-negative integer.")
        for name in ("temperature", "lr"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}.")
        for name in ("alpha", "beta", "weight_decay", "dead_code_threshold"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)!r}.")
        if not 0.0 < float(self.ema_decay) < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RQVAEConfig:
        return config_from_dict(cls, data)
