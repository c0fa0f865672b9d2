"""Semantic-ID tokenizers on real data: RQ-VAE (mse) vs CoST (contrastive), several seeds.

    python -m bench.semantic_ids --embeddings ../shared/data/ml-100k-als64/items.npy --seeds 5 --out als.json
    python -m bench.semantic_ids --embeddings titles.npy --seeds 5 --out titles.json   (from `vqrec embed`)

For each loss and seed: training time, utilization per level, collision rate before dedup, reconstruction
error, and neighbourhood preservation (share of each item's exact top-10 cosine neighbours with the same
first 1 / 2 / 3 codes), then mean +- std over seeds. Config: the trainer's defaults plus --set overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vqrec.index.embeddings import load_embeddings  # noqa: E402
from vqrec.trainers.configfile import load_settings  # noqa: E402
from vqrec.trainers.learned.rqvae import RQVAEConfig, train_rqvae  # noqa: E402


def summarize(runs: list[dict]) -> dict[str, str]:
    keys = sorted({k for r in runs for k in r if isinstance(r[k], int | float)})
    out = {}
    for k in keys:
        vals = [r[k] for r in runs]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[k] = f"{statistics.mean(vals):.4f} ± {sd:.4f}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--losses", default="mse,contrastive")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--out", default=None, help="write the per-run figures and the summary as JSON")
    args = ap.parse_args()
    emb = load_embeddings(args.embeddings)
    print(f"data: {args.embeddings} ({emb.n} x {emb.d}); machine load {os.getloadavg()}")
    result: dict = {"data": args.embeddings, "n": emb.n, "d": emb.d, "runs": {}, "summary": {}}
    for loss in args.losses.split(","):
        runs = []
        for seed in range(args.seeds):
            cfg = load_settings(RQVAEConfig, None, args.overrides, loss=loss, seed=seed)
            t0 = time.perf_counter()
            tok, _ = train_rqvae(emb, cfg, show_progress=False)
            q = tok.report["quality"]
            run = {
                "seed": seed,
                "train_seconds": tok.report["train_seconds"],
                "wall_seconds": round(time.perf_counter() - t0, 1),
                "min_utilization": min(lv["utilization"] for lv in q["levels"]),
                "collision_rate": q["collisions_before_dedup"]["collision_rate"],
                "max_suffix": q["max_suffix"],
                "collisions_after_dedup": q["collisions_after_dedup"],
                "relative_mse": q["reconstruction"]["relative_mse"],
                **{k: v for k, v in q["neighbourhood"].items() if "@" in k},
            }
            runs.append(run)
            print(loss, json.dumps(run), flush=True)
        result["runs"][loss] = runs
        result["summary"][loss] = summarize([{k: v for k, v in r.items() if k != "seed"} for r in runs])
        result["config"] = cfg.to_dict() | {"seed": list(range(args.seeds)), "loss": args.losses}
    print(f"\nmean ± std over {args.seeds} seeds ({args.embeddings}, {emb.n} items, defaults + {args.overrides})")
    keys = list(next(iter(result["summary"].values())))
    print(f"{'figure':<26}" + "".join(f"{loss:>22}" for loss in result["summary"]))
    for k in keys:
        print(f"{k:<26}" + "".join(f"{result['summary'][loss][k]:>22}" for loss in result["summary"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
