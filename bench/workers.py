"""Large artifacts: how fast an index loads, and what N worker processes serving it hold in RAM.

    python -m bench.workers --index DIR [--workers 1,2] [--concurrency 16] [--seconds 15] [--json OUT]

DIR is a built index artifact (``vqrec build``). It is published into a temporary store (as a deployment serves
it: a store version, which the service memory-maps with the default ``VQREC_MMAP=auto``). Then:

1. **Load time**, in a fresh process per way of loading (imports not counted; the files are in the page cache,
   as after a publish): mapped without checksums (sizes, shapes and the packed layout's sampled check only:
   what a worker may do once ``vqrec publish`` verified the version), mapped with every sha256, and read into
   memory with every sha256 (what a flat artifact gets). With the memory the load added: the process's own
   (anonymous: heap and arrays built at load, never shared) and the mapped files' resident pages (shareable).
2. **Workers.** For each N of ``--workers`` (and N = max with ``VQREC_MMAP=never`` for comparison):
   ``vqrec serve --workers N`` on 127.0.0.1, warmed by ``--warmup`` recommend requests; ``/healthz`` and
   single-vector ``recommend`` throughput at concurrency C (bench/http_scale.py's load loop; the client threads
   share the machine's cores with the server), errors, p50/p99 and each worker's CPU seconds in the recommend
   phase; then per worker from ``/proc/<pid>/smaps_rollup``: RSS, PSS, its own (anonymous) bytes, with and
   without those of a worker serving no index (measured first), and the mapped files' resident bytes, per
   item. The workers' PSS summed is what the server costs the machine.

Prints markdown tables with the load average beside each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .data import REPO
from .http_scale import load_phase
from .serving import serve_process
from .timing import log

_LOAD_SNIPPET = """
import json, os, sys, time
from bench.workers import smaps
from vqrec.index import load_index

before = smaps(os.getpid())
t = time.perf_counter()
index = load_index(sys.argv[1], mmap=sys.argv[2] == "1", verify=sys.argv[3] == "1")
took = time.perf_counter() - t
after = smaps(os.getpid())
print(json.dumps({"seconds": took, "n": len(index), "scan": index.scan_kind, "before": before, **after}))
"""

_WAYS = (
    ("mapped, sizes and shapes", True, False),
    ("mapped, every sha256", True, True),
    ("in memory, every sha256", False, True),
)


def smaps(pid: int) -> dict[str, int]:
    """Bytes of /proc/<pid>/smaps_rollup (Rss, Pss, Shared_Clean, Private_Dirty, ...)."""
    out: dict[str, int] = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def anon(m: dict[str, int]) -> int:
    """The process's own memory (heap, arrays built at load): never shared with another process."""
    return m.get("Anonymous", 0)


def filed(m: dict[str, int]) -> int:
    """Resident pages of mapped files (the index's files, libraries): page cache, shared by every mapper."""
    return m.get("Rss", 0) - m.get("Anonymous", 0)


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_times(path: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for label, mmap, verify in _WAYS:
        best: dict[str, Any] | None = None
        for _ in range(repeats):
            cmd = [sys.executable, "-c", _LOAD_SNIPPET, path, str(int(mmap)), str(int(verify))]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"load failed: {r.stderr[-2000:]}")
            got = json.loads(r.stdout.strip().splitlines()[-1])
            if best is None or got["seconds"] < best["seconds"]:
                best = got
        assert best is not None
        best["way"], best["load"] = label, os.getloadavg()[0]
        log(f"load {label}: {best['seconds']:.2f} s, own memory +{(anon(best) - anon(best['before'])) / 2**20:.0f} MiB")
        rows.append(best)
    return rows


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        out += [int(k) for k in (task / "children").read_text().split()]
    return out


def _workers(pid: int, n: int) -> list[int]:
    """The server's processes that hold indexes: itself with one worker, else uvicorn's worker children."""
    if n == 1:
        return [pid]
    kids = []
    for c in _children(pid):
        with contextlib.suppress(FileNotFoundError):
            if b"multiprocessing.resource_tracker" not in pathlib.Path(f"/proc/{c}/cmdline").read_bytes():
                kids.append(c)
    return kids


@contextlib.contextmanager
def serve_workers(root: str, workers: int, mmap: str, timeout: float = 600.0) -> Iterator[tuple[str, int]]:
    """``vqrec serve --workers N`` over ``root`` on a free loopback port until every worker is ready; (url, pid)."""
    with serve_process(
        root, settings={"VQREC_MMAP": mmap}, startup_timeout=timeout, workers=workers, ready_checks=4 * workers
    ) as (url, proc):
        yield url, proc.pid


def run_workers(
    root: str, name: str, n_items: int, queries: np.ndarray, workers: int, mmap: str, a: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    vecs = [q.tolist() for q in queries]
    route = f"/v1/indexes/{name}/recommend"
    with serve_workers(root, workers, mmap) as (url, pid):
        with httpx.Client(base_url=url, timeout=30.0) as c:
            for i in range(a.warmup):  # bounded: every worker sees a share of these (the kernel balances accepts)
                r = c.post(route, json={"vector": vecs[i % len(vecs)]})
                if r.status_code != 200:
                    raise RuntimeError(f"recommend: {r.status_code} {r.text[:300]}")
        procs = _workers(pid, workers)
        load0 = os.getloadavg()
        health = load_phase(url, lambda w, i: ("GET", "/healthz", None), a.concurrency, a.seconds, a.max_requests)
        cpu0 = [cpu_seconds(p) for p in procs]
        rec = load_phase(
            url,
            lambda w, i: ("POST", route, {"vector": vecs[(w * 7919 + i) % len(vecs)]}),
            a.concurrency,
            a.seconds,
            a.max_requests,
        )
        cpu = [round(cpu_seconds(p) - c, 2) for p, c in zip(procs, cpu0, strict=True)]
        after = [smaps(p) for p in procs]
        load1 = os.getloadavg()
    row = {
        "workers": workers,
        "mmap": mmap,
        "processes": len(procs),
        "per_worker": [
            {"Rss": m.get("Rss", 0), "Pss": m.get("Pss", 0), "anon": anon(m), "filed": filed(m)} for m in after
        ],
        "pss_total": sum(m.get("Pss", 0) for m in after),
        "anon_total": sum(anon(m) for m in after),
        "recommend_cpu_seconds": cpu,
        "healthz": health,
        "recommend": rec,
        "ratio": round(rec["rps"] / health["rps"], 3) if health["rps"] else None,
        "load": [round(x, 2) for x in (*load0, *load1)],
    }
    log(
        f"workers={workers} mmap={mmap}: PSS total {row['pss_total'] / n_items:.1f} B/item, "
        f"recommend {rec['rps']:.0f}/s vs healthz {health['rps']:.0f}/s, errors {rec['errors']}, cpu {cpu}"
    )
    return row


def baseline_worker(root: str) -> dict[str, int]:
    """A worker's memory with no index (an empty index root): the runtime every worker holds anyway."""
    os.makedirs(root, exist_ok=True)
    with serve_workers(root, 1, "auto") as (_, pid):
        return smaps(pid)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from vqrec.index.store import IndexStore

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, help="a built index artifact directory")
    p.add_argument("--queries", help=".npy query vectors (default: users.npy beside the index's source items)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--warmup", type=int, default=2000, help="recommend requests before memory is read")
    p.add_argument("--load-repeats", type=int, default=2)
    p.add_argument("--no-http", action="store_true", help="load times only")
    p.add_argument("--json", help="write the report here too")
    a = p.parse_args(argv)
    with open(os.path.join(a.index, "manifest.json")) as f:
        manifest = json.load(f)
    n = int(manifest["n_items"])
    qpath = a.queries or os.path.join(os.path.dirname(manifest["source"]["items"]["path"]), "users.npy")
    report: dict[str, Any] = {"index": a.index, "n_items": n}
    with tempfile.TemporaryDirectory(prefix="vqrec-workers-", dir=os.path.dirname(os.path.abspath(a.index))) as root:
        t = time.perf_counter()
        store = IndexStore(root)
        version = store.publish_dir(a.index, "big")
        store.activate("big", version)
        report["publish_seconds"] = round(time.perf_counter() - t, 2)
        vdir = store.version_dir("big", version)
        log(f"published {a.index} as big/{version} in {report['publish_seconds']} s")
        report["load"] = load_times(vdir, a.load_repeats)
        if not a.no_http:
            report["baseline"] = base = baseline_worker(os.path.join(root, "empty"))
            log(f"a worker without indexes: RSS {base['Rss'] / 2**20:.0f} MiB, own {anon(base) / 2**20:.0f} MiB")
            queries = np.load(qpath).astype(np.float32)
            counts = [int(x) for x in a.workers.split(",")]
            runs = [run_workers(root, "big", n, queries, w, "auto", a) for w in counts]
            runs.append(run_workers(root, "big", n, queries, max(counts), "never", a))
            report["workers"] = runs
    print(
        f"# Large artifacts: {n:,} items, {manifest['method']['kind']} M={manifest['method']['M']} "
        f"nbits={manifest['method']['nbits']}; machine load at the start {report['load'][0]['load']:.2f}"
    )
    print("\n## Load (fresh process, files in the page cache)\n")
    print("own memory: the process's anonymous memory (heap, arrays built at load; never shared) added by the load;")
    print("mapped: the index files' pages resident in the process (page cache, shared by every process mapping them)\n")
    print("| way | seconds | own memory MiB | own B/item | mapped MiB | load avg |\n|---|---|---|---|---|---|")
    for r in report["load"]:
        own = anon(r) - anon(r["before"])
        mapped = filed(r) - filed(r["before"])
        print(
            f"| {r['way']} | {r['seconds']:.2f} | {own / 2**20:.0f} | {own / n:.1f} | {mapped / 2**20:.0f} | "
            f"{r['load']:.2f} |"
        )
    base = report.get("baseline")
    if base is not None:
        print(
            f"\nA worker serving no index holds {base['Rss'] / 2**20:.0f} MiB RSS, {anon(base) / 2**20:.0f} MiB of it "
            "its own (Python, the web stack, numpy, faiss): subtracted below as 'index own'."
        )
    for r in report.get("workers", []):
        h, rec = r["healthz"], r["recommend"]
        print(f"\n## --workers {r['workers']}, VQREC_MMAP={r['mmap']} (load {r['load'][:3]} -> {r['load'][3:]})\n")
        print("| process | RSS B/item | PSS B/item | own B/item | index own B/item | mapped B/item | recommend CPU s |")
        print("|---|---|---|---|---|---|---|")
        for i, m in enumerate(r["per_worker"]):
            idx_own = (m["anon"] - anon(base)) / n if base else float("nan")
            print(
                f"| {i} | {m['Rss'] / n:.1f} | {m['Pss'] / n:.1f} | {m['anon'] / n:.1f} | {idx_own:.1f} | "
                f"{m['filed'] / n:.1f} | {r['recommend_cpu_seconds'][i]} |"
            )
        print(
            f"| all: PSS summed (the machine's cost) | | {r['pss_total'] / n:.1f} | {r['anon_total'] / n:.1f} | | | "
            f"{sum(r['recommend_cpu_seconds']):.2f} |"
        )
        print(
            f"\nrecommend {rec['rps']:,.0f}/s (errors {rec['errors']}, p50 {rec['p50_ms']} ms, "
            f"p99 {rec['p99_ms']} ms); /healthz {h['rps']:,.0f}/s; ratio {r['ratio']}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
