"""Wall time on this machine: one process vs Ray Data (a local Ray on this machine's cores), for the
encode step alone and for a whole `vqrec rebuild` (train on the driver, encode + evaluate on Ray).

    python -m bench.distributed [--n 100000] [--d 128] [--nq 1000] [--M 16] [--shards 4] [--queries 1000]

Data: the synthetic reference set (seed 1362) generated in memory (items and --nq users). Codebooks: PQ
trained on a 20k sample. Checks that the codes (encode step) and the published artifacts' data files and
evaluation reports (rebuild) are identical, and prints both wall times and the machine load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from vqrec.index import build_index, save_embeddings  # noqa: E402
from vqrec.index.distributed import ensure_ray, ray_encoder  # noqa: E402
from vqrec.index.store import IndexStore  # noqa: E402
from vqrec.trainers.config import TrainConfig  # noqa: E402
from vqrec.trainers.quantizers import train  # noqa: E402
from vqrec.trainers.rebuild import RebuildConfig, run_rebuild  # noqa: E402

from .data import load_synthetic  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _files(path: str) -> dict[str, str]:
    m = json.loads((Path(path) / "manifest.json").read_text())
    return {
        f: hashlib.sha256((Path(path) / f).read_bytes()).hexdigest() for f in m["files"] if f.endswith((".npy", ".txt"))
    }


def rebuild_once(
    root: str, items: str, users: str, train_cfg: dict[str, Any], queries: int, *, ray: bool, shards: int | None
) -> tuple[float, str]:
    cfg = RebuildConfig(
        root=root,
        name="bench",
        items=items,
        users=users,
        train=train_cfg,
        recall_floor=0.0,
        max_drop=1.0,
        queries=queries,
        ray=ray,
        shards=shards,
    )
    t0 = time.perf_counter()
    run_rebuild(cfg, show_progress=False, echo=lambda s: None)
    return time.perf_counter() - t0, IndexStore(root).path("bench")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--nq", type=int, default=10_000, help="users in the data set")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--queries", type=int, default=1000, help="rebuild evaluation queries ([gate] queries)")
    args = ap.parse_args(argv)
    ds = load_synthetic(args.n, args.d, args.nq, seed=1362)
    items = ds.items
    cpus = os.cpu_count()
    print(f"data: synthetic n={args.n} d={args.d} users={args.nq} seed=1362, pq{args.M}; load {_load()}")

    # 1. the encode step alone
    cb = train(items, TrainConfig(method="pq", M=args.M, max_train_points=20_000), show_progress=False)
    t0 = time.perf_counter()
    one = build_index(cb, items, show_progress=False)
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    ensure_ray(num_cpus=cpus)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist = build_index(cb, items, show_progress=False, encoder=ray_encoder(shards=args.shards))
    t_ray = time.perf_counter() - t0
    same = bool(np.array_equal(one.codes, dist.codes) and np.array_equal(one.recon_norms, dist.recon_norms))
    print(f"encode, single process: {t_one:.2f} s")
    print(f"encode, ray data ({args.shards} shards, {cpus} cpus): {t_ray:.2f} s (+ {t_init:.2f} s ray.init, once)")
    print(f"codes identical: {same}; load {_load()}")

    # 2. the whole rebuild (Ray already started above: its start-up is not counted again)
    train_cfg = {"method": "pq", "M": args.M, "max_train_points": 20_000}
    with tempfile.TemporaryDirectory(prefix="vqrec-bench-dist-") as tmp:
        save_embeddings(os.path.join(tmp, "items.npz"), items.ids, items.vectors)
        save_embeddings(os.path.join(tmp, "users.npz"), ds.users.ids, ds.users.vectors)
        files = (os.path.join(tmp, "items.npz"), os.path.join(tmp, "users.npz"))
        r_one, p_one = rebuild_once(os.path.join(tmp, "one"), *files, train_cfg, args.queries, ray=False, shards=None)
        r_ray, p_ray = rebuild_once(
            os.path.join(tmp, "ray"), *files, train_cfg, args.queries, ray=True, shards=args.shards
        )
        ev = [json.loads((Path(p) / "manifest.json").read_text())["evaluation"] for p in (p_one, p_ray)]
        same_rebuild = _files(p_one) == _files(p_ray) and ev[0] == ev[1]
    print(f"rebuild, single process: {r_one:.2f} s")
    print(f"rebuild, encode + evaluate on ray data ({args.shards} shards): {r_ray:.2f} s")
    print(f"artifact data files and evaluation identical: {same_rebuild}; load {_load()}")
    return {
        "encode_single_s": t_one,
        "encode_ray_s": t_ray,
        "ray_init_s": t_init,
        "codes_identical": same,
        "rebuild_single_s": r_one,
        "rebuild_ray_s": r_ray,
        "rebuild_identical": same_rebuild,
    }


if __name__ == "__main__":
    main()
