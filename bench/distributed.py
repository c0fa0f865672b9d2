"""Wall time of the encode step: one process vs Ray Data (local Ray on this machine's cores).

    python -m bench.distributed [--n 100000] [--d 128] [--M 16] [--shards 4]

Data: the synthetic reference set (seed 1362) generated in memory. Codebooks: PQ trained on a 20k sample.
Checks that the codes are identical and prints both wall times and the machine load.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from index import build_index  # noqa: E402
from index.distributed import ensure_ray, ray_encoder  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.quantizers import train  # noqa: E402

from .data import load_synthetic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    ds = load_synthetic(args.n, args.d, 10, seed=1362)
    items = ds.items
    cb = train(items, TrainConfig(method="pq", M=args.M, max_train_points=20_000), show_progress=False)
    print(f"data: synthetic n={args.n} d={args.d} seed=1362, pq{args.M}; load {os.getloadavg()}")
    t0 = time.perf_counter()
    one = build_index(cb, items, show_progress=False)
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    ensure_ray(num_cpus=os.cpu_count())
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist = build_index(cb, items, show_progress=False, encoder=ray_encoder(shards=args.shards))
    t_ray = time.perf_counter() - t0
    same = np.array_equal(one.codes, dist.codes) and np.array_equal(one.recon_norms, dist.recon_norms)
    print(f"single process: {t_one:.2f} s")
    print(f"ray data ({args.shards} shards, {os.cpu_count()} cpus): {t_ray:.2f} s (+ {t_init:.2f} s ray.init)")
    print(f"codes identical: {same}; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
