"""The faiss trainers' configuration (pq / opq / rq): one frozen, validated dataclass, loaded like every
trainer's settings by ``configfile.load_settings(TrainConfig, path, overrides, **explicit)`` (defaults <
config file < --set < explicit CLI flags). The config is written into the codebook artifact (and copied into
every index built from it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vqrec.index.codebooks import KINDS, METRICS
from vqrec.index.errors import ConfigError

from .configfile import config_from_dict


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    method: str = "pq"  # pq | opq | rq | auto (train the candidates, keep the best on held-out queries)
    M: int = 16  # sub-quantizers (pq/opq) or stages (rq); bytes per item = M
    nbits: int = 8  # bits per code, 1..8 (ksub = 2**nbits codewords)
    metric: str = "ip"  # ip | cosine | l2
    seed: int = 1234
    max_train_points: int = 100_000  # training sample drawn with the seed
    niter: int | None = None  # k-means iterations; default faiss's: 25 for pq/opq, 10 per rq stage
    opq_niter: int = 20  # OPQ alternating iterations (faiss: 50; trainers/fitting.py train_opq says why 20)
    norm: str = "auto"  # auto | explicit | joint: explicit = codes hold directions, norm kept exactly
    beam_size: int = 8  # RQ beam search width of the encoding
    train_beam_size: int = 1  # RQ beam width while training: 1 = greedy (trainers/fitting.py says what it costs)
    # pq/opq: score-aware (anisotropic) codes with ScaNN's threshold T in [0, 1); 0 = nearest codeword.
    # auto tries both, with this T or 0.3 (index/score_aware.py)
    score_aware: float = 0.0
    eval_queries: int = 200  # held-out queries for the training report
    # database sample for the report's recall (a codebook's own quality, every item of the sample scanned; fewer
    # items, fewer rivals: the 1M recipe's RQ16x8 found 0.8435 over 50k, 0.8135 over 100k); at 1M items `vqrec
    # train rq --M 16` took 12.6-14.2 s with a 100k sample, 11.8-11.9 s with 50k (alternating runs)
    eval_max_items: int = 50_000
    # method=auto: candidates are trained on at most auto_max_items items and compared on auto_queries
    # held-out queries (disjoint from the report's); the first candidate (cheapest first) within
    # auto_tolerance of the best recall@10 wins
    auto_max_items: int = 50_000
    auto_max_train: int = 20_000  # training points per candidate (the winner then trains on max_train_points)
    auto_queries: int = 500
    auto_tolerance: float = 0.005

    def __post_init__(self) -> None:
        if self.method not in (*KINDS, "auto"):
            raise ConfigError(f"method must be one of {[*KINDS, 'auto']}, got {self.method!r}.")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {list(METRICS)}, got {self.metric!r}.")
        if self.norm not in ("auto", "explicit", "joint"):
            raise ConfigError(f"norm must be one of ['auto', 'explicit', 'joint'], got {self.norm!r}.")
        for name in ("nbits", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be an integer, got {v!r}.")
        if not 1 <= self.nbits <= 8:
            raise ConfigError(f"nbits must be in 1..8 (one byte per code), got {self.nbits}.")
        if self.niter is None and self.method != "auto":  # frozen: resolve the per-method default once
            object.__setattr__(self, "niter", 10 if self.method == "rq" else 25)  # (auto: per candidate)
        positive = ("M", "niter", "opq_niter", "beam_size", "train_beam_size", "max_train_points", "eval_queries",
                    "eval_max_items")  # fmt: skip
        for name in (*positive, "auto_max_items", "auto_max_train", "auto_queries"):
            v = getattr(self, name)
            if v is None and name == "niter":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
        if not isinstance(self.score_aware, int | float) or isinstance(self.score_aware, bool):
            raise ConfigError(f"score_aware must be a number in [0, 1), got {self.score_aware!r}.")
        if not 0 <= self.score_aware < 1:
            raise ConfigError(f"score_aware must be in [0, 1) (ScaNN's threshold T), got {self.score_aware}.")
        if self.score_aware and self.method == "rq":
            raise ConfigError("score_aware codes are for pq and opq; rq encodes by beam search (index/rq_encode.py).")
        if not isinstance(self.auto_tolerance, int | float) or not 0 <= self.auto_tolerance < 1:
            raise ConfigError(f"auto_tolerance must be a number in [0, 1), got {self.auto_tolerance!r}.")
        if self.M > 256:
            raise ConfigError(f"M must be at most 256, got {self.M}.")

    @property
    def norm_explicit(self) -> bool:
        """auto: explicit for ip (item norms vary with popularity), joint for l2; cosine has no norm."""
        if self.metric == "cosine":
            return False
        return self.norm == "explicit" or (self.norm == "auto" and self.metric == "ip")

    @property
    def ksub(self) -> int:
        return 1 << self.nbits

    def check_dim(self, d: int) -> None:
        if self.method == "auto" and d % self.M:  # auto keeps only rq: say so rather than fail
            return
        if self.method in ("pq", "opq") and d % self.M:
            divisors = [m for m in range(1, d + 1) if d % m == 0]
            raise ConfigError(
                f"d ({d}) must be divisible by M ({self.M}) for {self.method}; valid M for d={d}: {divisors}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, data)
