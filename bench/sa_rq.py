"""Would score-aware (anisotropic) encoding help RQ codes as it helps PQ's?  A numpy prototype of RQ's beam search
under ScaNN's loss (Guo et al., ICML 2020): for a unit item direction y and residual r = y - y_hat, minimize
||r||^2 + (eta - 1) <r, y>^2 with eta = (d - 1) T^2 / (1 - T^2), as index/score_aware.py does for PQ.

    python -m bench.sa_rq --codebooks DIR --data DIR [--T 0.1,0.2]

On RQ16x8 codebooks (`vqrec train rq --M 16`) it reports recall@10 of 1,000 users over a 200k-item sample of
the data, norm-explicit scores, beside T = 0 (plain codes from the same search). numpy: ~8 minutes per T.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numpy.typing import NDArray

from vqrec.index.codebooks import Codebooks
from vqrec.index.eval import recall_at_k


def encode_sa(y: NDArray[np.float32], C: NDArray[np.float32], beam: int, w: float) -> NDArray[np.int64]:
    """Codes (n, M) of unit rows y by beam search on ||r - c||^2 + w <r - c, y>^2 (w = eta - 1; 0: plain)."""
    n, (M, K, d) = len(y), C.shape
    cn = np.einsum("mkd,mkd->mk", C, C)
    s = np.zeros((n, 1, d), np.float32)
    codes = np.zeros((n, 1, 0), np.int64)
    for m in range(M):
        nb = s.shape[1]
        r = y[:, None, :] - s
        err = np.einsum("nbd,nbd->nb", r, r)[:, :, None] - 2 * (r @ C[m].T) + cn[m][None, None, :]
        par = np.einsum("nbd,nd->nb", r, y)[:, :, None] - (y @ C[m].T)[:, None, :]
        keep = np.argsort((err + w * par * par).reshape(n, nb * K), axis=1, kind="stable")[:, : min(beam, nb * K)]
        parent, j = keep // K, keep % K
        s = np.take_along_axis(s, parent[:, :, None], axis=1) + C[m][j]
        codes = np.concatenate([np.take_along_axis(codes, parent[:, :, None], axis=1), j[:, :, None]], axis=2)
    return codes[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codebooks", required=True, help="an rq codebook artifact")
    ap.add_argument("--data", required=True, help="folder with items.npy and users.npy")
    ap.add_argument("--T", default="0.1,0.2", help="score-aware thresholds to try beside 0")
    args = ap.parse_args()
    cb = Codebooks.load(args.codebooks)
    C = cb.centroids
    items = np.load(f"{args.data}/items.npy", mmap_mode="r")
    users = np.load(f"{args.data}/users.npy")[:1000].astype(np.float32)
    rows = np.sort(np.random.default_rng(1234).choice(len(items), min(200_000, len(items)), replace=False))
    xb = np.ascontiguousarray(items[rows], dtype=np.float32)
    norms = np.linalg.norm(xb, axis=1)
    y = (xb / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    truth = np.argsort(-(users @ xb.T), axis=1)[:, :10]
    for T in [0.0, *(float(t) for t in args.T.split(","))]:
        eta = (cb.d - 1) * T * T / (1 - T * T) if T else 1.0
        t0 = time.perf_counter()
        codes = np.concatenate(
            [encode_sa(y[i : i + 10_000], C, cb.beam_size, eta - 1) for i in range(0, len(y), 10_000)]
        )
        dec = C[np.arange(cb.M), codes].sum(axis=1)
        scores = (users @ dec.T) * (norms / np.maximum(np.linalg.norm(dec, axis=1), 1e-12))[None]
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        recall = recall_at_k(top, truth, 10)
        print(f"T {T:g} (eta {eta:.2f}): recall@10 {recall:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
