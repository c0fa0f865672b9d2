"""COVE vs plain BPR-MF on ml-100k leave-one-out, then both served at 16 bytes per item.

    python -m bench.cove [--seeds 5] [--out /tmp/vqrec-bench-cove-<time>.json]

1. For seeds 0..N-1: train COVE (``vqrec train cove`` defaults) and plain BPR-MF (``vqrec train bpr``, the
   same trainer, budget and seed with quantize=false) on ml-100k train.tsv; leave-one-out HR@10 and NDCG@10
   on test.tsv with the training items excluded, by exact inner-product search. Table: per run and mean ± std
   (sample std, ddof=1), with training seconds.
2. The COVE (and, for comparison, BPR) artifacts go through the real CLI: ``vqrec train {pq,opq,rq} -M 16``
   (seed 0; rq only for the other seeds) on their item embeddings (users as held-out queries), ``vqrec build
   --users``, one ``vqrec serve`` on a free 127.0.0.1 port (bounded waits, always stopped), and every user is
   queried over HTTP (POST /v1/indexes/{name}/recommend, k=10, exclude_item_ids = the user's training items).
   Served HR@10 and its ratio to the exact HR@10 of the same embeddings (target >= 0.99), per run and
   mean ± std over the seeds.

Results are printed and written as JSON under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import DATA_ROOT, REPO, K
from .serving import serve
from .timing import log

METHODS = ("pq", "opq", "rq")
CODE_BYTES = 16


def _cli(*args: str, timeout: float = 600.0) -> str:
    env = {**os.environ, "VQREC_PROGRESS": "0", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "vqrec", *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def _mean_std(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 4)}


def compare(seeds: int, train_tsv: str, test_tsv: str, work: Path) -> dict[str, Any]:
    from vqrec.trainers.learned.cove import CoveConfig, read_heldout, read_interactions, train_cove

    data = read_interactions(train_tsv)
    held = read_heldout(test_tsv)
    runs: dict[str, list[dict[str, Any]]] = {"cove": [], "bpr": []}
    for seed in range(seeds):
        for kind in ("cove", "bpr"):
            cfg = CoveConfig(seed=seed, quantize=kind == "cove")
            log(f"train {kind} seed {seed}")
            r = train_cove(data, cfg, heldout=held, show_progress=False)
            ev = r.report["eval"]
            row = {
                "seed": seed,
                f"hr@{K}": ev[f"hr@{K}"],
                f"ndcg@{K}": ev[f"ndcg@{K}"],
                "train_seconds": r.report["train_seconds"],
            }
            if kind == "cove":
                q = r.report["quantization"]
                row["tree"] = all(q[s]["tree"]["is_tree"] for s in q)
                row["usage"] = {s: [(lv["used"], lv["codes"], lv["perplexity"]) for lv in q[s]["levels"]] for s in q}
            r.save(str(work / f"{kind}_s{seed}"), overwrite=True)
            runs[kind].append(row)
            log(f"  {row}")
    cfg_used = {k: CoveConfig(quantize=k == "cove").to_dict() for k in runs}
    summary = {
        kind: {m: _mean_std([r[m] for r in rows]) for m in (f"hr@{K}", f"ndcg@{K}", "train_seconds")}
        for kind, rows in runs.items()
    }
    return {"config": cfg_used, "runs": runs, "summary": summary, "users": len(held)}


def served(work: Path, train_tsv: str, test_tsv: str, seeds: int) -> dict[str, Any]:
    """Each model's embeddings -> ``vqrec train {pq,opq,rq} -M 16`` + ``vqrec build --users`` -> one ``vqrec
    serve``; every user queried over HTTP with their training items excluded. Seed 0: pq, opq and rq; the
    other seeds: rq (the most accurate 16-byte index), so the served/exact ratio is seen over every seed."""
    import httpx

    from vqrec.trainers.learned.cove import read_heldout, read_interactions

    seen = read_interactions(train_tsv).seen()
    held = read_heldout(test_tsv)
    users_q = [u for u in held if u in seen]
    root = work / "indexes"
    out: dict[str, Any] = {"code_bytes_per_item": CODE_BYTES, "queries": len(users_q), "indexes": {}}
    for seed in range(seeds):
        for model in ("cove", "bpr"):
            art = work / f"{model}_s{seed}"
            exact = json.loads((art / "manifest.json").read_text())["report"]["eval"][f"hr@{K}"]
            items, users = str(art / "items.npy"), str(art / "users.npy")
            for m in METHODS if seed == 0 else ("rq",):
                t0 = time.perf_counter()
                name = f"{model}_s{seed}_{m}{CODE_BYTES}"
                log(f"{name}: vqrec train {m} -M {CODE_BYTES}; vqrec build --users")
                cb = str(work / f"cb_{name}")
                _cli("train", m, "-e", items, "--queries", users, "-M", str(CODE_BYTES), "-o", cb, "-q")
                _cli("build", "--codebooks", cb, "--items", items, "--users", users, "-o", str(root / name), "-q")
                im = json.loads((root / name / "manifest.json").read_text())
                out["indexes"][name] = {
                    "model": model,
                    "seed": seed,
                    "method": f"{m}{CODE_BYTES}",
                    "exact_hr@10": exact,
                    "train_build_seconds": round(time.perf_counter() - t0, 1),
                    "code_bytes_per_item": im["bytes"]["code_bytes_per_item"],
                    "recall@10_vs_exact": im["evaluation"]["user_to_item"]["recall@10"],
                }
    with serve(str(root)) as base, httpx.Client(base_url=base, timeout=30) as client:
        for name, row in out["indexes"].items():
            hits = errors = 0
            t0 = time.perf_counter()
            for u in users_q:
                body = {"user_id": u, "k": K, "exclude_item_ids": seen[u]}
                r = client.post(f"/v1/indexes/{name}/recommend", json=body)
                if r.status_code != 200:
                    errors += 1
                    continue
                hits += held[u] in [x["id"] for x in r.json()["results"]]
            hr = hits / len(users_q)
            row.update(
                {
                    "served_hr@10": round(hr, 4),
                    "ratio_to_exact": round(hr / row["exact_hr@10"], 4),
                    "http_errors": errors,
                    "http_seconds": round(time.perf_counter() - t0, 1),
                }
            )
            log(f"  {name}: {row}")
    summary = {}
    for model in ("cove", "bpr"):
        for meth in {r["method"] for r in out["indexes"].values()}:
            rows = [r for r in out["indexes"].values() if r["model"] == model and r["method"] == meth]
            if len(rows) > 1:
                summary[f"{model}_{meth}"] = {
                    "seeds": len(rows),
                    "ratio": _mean_std([r["ratio_to_exact"] for r in rows]),
                    "ratio_min": min(r["ratio_to_exact"] for r in rows),
                    "served_hr@10": _mean_std([r["served_hr@10"] for r in rows]),
                }
    out["summary"] = summary
    return out


def table(res: dict[str, Any]) -> str:
    lines = [
        f"ml-100k leave-one-out ({res['compare']['users']} users, training items excluded, exact inner-product "
        f"search), {len(res['compare']['runs']['cove'])} seeds",
        "",
        "| model | seed | HR@10 | NDCG@10 | train s |",
        "|---|---|---|---|---|",
    ]
    for kind, rows in res["compare"]["runs"].items():
        for r in rows:
            lines.append(f"| {kind} | {r['seed']} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r['train_seconds']:.1f} |")
    for kind, s in res["compare"]["summary"].items():
        lines.append(
            f"| **{kind}** | mean ± std | {s['hr@10']['mean']:.4f} ± {s['hr@10']['std']:.4f} | "
            f"{s['ndcg@10']['mean']:.4f} ± {s['ndcg@10']['std']:.4f} | "
            f"{s['train_seconds']['mean']:.1f} ± {s['train_seconds']['std']:.1f} |"
        )
    if "served" in res:
        sv = res["served"]
        lines += [
            "",
            f"Embeddings served by `vqrec serve` at {sv['code_bytes_per_item']} bytes/item, every user queried over "
            f"HTTP ({sv['queries']} users, training items excluded):",
            "",
            "| index | exact HR@10 | recall@10 vs exact | served HR@10 | ratio | HTTP errors |",
            "|---|---|---|---|---|---|",
        ]
        for name, v in sv["indexes"].items():
            lines.append(
                f"| {name} | {v['exact_hr@10']:.4f} | {v['recall@10_vs_exact']:.4f} | "
                f"{v['served_hr@10']:.4f} | {v['ratio_to_exact']:.4f} | {v['http_errors']} |"
            )
        for key, v in sv["summary"].items():
            lines.append(
                f"| **{key}** over {v['seeds']} seeds | | | {v['served_hr@10']['mean']:.4f} ± "
                f"{v['served_hr@10']['std']:.4f} | {v['ratio']['mean']:.4f} ± {v['ratio']['std']:.4f} "
                f"(min {v['ratio_min']:.4f}) | |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=f"/tmp/vqrec-bench-cove-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    ap.add_argument("--no-serve", action="store_true", help="Skip the 16-byte serving part.")
    args = ap.parse_args(argv)
    base = DATA_ROOT / "ml-100k-als64"
    train_tsv, test_tsv = str(base / "train.tsv"), str(base / "test.tsv")
    if not Path(train_tsv).exists():
        print(f"needs {base} (MovieLens-100k train.tsv/test.tsv)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vqrec-bench-cove-") as tmp:
        work = Path(tmp)
        res: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "data": str(base),
            "compare": compare(args.seeds, train_tsv, test_tsv, work),
        }
        if not args.no_serve:
            res["served"] = served(work, train_tsv, test_tsv, args.seeds)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["loadavg_start_end"] = [list(np.round(load0, 2)), list(np.round(os.getloadavg(), 2))]
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print()
    print(json.dumps(res, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
