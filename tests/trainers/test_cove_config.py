"""COVE / BPR-MF settings (trainers/learned/cove/config.py): validation, and loading from files, --set and flags."""

from __future__ import annotations

import json

import pytest

from vqrec.index import ConfigError

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from vqrec.trainers.configfile import load_settings  # noqa: E402
from vqrec.trainers.learned.cove import CoveConfig  # noqa: E402


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dim": 0}, "dim must be a positive integer, got 0"),
        ({"epochs": 2.5}, "epochs must be a positive integer"),
        ({"batch_size": True}, "batch_size must be a positive integer"),
        ({"negatives": 0}, "negatives must be a positive integer"),
        ({"levels": ()}, "levels must be a non-empty list"),
        ({"levels": (10, 100)}, "levels go from fine to coarse"),
        ({"levels": (100, 1)}, "every level needs at least 2 codes"),
        ({"levels": "100,x"}, "levels must be codebook sizes like 100,10"),
        ({"levels": (100.0,)}, "levels must be a non-empty list of integers"),
        ({"alpha": -1}, "alpha must be >= 0"),
        ({"omega": float("nan")}, "omega must be a finite number"),
        ({"lr": 0}, "lr must be > 0"),
        ({"reg": "0.1"}, "reg must be a finite number"),
        ({"init_std": 0}, "init_std must be a finite number > 0"),
        ({"quantize": "yes"}, "quantize must be true or false"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        CoveConfig(**kw)


def test_config_sources_and_precedence(tmp_path):
    cfg = CoveConfig()
    assert cfg.levels == (100, 10) and cfg.quantize and cfg.kind == "cove"
    (tmp_path / "c.json").write_text(json.dumps({"levels": [64, 8], "alpha": 1, "epochs": 5, "seed": 3}))
    (tmp_path / "c.toml").write_text("levels = [32, 4]\nomega = 0.5\nquantize = false\n")
    c = load_settings(
        CoveConfig, str(tmp_path / "c.json"), ["epochs=7", "levels=50,5", "dead_code_reset=false"], seed=9
    )
    assert (c.levels, c.alpha, c.epochs, c.seed, c.dead_code_reset) == ((50, 5), 1.0, 7, 9, False)
    assert isinstance(c.alpha, float)
    t = load_settings(CoveConfig, str(tmp_path / "c.toml"))
    assert (t.levels, t.omega, t.quantize, t.kind) == ((32, 4), 0.5, False, "bpr")
    assert load_settings(CoveConfig, None, ["quantize=0"], quantize=None).quantize is False
    assert CoveConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=r"unknown key 'alpah'"):
        load_settings(CoveConfig, None, ["alpah=1"])
    with pytest.raises(ConfigError, match=r"--set epochs: 'ten' is not a valid int"):
        load_settings(CoveConfig, None, ["epochs=ten"])
    with pytest.raises(ConfigError, match=r"--set quantize: 'maybe' is not a valid boolean"):
        load_settings(CoveConfig, None, ["quantize=maybe"])
    with pytest.raises(ConfigError, match=r"unknown config keys \['K'\]"):
        CoveConfig.from_dict({"K": 3})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(CoveConfig, str(tmp_path / "nope.json"))
