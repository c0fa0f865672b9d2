"""The one way settings enter a trainer or the rebuild job: a frozen (or plain) dataclass, filled from
defaults < a JSON/TOML file < ``--set key=value`` < explicit keyword arguments, and typed from its fields.

``load_settings(TrainConfig, path, ["niter=50"], M=16)`` reads the file, parses each ``--set`` value by the
annotation of its field (int, float, bool as true/false, yes/no, on/off, 1/0; a tuple of ints as ``100,10``;
a string as given), and builds the dataclass, whose ``__post_init__`` checks the values. ``check_types``
does the same typing for values that arrive already parsed (the tables of ``rebuild.toml``). Every error is
a ConfigError naming the key, the value and, for unknown keys, the known ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from typing import Any, TypeVar

from vqrec.index.errors import ConfigError

C = TypeVar("C")


def field_types(cls: type) -> dict[str, Any]:
    """field name -> its annotation, resolved (``int | None``, ``tuple[int, ...]``, ...)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base(tp: Any) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


def _name(tp: Any) -> str:
    if tp is bool:
        return "boolean (true/false)"
    if typing.get_origin(tp) is tuple:
        return "list of integers (e.g. 100,10)"
    return getattr(tp, "__name__", str(tp))


def parse_bool(raw: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case); ValueError otherwise."""
    s = raw.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """``raw`` (a ``--set`` value) parsed as the field's annotation ``tp``."""
    base, _ = _base(tp)
    try:
        if base is bool:
            return parse_bool(raw)
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
        if typing.get_origin(base) is tuple:
            return tuple(int(p) for p in raw.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"--set {key}: {raw!r} is not a valid {_name(base)}.") from None
    return raw


def parse_overrides(cls: type, overrides: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: typed value} for the fields of ``cls``."""
    types_ = field_types(cls)
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in types_:
            raise ConfigError(f"--set: unknown key {key!r}; known keys: {sorted(types_)}.")
        out[key] = parse_value(key, raw, types_[key])
    return out


def check_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Every value already parsed (from TOML or JSON) has its field's type: a bool is not an int, an int is
    a float, a list of ints is a tuple field; ``where(key)`` names the place in the error."""
    types_ = field_types(cls)
    for key, v in values.items():
        base, optional = _base(types_[key])
        if v is None and optional:
            continue
        origin = typing.get_origin(base)
        if base is float:
            ok = isinstance(v, int | float) and not isinstance(v, bool)
        elif base is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif origin is tuple:
            ok = isinstance(v, list | tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        elif origin is dict or base is dict:
            ok = isinstance(v, dict)
        else:
            ok = isinstance(v, base)
        if not ok:
            raise ConfigError(f"{where(key)} has the wrong type ({v!r}): expected a {_name(base)}.")


def read_config_file(path: str | None, fmt: str | None = None) -> dict[str, Any]:
    """The settings in a JSON or TOML config file (``fmt`` "json" / "toml", default by extension); {} for
    no file."""
    if not path:
        return {}
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        if fmt == "toml" or (fmt is None and path.endswith(".toml")):
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


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """``cls(**data)`` for a config dataclass, with unknown keys named (and the known ones listed)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}.")
    return cls(**data)


def load_settings(
    cls: type[C],
    path: str | None = None,
    overrides: list[str] | None = None,
    *,
    base: dict[str, Any] | None = None,
    **explicit: Any,
) -> C:
    """defaults (or ``base``, e.g. a resumed checkpoint's config) < file (JSON or TOML) < ``--set`` overrides
    < explicit keyword arguments (those not None)."""
    data: dict[str, Any] = {**(base or {}), **read_config_file(path)}
    data.update(parse_overrides(cls, overrides))
    data.update({k: v for k, v in explicit.items() if v is not None})
    return config_from_dict(cls, data)
