"""COVE / BPR-MF settings: CoveConfig and its validation (loaded by ``vqrec.trainers.configfile``).

``quantize=False`` is the plain BPR-MF baseline on the same code path (alpha, omega, beta, levels unused):
with alpha = omega = 0 COVE computes exactly the same embeddings as the baseline.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vqrec.index.errors import ConfigError
from vqrec.trainers.configfile import config_from_dict


@dataclass(frozen=True, kw_only=True)
class CoveConfig:
    """COVE / BPR-MF settings. Defaults measured on ml-100k leave-one-out (see bench/cove.py)."""

    quantize: bool = True  # False: plain BPR-MF (alpha, omega, beta, levels unused)
    dim: int = 64  # embedding size
    levels: tuple[int, ...] = (100, 10)  # codebook sizes, fine -> coarse
    alpha: float = 0.3  # weight of mean(q_1..q_L) added to e
    omega: float = 0.001  # weight of the quantization losses
    beta: float = 0.25  # commitment weight inside each level's quantization loss
    epochs: int = 30
    batch_size: int = 1024  # positive pairs per step
    lr: float = 0.005  # Adam
    reg: float = 0.01  # L2 on the batch's raw embeddings (user, positive, negatives), per example
    negatives: int = 4  # uniformly sampled negative items per positive
    init_std: float = 0.1  # N(0, init_std) initial embeddings
    dead_code_reset: bool = True  # re-seed codewords unused during an epoch from that level's inputs
    eval_k: int = 10  # k of HR@k / NDCG@k in the report
    threads: int = 1  # torch intra-op threads while training (0 = leave torch's setting)
    seed: int = 1234

    def __post_init__(self) -> None:
        for name in ("quantize", "dead_code_reset"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        object.__setattr__(self, "levels", _as_levels(self.levels))
        for name in ("dim", "epochs", "batch_size", "negatives", "eval_k"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
        for name in ("seed", "threads"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}.")
        for name, positive in (("alpha", False), ("omega", False), ("beta", False), ("reg", False), ("lr", True)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}.")
            if v < 0 or (positive and v == 0):
                raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}, got {v!r}.")
            object.__setattr__(self, name, float(v))
        v = self.init_std
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"init_std must be a finite number > 0, got {v!r}.")
        object.__setattr__(self, "init_std", float(v))

    @property
    def kind(self) -> str:
        return "cove" if self.quantize else "bpr"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoveConfig:
        return config_from_dict(cls, data)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_levels(v: Any) -> tuple[int, ...]:
    """(100, 10), [100, 10] or "100,10" -> (100, 10): at least one level, each >= 2 codes, fine -> coarse."""
    raw = v
    if isinstance(v, str):
        try:
            v = [int(s) for s in v.replace(" ", "").split(",") if s != ""]
        except ValueError:
            raise ConfigError(f"levels must be codebook sizes like 100,10; got {raw!r}.") from None
    if not isinstance(v, list | tuple) or not v or not all(_is_int(k) for k in v):
        raise ConfigError(f"levels must be a non-empty list of integers (codebook sizes, fine -> coarse); got {raw!r}.")
    if any(k < 2 for k in v):
        raise ConfigError(f"levels: every level needs at least 2 codes; got {list(v)}.")
    if any(b > a for a, b in zip(v, v[1:], strict=False)):
        raise ConfigError(
            f"levels go from fine to coarse (each level at most as many codes as the one before); got {list(v)}."
        )
    return tuple(v)
