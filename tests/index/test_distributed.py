"""Encoding on Ray Data (local mode) gives the single-process index byte for byte; shard merging is checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs Ray Data (the 'distributed' extra: pip install -e '.[distributed]')")

from index import build_index, save_index  # noqa: E402
from index.distributed import ensure_ray, merge_shards, ray_encoder  # noqa: E402
from index.errors import ConfigError  # noqa: E402

# Ray warns about its own deprecated settings when its DataContext is copied into tasks
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

FILES = ("codes.npy", "item_norms.npy", "item_zero.npy", "item_scale.npy", "item_ids.txt", "user_codes.npy")


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["pq", "rq"])
def test_ray_build_equals_single_process_byte_for_byte(local_ray, trained, recsys, tmp_path, kind) -> None:
    cb = trained(kind, "ip")
    single = build_index(cb, recsys.items, users=recsys.users, user_storage="codes", show_progress=False)
    shards = tmp_path / "shards"
    dist = build_index(
        cb,
        recsys.items,
        users=recsys.users,
        user_storage="codes",
        show_progress=False,
        encoder=ray_encoder(shards=5, batch_size=300, shard_dir=str(shards)),
    )
    np.testing.assert_array_equal(dist.codes, single.codes)
    np.testing.assert_array_equal(dist.recon_norms, single.recon_norms)
    np.testing.assert_array_equal(dist.users.codes, single.users.codes)
    assert len(list(shards.glob("items-*.npz"))) >= 5  # really sharded: at least one file per block
    a, b = tmp_path / "single", tmp_path / "ray"
    save_index(single, str(a))
    save_index(dist, str(b))
    for name in FILES:
        assert sha(a / name) == sha(b / name), name


def test_merge_shards_checks_every_row_once(tmp_path) -> None:
    def shard(name: str, rows: list[int]) -> str:
        p = tmp_path / name
        np.savez(p, row=np.array(rows), codes=np.full((len(rows), 2), 7, np.uint8), norm=np.ones(len(rows), np.float32))
        return str(p)

    codes, norms = merge_shards([shard("a.npz", [2, 0]), shard("b.npz", [1])], 3, 2)
    assert codes.shape == (3, 2) and (codes == 7).all() and (norms == 1).all()
    with pytest.raises(ConfigError, match="rows encoded twice"):
        merge_shards([shard("c.npz", [0, 1]), shard("d.npz", [1, 2])], 3, 2)
    with pytest.raises(ConfigError, match="1 of 3 rows were not encoded"):
        merge_shards([shard("e.npz", [0, 2])], 3, 2)


def test_missing_ray_is_a_clear_error(monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):  # type: ignore[no-untyped-def]
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    from index import distributed

    with pytest.raises(ConfigError, match=r"needs Ray Data \(the 'distributed' extra\)"):
        distributed._ray()


def test_cli_build_on_ray_writes_the_same_codes(tmp_path, recsys) -> None:
    import os
    import subprocess
    import sys

    from index import save_embeddings

    emb = tmp_path / "items.npz"
    save_embeddings(str(emb), recsys.items.ids, recsys.items.vectors)
    exe = str(Path(sys.executable).parent / "vqrec")
    env = {**os.environ, "VQREC_PROGRESS": "0"}
    env.pop("RAY_ADDRESS", None)

    def run(*args: str) -> None:
        p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr

    run("train", "pq", "-e", str(emb), "-o", str(tmp_path / "cb"), "-M", "4", "-q")
    common = ["--codebooks", str(tmp_path / "cb"), "--items", str(emb), "--no-eval", "-q"]
    run("build", *common, "-o", str(tmp_path / "one"))
    run("build", *common, "-o", str(tmp_path / "ray"), "--ray", "--shards", "3")
    assert sha(tmp_path / "one" / "codes.npy") == sha(tmp_path / "ray" / "codes.npy")
