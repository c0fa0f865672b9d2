"""TrainConfig validation and load_settings precedence: defaults < file < --set < explicit keywords."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vqrec.index import ConfigError
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.configfile import load_settings


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "ivf"}, r"method must be one of \['pq', 'opq', 'rq', 'auto'\], got 'ivf'"),
        ({"metric": "dot"}, r"metric must be one of \['ip', 'cosine', 'l2'\], got 'dot'"),
        ({"norm": "none"}, r"norm must be one of \['auto', 'explicit', 'joint'\], got 'none'"),
        ({"nbits": 0}, "nbits must be in 1..8"),
        ({"nbits": 9}, "nbits must be in 1..8"),
        ({"M": 0}, "M must be a positive integer, got 0"),
        ({"M": -2}, "M must be a positive integer"),
        ({"M": 8.0}, "M must be a positive integer, got 8.0"),
        ({"M": True}, "M must be a positive integer"),
        ({"M": 257}, "M must be at most 256"),
        ({"niter": 0}, "niter must be a positive integer"),
        ({"beam_size": 0}, "beam_size must be a positive integer"),
        ({"train_beam_size": 0}, "train_beam_size must be a positive integer"),
        ({"eval_queries": "10"}, "eval_queries must be a positive integer"),
    ],
)
def test_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


@pytest.mark.parametrize("kw", [{"nbits": "6"}, {"nbits": 6.0}, {"nbits": True}, {"seed": "x"}])
def test_types_of_nbits_and_seed_are_checked(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        TrainConfig.from_dict(kw)


def test_frozen_keyword_only_defaults():
    cfg = TrainConfig()
    assert (cfg.method, cfg.M, cfg.nbits, cfg.metric, cfg.seed) == ("pq", 16, 8, "ip", 1234)
    assert cfg.ksub == 256
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.M = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        TrainConfig("pq")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("metric", "norm", "explicit"),
    [
        ("ip", "auto", True),
        ("l2", "auto", False),
        ("cosine", "auto", False),
        ("l2", "explicit", True),
        ("ip", "joint", False),
        ("cosine", "explicit", False),
    ],
)
def test_norm_explicit(metric, norm, explicit):
    assert TrainConfig(metric=metric, norm=norm).norm_explicit is explicit


def test_d_not_divisible_by_M_lists_valid_M():
    with pytest.raises(ConfigError, match=r"d \(32\) must be divisible by M \(5\).*\[1, 2, 4, 8, 16, 32\]"):
        TrainConfig(M=5).check_dim(32)
    with pytest.raises(ConfigError, match=r"valid M for d=12: \[1, 2, 3, 4, 6, 12\]"):
        TrainConfig(method="opq", M=5).check_dim(12)
    TrainConfig(method="rq", M=5).check_dim(32)  # rq stages live in the full space


def test_from_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(method="rq", M=4, nbits=6, beam_size=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match=r"unknown config keys \['Mm', 'bits'\]; known keys: \[.*'nbits'"):
        TrainConfig.from_dict({"Mm": 4, "bits": 6, "nbits": 6})


# ---- load_settings --------------------------------------------------------------------------------


@pytest.fixture(params=["json", "toml"])
def config_file(request, tmp_path):
    if request.param == "json":
        p = tmp_path / "pq.json"
        p.write_text(json.dumps({"method": "opq", "M": 4, "nbits": 6, "metric": "cosine", "niter": 7}))
    else:
        p = tmp_path / "pq.toml"
        p.write_text('method = "opq"\nM = 4\nnbits = 6\nmetric = "cosine"\nniter = 7\n')
    return str(p)


def test_load_config_file(config_file):
    cfg = load_settings(TrainConfig, config_file)
    assert (cfg.method, cfg.M, cfg.nbits, cfg.metric, cfg.niter) == ("opq", 4, 6, "cosine", 7)
    assert cfg.beam_size == TrainConfig().beam_size  # untouched keys keep their defaults


def test_precedence(config_file):
    # defaults < file < --set < explicit keyword arguments (None means "not given")
    cfg = load_settings(TrainConfig, config_file, ["M=8", "norm=joint", "seed=7"], M=2, niter=None, seed=None)
    assert cfg.M == 2  # explicit beats --set beats file
    assert cfg.seed == 7  # --set beats the default; explicit None does not override
    assert cfg.niter == 7  # file beats the default; explicit None does not override
    assert cfg.norm == "joint" and cfg.nbits == 6 and cfg.method == "opq"
    assert load_settings(TrainConfig, config_file, ["M=8"]).M == 8
    assert load_settings(TrainConfig, None, ["M=8"]).M == 8 and load_settings(TrainConfig).M == 16
    assert load_settings(TrainConfig, config_file, ["metric=l2"], metric="ip").metric == "ip"


def test_set_value_containing_equals_is_kept_whole():
    with pytest.raises(ConfigError, match=r"method must be one of .* got 'rq=x'"):
        load_settings(TrainConfig, None, ["method=rq=x"])


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("M", r"--set expects key=value, got 'M'"),
        ("bogus=1", r"--set: unknown key 'bogus'; known keys: \[.*'M'"),
        ("M=eight", r"--set M: 'eight' is not a valid int"),
        ("M=0", "M must be a positive integer"),
    ],
)
def test_bad_overrides(item, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(TrainConfig, None, [item])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.json"):
        load_settings(TrainConfig, str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{M: 4")
    with pytest.raises(ConfigError, match=r"bad\.json: cannot parse config"):
        load_settings(TrainConfig, str(bad))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("M = = 4")
    with pytest.raises(ConfigError, match=r"bad\.toml: cannot parse config"):
        load_settings(TrainConfig, str(bad_toml))
    arr = tmp_path / "list.json"
    arr.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"list\.json: config must be an object"):
        load_settings(TrainConfig, str(arr))
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"M": 4, "learning_rate": 0.1}')
    with pytest.raises(ConfigError, match=r"unknown config keys \['learning_rate'\]"):
        load_settings(TrainConfig, str(unknown))


def test_niter_defaults_per_method_and_is_recorded():
    # faiss's own defaults: 25 k-means iterations for PQ, 10 per residual stage (same recall on
    # ml-100k at 16 bytes, 2.7x faster RQ training)
    assert TrainConfig(method="pq").niter == 25 and TrainConfig(method="opq").niter == 25
    assert TrainConfig(method="rq").niter == 10
    assert TrainConfig(method="rq", niter=30).niter == 30
    assert TrainConfig(method="rq").to_dict()["niter"] == 10
    assert load_settings(TrainConfig, None, ["niter=8"], method="rq").niter == 8


# ---- one loader for every config dataclass ------------------------------------------------------
def test_overrides_are_typed_from_the_dataclass_fields() -> None:
    from vqrec.trainers.configfile import parse_overrides
    from vqrec.trainers.rebuild import RebuildConfig

    got = parse_overrides(TrainConfig, ["M=8", "niter=5", "norm=joint"])
    assert got == {"M": 8, "niter": 5, "norm": "joint"}
    got = parse_overrides(RebuildConfig, ["max_drop=0.5", "ray=yes", "shards=3", "train=x"])
    assert got["max_drop"] == 0.5 and got["ray"] is True and got["shards"] == 3
    with pytest.raises(ConfigError, match=r"--set ray: 'perhaps' is not a valid boolean"):
        parse_overrides(RebuildConfig, ["ray=perhaps"])
    with pytest.raises(ConfigError, match=r"--set max_drop: 'lots' is not a valid float"):
        parse_overrides(RebuildConfig, ["max_drop=lots"])


def test_check_types_names_the_place_and_the_expected_type() -> None:
    from vqrec.trainers.configfile import check_types
    from vqrec.trainers.rebuild import RebuildConfig

    check_types(RebuildConfig, {"k": 5, "max_drop": 1, "ray": False, "users": None, "train": {}}, where=str)
    for key, value, expected in (("k", True, "int"), ("k", 2.5, "int"), ("max_drop", "0.1", "float"),
                                 ("ray", 1, "boolean"), ("root", 3, "str"), ("train", [], "dict")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"\[here\] {key} has the wrong type .*expected a {expected}"):
            check_types(RebuildConfig, {key: value}, where=lambda k: f"[here] {k}")


def test_every_config_parser_is_the_one_in_configfile() -> None:
    """No module parses --set values or reads config files on its own (there were four loaders)."""
    root = Path(__file__).resolve().parents[2]
    own = root / "trainers" / "configfile.py"
    for folder in ("trainers", "vqrec", "index", "service"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path != own:
                assert "--set expects" not in text and "tomllib.load(" not in text, path
