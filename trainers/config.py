"""Trainer configuration: one frozen, validated dataclass, read from JSON/TOML and overridable
with ``--set key=value``. Precedence: built-in defaults < config file < --set < explicit CLI flags.
The config is written into the codebook artifact (and copied into every index built from it)."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from typing import Any, TypeVar

from vqrec.index.codebooks import KINDS, METRICS
from vqrec.index.errors import ConfigError

C = TypeVar("C")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    method: str = "pq"  # pq | opq | rq
    M: int = 16  # sub-quantizers (pq/opq) or stages (rq); bytes per item = M
    nbits: int = 8  # bits per code, 1..8 (ksub = 2**nbits codewords)
    metric: str = "ip"  # ip | cosine | l2
    seed: int = 1234
    max_train_points: int = 100_000  # training sample drawn with the seed
    niter: int | None = None  # k-means iterations; default faiss's: 25 for pq/opq, 10 per rq stage
    opq_niter: int = 25  # OPQ alternating iterations
    norm: str = "auto"  # auto | explicit | joint: explicit = codes hold directions, norm kept exactly
    beam_size: int = 8  # RQ beam search width (training and encoding)
    eval_queries: int = 200  # held-out queries for the training report
    eval_max_items: int = 200_000  # database sample for the report's recall

    def __post_init__(self) -> None:
        if self.method not in KINDS:
            raise ConfigError(f"method must be one of {list(KINDS)}, got {self.method!r}.")
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
        if self.niter is None:  # frozen: resolve the per-method default once, so the artifact records it
            object.__setattr__(self, "niter", 10 if self.method == "rq" else 25)
        for name in ("M", "niter", "opq_niter", "beam_size", "max_train_points", "eval_queries", "eval_max_items"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}.")
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


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """``cls(**data)`` for a config dataclass, with unknown keys named (and the known ones listed)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}.")
    return cls(**data)


def read_config_file(path: str | None) -> dict[str, Any]:
    """The settings in a JSON or TOML (by extension) config file; {} for no file."""
    if not path:
        return {}
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.endswith(".toml"):
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse config: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be an object/table.")
    return data


def parse_bool(raw: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case); ValueError otherwise."""
    s = raw.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def parse_override(item: str, types: dict[str, type]) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}.")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key not in types:
        raise ConfigError(f"--set: unknown key {key!r}; known keys: {sorted(types)}.")
    typ = types[key]
    try:
        return key, typ(raw) if typ is not str else raw
    except ValueError:
        raise ConfigError(f"--set {key}: {raw!r} is not a valid {typ.__name__}.") from None


def load_config(path: str | None, overrides: list[str] | None = None, **explicit: Any) -> TrainConfig:
    """defaults < file (JSON or TOML) < --set overrides < explicit keyword arguments (non-None)."""
    data = read_config_file(path)
    # annotations are strings (from __future__ import annotations): "int", "int | None", "str"
    types = {f.name: (int if str(f.type).split(" |")[0] == "int" else str) for f in dataclasses.fields(TrainConfig)}
    for item in overrides or []:
        k, v = parse_override(item, types)
        data[k] = v
    data.update({k: v for k, v in explicit.items() if v is not None})
    return TrainConfig.from_dict(data)
