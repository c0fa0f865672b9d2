"""Fixtures of the rebuild tests (test_rebuild.py, test_rebuild_config.py): the embeddings, and a store
holding an active v1 built by the rebuild job itself (once per session; each test copies it)."""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
import pytest

from tests.conftest import recsys_arrays
from tests.trainers.rebuild_helpers import rebuild, write_config
from vqrec.index.embeddings import save_embeddings


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("rebuild_data")
    xb, xq, _ = recsys_arrays(n=1500, d=32, nq=100)
    rng = np.random.default_rng(7)
    ids = [f"i{i}" for i in range(len(xb))]
    uids = [f"u{i}" for i in range(len(xq))]
    save_embeddings(str(d / "items_v1.npz"), ids, xb)
    save_embeddings(str(d / "users.npz"), uids, xq)
    # small drift: the same catalogue, slightly moved
    save_embeddings(str(d / "items_v2.npz"), ids, xb + 0.01 * rng.standard_normal(xb.shape).astype(np.float32))
    # large drift: a different catalogue, stretched along a few dimensions
    xb3, _, _ = recsys_arrays(n=1500, d=32, nq=1, seed=99)
    xb3[:, :8] *= 6.0
    save_embeddings(str(d / "items_v3.npz"), ids, xb3)
    # a store holding an active v1, built by the rebuild job itself
    root = d / "store_v1"
    cfg = write_config(d / "v1.toml", root, str(d / "items_v1.npz"), str(d / "users.npz"))
    r = rebuild(cfg)
    assert r.returncode == 0, r.stderr
    return {"dir": d, "root_v1": root, "xq": xq}


@pytest.fixture
def store_root(data: dict[str, Any], tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "store"
    shutil.copytree(data["root_v1"], root)
    return root
