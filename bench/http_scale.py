"""Throughput of the real service at scale: single-query ``recommend`` at concurrency C beside ``/healthz``.

    python -m bench.http_scale --index DIR [--concurrency 16] [--seconds 20] [--queries users.npy]

Serves the index directory DIR (a built artifact; copied into a temporary index root as ``big``) with the real
``vqrec serve`` app (uvicorn, one process, 127.0.0.1) and, from C client threads (one httpx.Client each),
sends for ``--seconds``: ``GET /healthz``, then ``POST /v1/indexes/big/recommend`` with one query vector per
request (rows of ``--queries``, default ``users.npy`` beside the items the index was built from) and the
index's default search setting. Prints requests/s of each, their ratio, errors, p50/p99, the default
setting (nprobe, rerank) and its recall from the build's tuning, and the load average.

The issue's target: recommend throughput >= 70 % of /healthz at concurrency 16 on 2 cores, 0 errors.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .serving import serve_process
from .timing import log


def load_phase(
    url: str, make: Callable[[int, int], tuple[str, str, Any]], concurrency: int, seconds: float, max_requests: int
) -> dict[str, Any]:
    """``concurrency`` threads send make(worker, i) = (method, path, json body | None) until ``seconds`` or
    ``max_requests``; returns requests/s, errors (non-200 or transport) and latency percentiles."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sent = [0]
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def worker(w: int) -> None:
        mine: list[float] = []
        bad: list[str] = []
        i = 0
        with httpx.Client(base_url=url, timeout=30.0) as client:
            while time.perf_counter() < deadline:
                with lock:
                    if sent[0] >= max_requests:
                        break
                    sent[0] += 1
                method, path, body = make(w, i)
                i += 1
                t = time.perf_counter()
                try:
                    r = client.request(method, path, json=body)
                    if r.status_code != 200:
                        bad.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    bad.append(f"{type(e).__name__}: {e}")
                mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1e3 if lat else np.zeros(1)
    return {
        "requests": len(lat),
        "rps": round(len(lat) / wall, 1),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
    }


def bench(index_dir: str, queries: np.ndarray, concurrency: int, seconds: float, max_requests: int) -> dict[str, Any]:
    with open(os.path.join(index_dir, "manifest.json")) as f:
        manifest = json.load(f)
    with tempfile.TemporaryDirectory(prefix="vqrec-http-scale-") as root:
        os.symlink(os.path.abspath(index_dir), os.path.join(root, "big"))
        with serve_process(root, startup_timeout=600) as (url, _):
            vecs = [q.tolist() for q in queries]
            load0 = os.getloadavg()
            health = load_phase(url, lambda w, i: ("GET", "/healthz", None), concurrency, seconds, max_requests)
            rec = load_phase(
                url,
                lambda w, i: ("POST", "/v1/indexes/big/recommend", {"vector": vecs[(w * 7919 + i) % len(vecs)]}),
                concurrency,
                seconds,
                max_requests,
            )
            load1 = os.getloadavg()
    search = manifest.get("search") or {}
    part = manifest.get("partition") or {}
    return {
        "n_items": manifest["n_items"],
        "concurrency": concurrency,
        "seconds": seconds,
        "healthz": health,
        "recommend": rec,
        "ratio": round(rec["rps"] / health["rps"], 3) if health["rps"] else None,
        "default": {
            "nprobe": part.get("nprobe"),
            "rerank": search.get("rerank", 0),
            "recall@10 (build tuning)": search.get("recall"),
            "target": search.get("target_recall"),
        },
        "load": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, help="a built index artifact directory")
    p.add_argument("--queries", help=".npy query vectors (default: users.npy beside the index's source items)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    a = p.parse_args(argv)
    qpath = a.queries
    if qpath is None:
        with open(os.path.join(a.index, "manifest.json")) as f:
            src = json.load(f)["source"]["items"]["path"]
        qpath = os.path.join(os.path.dirname(src), "users.npy")
    queries = np.load(qpath).astype(np.float32)
    log(f"serving {a.index}; queries {qpath} ({len(queries)})")
    rep = bench(a.index, queries, a.concurrency, a.seconds, a.max_requests)
    h, r = rep["healthz"], rep["recommend"]
    print(
        f"# HTTP at {rep['n_items']:,} items, concurrency {a.concurrency}, {a.seconds:.0f} s each, load {rep['load']}"
    )
    print("| endpoint | requests/s | errors | p50 ms | p99 ms |\n|---|---|---|---|---|")
    print(f"| GET /healthz | {h['rps']:,.0f} | {h['errors']} | {h['p50_ms']} | {h['p99_ms']} |")
    print(f"| POST recommend (1 vector) | {r['rps']:,.0f} | {r['errors']} | {r['p50_ms']} | {r['p99_ms']} |")
    print(f"recommend / healthz = {rep['ratio']}; default setting {rep['default']}")
    if r["first_errors"]:
        print("first errors:", r["first_errors"])
    return rep


if __name__ == "__main__":
    main()
