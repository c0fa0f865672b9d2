"""Does spilling each item into a second list pay?  (ScaNN's SOAR: Sun et al., *SOAR: Improved Indexing for
Approximate Nearest Neighbor Search*, NeurIPS 2023.)

The measure is the partition's own: the fraction of each query's exact top-k whose list (or, spilled, either
of its two lists) the query probes, against the number of items the probed lists hold, for vqrec's partition
(``index.partition``: sphere lists for ip). An item's second list minimizes SOAR's loss on unit directions
x, primary residual r = x - c1:  ||x - c||^2 + lambda * <x - c, r>^2 / ||r||^2  (lambda 0: the second-nearest
list). Spilled lists hold more items, so coverage is compared at equal items scanned.

    python -m bench.soar --data DIR  (items.npy, users.npy, gt10.npy as bench.scale writes them)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numpy.typing import NDArray

from vqrec.index.codebooks import normalize_rows
from vqrec.index.partition import assign, train_partition

BUDGETS = (5_000, 10_000, 20_000, 40_000, 80_000)


def second_lists(
    x: NDArray[np.float32], C: NDArray[np.float32], prim: NDArray[np.int64], lam: float
) -> NDArray[np.int64]:
    """Each unit row's second list under SOAR's loss (never its primary)."""
    out = np.empty(len(x), np.int64)
    for i0 in range(0, len(x), 50_000):
        xb, p = x[i0 : i0 + 50_000], prim[i0 : i0 + 50_000]
        r = xb - C[p]
        rn2 = np.maximum(np.einsum("ij,ij->i", r, r), 1e-12)
        par = np.einsum("ij,ij->i", xb, r)[:, None] - r @ C.T  # <x - c, r> for every list c
        loss = (2.0 - 2.0 * (xb @ C.T)) + lam * par * par / rn2[:, None]
        loss[np.arange(len(xb)), p] = np.inf
        out[i0 : i0 + 50_000] = loss.argmin(axis=1)
    return out


def coverage(
    C: NDArray[np.float32],
    prim: NDArray[np.int64],
    sec: NDArray[np.int64] | None,
    users: NDArray[np.float32],
    truth: NDArray[np.int64],
    budgets: tuple[int, ...] = BUDGETS,
) -> list[float]:
    """Fraction of ``truth`` (nq, k) item rows in a probed list when each query probes its best lists (by
    <q, c>) while they hold at most each budget of items."""
    nl, nq = len(C), len(users)
    order = np.argsort(-(users @ C.T), axis=1)
    rank = np.empty_like(order)
    rank[np.arange(nq)[:, None], order] = np.arange(nl)[None, :]
    sizes = np.bincount(prim, minlength=nl) + (0 if sec is None else np.bincount(sec, minlength=nl))
    held = np.cumsum(sizes[order], axis=1)  # items held by the best p + 1 lists
    need = rank[np.arange(nq)[:, None], prim[truth]]  # lists a query must probe to reach each true item
    if sec is not None:
        need = np.minimum(need, rank[np.arange(nq)[:, None], sec[truth]])
    return [float((need < (held <= b).sum(axis=1)[:, None]).mean()) for b in budgets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder with items.npy, users.npy, gt10.npy")
    ap.add_argument("--nlist", type=int, default=2000)
    ap.add_argument("--lambdas", default="0,1,2")
    args = ap.parse_args()
    items = np.load(f"{args.data}/items.npy").astype(np.float32)
    users = np.load(f"{args.data}/users.npy").astype(np.float32)
    truth = np.load(f"{args.data}/gt10.npy")[:, :10]
    t0 = time.perf_counter()
    C = train_partition(items, args.nlist, "sphere")
    prim = assign(items, C, "sphere")
    print(f"{len(items):,} items, {args.nlist} lists ({time.perf_counter() - t0:.1f} s); coverage of the exact top-10")
    print("| lists | " + " | ".join(f"{b // 1000}k items" for b in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    print("| one each | " + " | ".join(f"{c:.3f}" for c in coverage(C, prim, None, users, truth)) + " |")
    x = normalize_rows(items)
    for lam in (float(v) for v in args.lambdas.split(",")):
        cov = coverage(C, prim, second_lists(x, C, prim, lam), users, truth)
        print(f"| spilled, lambda {lam:g} | " + " | ".join(f"{c:.3f}" for c in cov) + " |")


if __name__ == "__main__":
    main()
