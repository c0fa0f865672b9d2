"""rebuild.toml: the RebuildConfig dataclass, its tables (section -> key -> field) and the loader."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vqrec.index.errors import ConfigError, VqrecError

from ..configfile import check_types, read_config_file


@dataclass
class RebuildConfig:
    root: str
    name: str
    items: str
    users: str | None = None
    item_ids: str | None = None
    user_ids: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    max_relative_mse_increase: float = 0.1
    recall_floor: float = 0.8
    max_drop: float = 0.02
    k: int = 10
    queries: int = 500
    notify_url: str | None = None
    admin_key_env: str = "VQREC_ADMIN_KEY"
    keep: int = 5
    ray: bool = False
    ray_address: str | None = None
    shards: int | None = None


# the tables of rebuild.toml: section -> {key: RebuildConfig field}; the types are the fields' (configfile)
_SECTIONS: dict[str, dict[str, str]] = {
    "index": {"root": "root", "name": "name"},
    "data": {"items": "items", "users": "users", "item_ids": "item_ids", "user_ids": "user_ids"},
    "drift": {"max_relative_mse_increase": "max_relative_mse_increase"},
    "gate": {"recall_floor": "recall_floor", "max_drop": "max_drop", "k": "k", "queries": "queries"},
    "notify": {"url": "notify_url", "admin_key_env": "admin_key_env"},
    "store": {"keep": "keep"},
    "distributed": {"ray": "ray", "address": "ray_address", "shards": "shards"},
}


def load_rebuild_config(path: str) -> RebuildConfig:
    """Read and validate rebuild.toml (relative data paths are taken from the file's directory)."""
    data = read_config_file(path, fmt="toml")
    unknown = sorted(set(data) - {*_SECTIONS, "train"})
    if unknown:
        raise ConfigError(f"{path}: unknown sections {unknown}; known: {sorted([*_SECTIONS, 'train'])}.")
    values = _read_sections(path, data)
    base = os.path.dirname(os.path.abspath(path))
    for attr in ("root", "items", "users", "item_ids", "user_ids"):
        if values.get(attr):
            values[attr] = os.path.join(base, os.path.expanduser(values[attr]))
    explicit_ray = "ray" in values
    cfg = RebuildConfig(**values)
    _check_values(path, cfg)
    if cfg.ray_address and not explicit_ray:
        cfg.ray = True  # an address means Ray, unless the config says ray = false
    return cfg


def _read_sections(path: str, data: dict[str, Any]) -> dict[str, Any]:
    """The RebuildConfig fields found in the tables, typed; [train] checked by TrainConfig."""
    from ..config import TrainConfig

    values: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table.")
        bad = sorted(set(table) - set(keys))
        if bad:
            raise ConfigError(f"{path}: unknown keys {bad} in [{section}]; known: {sorted(keys)}.")
        found = {keys[key]: v for key, v in table.items()}
        where = {attr: f"{path}: [{section}] {key}" for key, attr in keys.items()}
        check_types(RebuildConfig, found, where=where.__getitem__)
        values.update(found)
    for req, section in (("root", "index"), ("name", "index"), ("items", "data")):
        if req not in values:
            raise ConfigError(f"{path}: [{section}] {req} is required.")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{path}: [train] must be a table.")
    TrainConfig.from_dict(dict(train))  # validate now: a bad key is a config error, before any work
    values["train"] = dict(train)
    return values


def _check_values(path: str, cfg: RebuildConfig) -> None:
    """The ranges, and the name a plain store name; ConfigError naming the table otherwise."""
    from vqrec.index.store import IndexStore

    try:
        IndexStore(cfg.root).name_dir(cfg.name)  # the name must be a plain store name (no '/', no '..')
    except VqrecError as e:
        raise ConfigError(f"{path}: [index] name: {e}") from None
    if cfg.max_relative_mse_increase < 0:
        raise ConfigError(f"{path}: [drift] max_relative_mse_increase must be >= 0.")
    if not 0 <= cfg.recall_floor <= 1 or cfg.max_drop < 0:
        raise ConfigError(f"{path}: [gate] recall_floor must be in 0..1 and max_drop >= 0.")
    if cfg.k < 1 or cfg.queries < 1 or cfg.keep < 1:
        raise ConfigError(f"{path}: [gate] k, [gate] queries and [store] keep must be >= 1.")
    if cfg.shards is not None and cfg.shards < 1:
        raise ConfigError(f"{path}: [distributed] shards must be >= 1.")
