"""RQ-VAE / CoST settings (trainers/learned/rqvae/config.py): validation, --set overrides and flags, and the
codebook size checked against the data."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from tests.trainers.rqvae_helpers import small  # noqa: E402
from vqrec.index.errors import ConfigError  # noqa: E402
from vqrec.trainers.configfile import load_settings  # noqa: E402
from vqrec.trainers.learned import rqvae as R  # noqa: E402


def test_config_validation_and_overrides() -> None:
    with pytest.raises(ConfigError, match="loss must be one of"):
        R.RQVAEConfig(loss="l1")
    with pytest.raises(ConfigError, match="codebook_size must be a positive integer"):
        R.RQVAEConfig(codebook_size=0)
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        R.RQVAEConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_settings(R.RQVAEConfig, None, ["nope=1"])
    with pytest.raises(ConfigError, match="not a valid float"):
        load_settings(R.RQVAEConfig, None, ["temperature=warm"])
    cfg = load_settings(R.RQVAEConfig, None, ["hidden=64,32", "ema=true", "temperature=0.2"], levels=4)
    assert cfg.hidden == (64, 32) and cfg.ema is True and cfg.temperature == 0.2 and cfg.levels == 4
    with pytest.raises(ConfigError, match="exceeds the number of embeddings"):
        R.train_rqvae(as_small_embeddings(10), small(), show_progress=False)


def as_small_embeddings(n: int):  # type: ignore[no-untyped-def]
    from vqrec.index.embeddings import Embeddings

    rng = np.random.default_rng(0)
    return Embeddings(ids=[f"i{i}" for i in range(n)], vectors=rng.standard_normal((n, 8)).astype(np.float32))
