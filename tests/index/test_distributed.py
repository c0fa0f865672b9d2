"""Encoding on Ray Data (local mode) gives the single-process index byte for byte; shard merging is checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs Ray Data (the 'distributed' extra: pip install -e '.[distributed]')")

from vqrec.index import build_index, save_index  # noqa: E402
from vqrec.index.distributed import ensure_ray, merge_shards, ray_encoder  # noqa: E402
from vqrec.index.errors import ConfigError, DistributedError  # noqa: E402

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


@pytest.mark.parametrize(("kind", "metric"), [("pq", "l2"), ("rq", "cosine"), ("opq", "ip")])
def test_ray_evaluation_equals_single_process(local_ray, trained, recsys, kind, metric) -> None:
    """evaluate_index on Ray Data (blocks of queries as map_batches tasks) reports exactly what the
    single-process run reports, rerank figures included."""
    from vqrec.index.distributed import ray_eval_runner
    from vqrec.index.eval import evaluate_index

    index = build_index(trained(kind, metric), recsys.items, show_progress=False, item_vectors="float16")
    local = evaluate_index(index, recsys.items, recsys.users, nq=300, block_size=64)
    dist = evaluate_index(index, recsys.items, recsys.users, nq=300, block_size=64, runner=ray_eval_runner())
    assert dist == local
    assert "user_to_item_rerank" in local and local["item_to_item"]["nq"] == 300
    assert local["user_to_item"]["recall@10"] > 0.3  # a real evaluation, not an empty one


def test_merge_shards_checks_every_row_once(tmp_path) -> None:
    def shard(name: str, rows: list[int]) -> str:
        p = tmp_path / name
        np.savez(p, row=np.array(rows), codes=np.full((len(rows), 2), 7, np.uint8), norm=np.ones(len(rows), np.float32))
        return str(p)

    codes, norms = merge_shards([shard("a.npz", [2, 0]), shard("b.npz", [1])], 3, 2)
    assert codes.shape == (3, 2) and (codes == 7).all() and (norms == 1).all()
    with pytest.raises(DistributedError, match="rows encoded twice"):
        merge_shards([shard("c.npz", [0, 1]), shard("d.npz", [1, 2])], 3, 2)
    with pytest.raises(DistributedError, match="1 of 3 rows were not encoded"):
        merge_shards([shard("e.npz", [0, 2])], 3, 2)


def test_missing_ray_is_a_clear_error(monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):  # type: ignore[no-untyped-def]
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    from vqrec.index import distributed

    with pytest.raises(ConfigError, match=r"needs Ray Data \(the 'distributed' extra\)"):
        distributed.require_ray()


def test_cli_build_on_ray_writes_the_same_codes(tmp_path, recsys) -> None:
    import os
    import subprocess
    import sys

    from vqrec.index import save_embeddings

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


def test_ray_rebuild_equals_single_process_rebuild(local_ray, recsys, tmp_path, monkeypatch) -> None:
    """`vqrec rebuild --ray` (encode and evaluation on Ray Data) publishes what a single-process rebuild
    publishes: every data file identical byte for byte, and the same evaluation report in the manifest."""
    import json

    from typer.testing import CliRunner

    from vqrec.cli import app
    from vqrec.index import save_embeddings
    from vqrec.index.store import IndexStore
    from vqrec.trainers.rebuild import load_rebuild_config, run_rebuild

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    save_embeddings(str(tmp_path / "items.npz"), recsys.items.ids, recsys.items.vectors)
    save_embeddings(str(tmp_path / "users.npz"), recsys.users.ids, recsys.users.vectors)

    def config(root: str, extra: str = "") -> Path:
        p = tmp_path / f"{root}.toml"
        p.write_text(
            f'[index]\nroot = "{tmp_path / root}"\nname = "movies"\n'
            '[data]\nitems = "items.npz"\nusers = "users.npz"\n'
            "[train]\nmethod = 'rq'\nM = 4\nnbits = 6\nniter = 8\neval_queries = 50\n"
            "[gate]\nrecall_floor = 0.0\nmax_drop = 1.0\nqueries = 600\n" + extra
        )
        return p

    run_rebuild(load_rebuild_config(str(config("one"))), show_progress=False, echo=lambda s: None)
    # the CLI flag turns Ray on; [distributed] shards splits the rows into 4 blocks
    r = CliRunner().invoke(app, ["rebuild", "-c", str(config("ray", "[distributed]\nshards = 4\n")), "--ray", "-q"])
    assert r.exit_code == 0, r.output
    assert "in Ray (local)" in r.output  # the build step said where it ran

    one, dist = (Path(IndexStore(str(tmp_path / root)).path("movies")) for root in ("one", "ray"))
    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (one, dist))
    assert sorted(m1["files"]) == sorted(m2["files"])
    for name in m1["files"]:
        if name.endswith((".npy", ".txt")):
            assert sha(one / name) == sha(dist / name), name
    assert m1["evaluation"] == m2["evaluation"]
    assert m1["evaluation"]["nq"] == 100 and m1["evaluation"]["item_to_item"]["nq"] == 600
    # version ids are {build time}-{content hash}: the same content hash
    assert m1["index_version"].split("-")[-1] == m2["index_version"].split("-")[-1]
