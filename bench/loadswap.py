"""Load and swap bench: a bounded load generator on loopback against the real service (bench.serving.serve),
reporting throughput and p50/p99 latency for single and batch recommend queries at a few concurrency levels,
then the same load while the index is hot-swapped repeatedly (POST /v1/admin/indexes/{name}/reload,
alternating between two versions of one index in a temporary versioned store).

    python -m bench.loadswap [--quick] [--swaps 20] [--seconds S] [--concurrency 1,4,16]

Data: ml-100k ALS-64 items/users (../shared/data/ml-100k-als64) when present, else a small synthetic set
(the output says which). Two versions: PQ trained with two seeds (different codes, so different
index_version). Every phase is bounded by a duration and a request count; the service runs on 127.0.0.1
only and is always stopped. A request fails when it is not 200, a transport error, or its body is not
k results from one of the two versions. Prints a markdown table and writes JSON under /tmp.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vqrec.index import build_index
from vqrec.index.store import IndexStore
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

from .data import DATA_ROOT, Dataset, K, load_ml100k, make_tiny
from .serving import serve
from .timing import log

NAME = "loadswap"
BATCH = 16  # queries per batch request
SWAP_CAP_S = 120.0  # a swap phase never runs longer than this, whatever the swaps do


# ---- the index: two versions in a temporary store -----------------------------------------------
def pick_dataset(synthetic: bool = False) -> tuple[Dataset, int, int]:
    """(dataset, M, nbits): ml-100k with PQ16x8 when present (and not ``synthetic``), else tiny PQ4x4."""
    if not synthetic and (DATA_ROOT / "ml-100k-als64" / "items.npy").exists():
        return load_ml100k(), 16, 8
    return make_tiny(n=800, d=16, nq=60, seed=7), 4, 4


def build_versions(ds: Dataset, root: str, M: int, nbits: int, seeds: Sequence[int] = (1, 2)) -> list[str]:
    """Train PQ with each seed, build and publish into the store at ``root`` as versions of NAME;
    activates the first; returns the version ids in seed order."""
    store = IndexStore(root)
    versions = []
    for seed in seeds:
        cfg = TrainConfig(method="pq", M=M, nbits=nbits, metric="ip", seed=seed)
        cb = train(ds.items, cfg, queries=ds.users, show_progress=False)
        index = build_index(cb, ds.items, users=ds.users, item_vectors="float16", show_progress=False)
        versions.append(store.publish(index, NAME))
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"the seeds gave identical versions {versions}; nothing to swap")
    store.activate(NAME, versions[0])
    return versions


# ---- the load generator -------------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # start, perf_counter seconds
    latency: float  # seconds
    ok: bool
    version: str | None
    error: str | None = None


def _request_body(kind: str, rng: random.Random, users: Sequence[str]) -> tuple[str, dict[str, Any]]:
    if kind == "single":
        return f"/v1/indexes/{NAME}/recommend", {"user_id": rng.choice(users), "k": K}
    return f"/v1/indexes/{NAME}/recommend/batch", {
        "queries": [{"user_id": rng.choice(users), "k": K} for _ in range(BATCH)]
    }


def _check(kind: str, r: Any, versions: Sequence[str]) -> tuple[bool, str | None, str | None]:
    """(ok, index_version, error) of one response."""
    if r.status_code != 200:
        return False, None, f"HTTP {r.status_code}: {r.text[:200]}"
    body = r.json()
    v = body.get("index_version")
    if v not in versions:
        return False, v, f"unexpected index_version {v!r}"
    res = body.get("results")
    lists = [res] if kind == "single" else res
    if not isinstance(lists, list) or len(lists) != (1 if kind == "single" else BATCH):
        return False, v, "wrong number of result lists"
    if any(not isinstance(x, list) or len(x) != K for x in lists):
        return False, v, f"a result list is not {K} long"
    return True, v, None


def run_load(
    url: str,
    kind: str,
    concurrency: int,
    seconds: float,
    max_requests: int,
    users: Sequence[str],
    versions: Sequence[str],
    *,
    keep_running: threading.Event | None = None,
    seed: int = 0,
) -> tuple[list[Sample], float]:
    """``concurrency`` threads, one httpx.Client each, send ``kind`` requests until ``seconds`` passed (and,
    with ``keep_running``, until it is cleared; never past SWAP_CAP_S) or ``max_requests`` were sent.
    Returns the samples and the wall time."""
    import httpx

    samples: list[Sample] = []
    lock = threading.Lock()
    sent = [0]
    t_start = time.perf_counter()
    deadline = t_start + seconds
    hard_deadline = t_start + max(seconds, SWAP_CAP_S)

    def more() -> bool:
        now = time.perf_counter()
        if now >= hard_deadline:
            return False
        if now < deadline or (keep_running is not None and keep_running.is_set()):
            with lock:
                if sent[0] >= max_requests:
                    return False
                sent[0] += 1
            return True
        return False

    def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        local: list[Sample] = []
        with httpx.Client(base_url=url, timeout=10.0) as client:
            while more():
                path, body = _request_body(kind, rng, users)
                t0 = time.perf_counter()
                try:
                    r = client.post(path, json=body)
                    lat = time.perf_counter() - t0
                    ok, v, err = _check(kind, r, versions)
                except httpx.HTTPError as e:
                    lat, ok, v, err = time.perf_counter() - t0, False, None, f"{type(e).__name__}: {e}"
                local.append(Sample(t0, lat, ok, v, err))
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(seconds, SWAP_CAP_S) + 30.0)
    return samples, time.perf_counter() - t_start


def summarize(samples: Sequence[Sample], wall: float, queries_per_request: int) -> dict[str, Any]:
    lat = np.array([s.latency for s in samples]) * 1e3
    failed = [s for s in samples if not s.ok]
    return {
        "requests": len(samples),
        "seconds": round(wall, 3),
        "req_per_s": round(len(samples) / wall, 1) if wall > 0 else None,
        "queries_per_s": round(len(samples) * queries_per_request / wall, 1) if wall > 0 else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "failed": len(failed),
        "first_errors": sorted({s.error or "" for s in failed})[:3],
        "by_version": dict(Counter(s.version for s in samples if s.version is not None)),
    }


# ---- the swapper --------------------------------------------------------------------------------
def run_swaps(url: str, versions: Sequence[str], swaps: int, interval: float) -> list[dict[str, Any]]:
    """``swaps`` reloads alternating versions[1], versions[0], ..., ``interval`` seconds apart (start to
    start); returns each one's status, took_ms, index_version and wall time."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for i in range(swaps):
            t0 = time.perf_counter()
            target = versions[(i + 1) % len(versions)]
            rec: dict[str, Any] = {"target": target}
            try:
                r = client.post(f"/v1/admin/indexes/{NAME}/reload", json={"version": target})
                rec["status"] = r.status_code
                body = r.json()
                rec["took_ms"] = body.get("took_ms")
                rec["index_version"] = body.get("index_version")
                rec["ok"] = r.status_code == 200 and body.get("index_version") == target
                if not rec["ok"]:
                    rec["error"] = r.text[:300]
            except httpx.HTTPError as e:
                rec.update(status=None, ok=False, error=f"{type(e).__name__}: {e}")
            rec["wall_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
            out.append(rec)
            time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    return out


def swap_phase(
    url: str,
    kind: str,
    concurrency: int,
    seconds: float,
    max_requests: int,
    users: Sequence[str],
    versions: Sequence[str],
    swaps: int,
) -> dict[str, Any]:
    """The load of ``kind`` at ``concurrency`` while ``swaps`` reloads run (spread over ``seconds``; the load
    keeps going until the last swap finished). Ends on versions[0] when ``swaps`` is even."""
    running = threading.Event()
    running.set()
    result: dict[str, Any] = {}

    def swapper() -> None:
        time.sleep(min(0.2, seconds / 10))  # the load is under way before the first swap
        try:
            result["swaps"] = run_swaps(url, versions, swaps, interval=seconds / max(swaps, 1))
        finally:
            running.clear()

    st = threading.Thread(target=swapper, daemon=True)
    st.start()
    samples, wall = run_load(
        url, kind, concurrency, seconds, max_requests, users, versions, keep_running=running, seed=99
    )
    st.join(timeout=SWAP_CAP_S)
    recs = result.get("swaps", [])
    took = [r["took_ms"] for r in recs if r.get("took_ms") is not None]
    out = summarize(samples, wall, 1 if kind == "single" else BATCH)
    out.update(
        kind=kind,
        concurrency=concurrency,
        swaps_requested=swaps,
        swaps_done=len(recs),
        swaps_ok=sum(bool(r.get("ok")) for r in recs),
        reload_took_ms_p50=round(float(np.percentile(took, 50)), 3) if took else None,
        reload_took_ms_max=round(float(max(took)), 3) if took else None,
        swap_errors=[r["error"] for r in recs if not r.get("ok")][:3],
    )
    return out


# ---- the bench ----------------------------------------------------------------------------------
def bench(
    *,
    seconds: float = 5.0,
    max_requests: int = 20_000,
    concurrency: Sequence[int] = (1, 4, 16),
    swaps: int = 20,
    swap_concurrency: int | None = None,
    min_rps: float = 200.0,
    synthetic: bool = False,
    root: str | None = None,
) -> dict[str, Any]:
    """Build the two versions, serve them, run the sweep and the swap phases; returns the report."""
    report: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "settings": {
            "seconds": seconds,
            "max_requests": max_requests,
            "concurrency": list(concurrency),
            "swaps": swaps,
            "batch_size": BATCH,
            "k": K,
        },
    }
    ds, M, nbits = pick_dataset(synthetic)
    report["data"] = ds.data
    report["dataset"] = ds.name
    report["index"] = f"pq M={M} nbits={nbits}, seeds 1 and 2"
    users = list(ds.users.ids)
    with tempfile.TemporaryDirectory(prefix="vqrec-loadswap-", dir=root) as tmp:
        t0 = time.perf_counter()
        versions = build_versions(ds, tmp, M, nbits)
        report["build_s"] = round(time.perf_counter() - t0, 2)
        report["versions"] = versions
        log(f"loadswap: built {versions} from {ds.name} in {report['build_s']} s")
        with serve(tmp) as url:
            import httpx

            for kind in ("single", "batch"):  # warm-up, not measured
                run_load(url, kind, 2, 0.3, 50, users, versions)
            sweep = []
            for kind in ("single", "batch"):
                for c in concurrency:
                    samples, wall = run_load(url, kind, c, seconds, max_requests, users, versions, seed=c)
                    row = summarize(samples, wall, 1 if kind == "single" else BATCH)
                    row.update(kind=kind, concurrency=c)
                    sweep.append(row)
                    log(f"loadswap: {kind} c={c}: {row['req_per_s']} req/s p99 {row['p99_ms']} ms")
            report["sweep"] = sweep
            if swap_concurrency is None:
                singles = [r for r in sweep if r["kind"] == "single"]
                fast = [r for r in singles if (r["req_per_s"] or 0) >= min_rps]
                if fast:
                    chosen = min(fast, key=lambda r: r["concurrency"])
                else:
                    chosen = max(singles, key=lambda r: r["req_per_s"])
                swap_concurrency = int(chosen["concurrency"])
            report["swap_concurrency"] = swap_concurrency
            swap_rows = []
            for kind in ("single", "batch"):
                # the same load without swaps, just before, then with them
                samples, wall = run_load(url, kind, swap_concurrency, seconds, max_requests, users, versions, seed=7)
                base = summarize(samples, wall, 1 if kind == "single" else BATCH)
                base.update(kind=kind, concurrency=swap_concurrency)
                during = swap_phase(url, kind, swap_concurrency, seconds, max_requests, users, versions, swaps)
                swap_rows.append({"kind": kind, "without_swaps": base, "during_swaps": during})
                log(
                    f"loadswap: {kind} c={swap_concurrency} swaps {during['swaps_ok']}/{swaps}: "
                    f"p99 {base['p99_ms']} -> {during['p99_ms']} ms, failed {during['failed']}"
                )
            report["swap"] = swap_rows
            report["serving_at_end"] = httpx.get(f"{url}/v1/admin/indexes", timeout=10.0).json()
    report["loadavg_end"] = os.getloadavg()
    return report


def format_report(rep: dict[str, Any]) -> str:
    la0 = ", ".join(f"{x:.2f}" for x in rep["loadavg_start"])
    la1 = ", ".join(f"{x:.2f}" for x in rep["loadavg_end"])
    s = rep["settings"]
    lines = [
        "# vqrec load and swap bench",
        "",
        f"data: {rep['data']}",
        f"index: {rep['index']}; versions {rep['versions'][0]} (v1), {rep['versions'][1]} (v2)",
        f"service: uvicorn, 1 worker, 127.0.0.1; {rep['cpus']} CPUs shared by client and server; "
        f"loadavg start {la0}, end {la1}",
        f"phases: {s['seconds']} s or {s['max_requests']} requests each; single = 1 recommend k={s['k']}, "
        f"batch = {s['batch_size']} recommend queries per request",
        "",
        "## Throughput and latency (no swaps)",
        "",
        "| kind | concurrency | requests | req/s | queries/s | p50 ms | p99 ms | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rep["sweep"]:
        lines.append(
            f"| {r['kind']} | {r['concurrency']} | {r['requests']} | {r['req_per_s']} | {r['queries_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['failed']} |"
        )
    lines += [
        "",
        f"## Hot swaps under load (concurrency {rep['swap_concurrency']})",
        "",
        "| kind | phase | requests | req/s | p50 ms | p99 ms | failed | swaps ok/done | reload took_ms p50/max "
        "| responses v1 / v2 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    v1, v2 = rep["versions"]
    for row in rep["swap"]:
        for phase in ("without_swaps", "during_swaps"):
            r = row[phase]
            swaps = f"{r['swaps_ok']}/{r['swaps_done']}" if "swaps_ok" in r else "-"
            took = f"{r['reload_took_ms_p50']} / {r['reload_took_ms_max']}" if "swaps_ok" in r else "-"
            bv = r["by_version"]
            lines.append(
                f"| {row['kind']} | {phase.replace('_', ' ')} | {r['requests']} | {r['req_per_s']} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['failed']} | {swaps} | {took} | {bv.get(v1, 0)} / {bv.get(v2, 0)} |"
            )
    errs = [e for row in rep["swap"] for ph in row.values() if isinstance(ph, dict) for e in ph.get("first_errors", [])]
    errs += [e for r in rep["sweep"] for e in r["first_errors"]]
    if errs:
        lines += ["", "first errors: " + "; ".join(errs[:5])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.loadswap", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 s phases, concurrency 1,4, 6 swaps")
    p.add_argument("--seconds", type=float, default=None, help="duration of each phase (default 5, quick 2)")
    p.add_argument("--max-requests", type=int, default=20_000, help="request cap of each phase")
    p.add_argument("--concurrency", default=None, help="comma-separated levels (default 1,4,16; quick 1,4)")
    p.add_argument("--swaps", type=int, default=None, help="hot swaps per swap phase (default 20, quick 6)")
    p.add_argument("--swap-concurrency", type=int, default=None, help="default: lowest level >= --min-rps")
    p.add_argument("--min-rps", type=float, default=200.0, help="single req/s the swap phase should run at")
    p.add_argument("--synthetic", action="store_true", help="small synthetic data even if ml-100k is present")
    p.add_argument("--out", default=None, help="JSON report path (default /tmp/vqrec-loadswap-<time>.json)")
    a = p.parse_args(argv)
    seconds = a.seconds if a.seconds is not None else (2.0 if a.quick else 5.0)
    conc = a.concurrency or ("1,4" if a.quick else "1,4,16")
    swaps = a.swaps if a.swaps is not None else (6 if a.quick else 20)
    rep = bench(
        seconds=seconds,
        max_requests=a.max_requests,
        concurrency=[int(c) for c in conc.split(",") if c.strip()],
        swaps=swaps,
        swap_concurrency=a.swap_concurrency,
        min_rps=a.min_rps,
        synthetic=a.synthetic,
    )
    out = a.out or f"/tmp/vqrec-loadswap-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    with open(out, "w", encoding="utf-8") as f:
        json.dump(rep, f, indent=2, default=str)
    rep["json_path"] = out
    sys.stdout.write(format_report(rep) + f"\nJSON: {out}\n")
    return rep


if __name__ == "__main__":
    main()
