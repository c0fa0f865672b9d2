"""Scale benchmark: vqrec's partitioned 4-bit PQ index beside ScaNN, hnswlib and faiss IVF-PQ fast-scan.

    python -m bench.scale --data /tmp/syn/1m64 [--quick] [--methods vqrec,faiss,scann,hnswlib] [--json OUT]
    python -m bench.scale --n 100000 --d 128 --seed 1362 [--quick]       # generated into a temporary dir

Data: a ``../shared/data/synthetic.py`` output directory (items.npy, users.npy, item_ids.txt, user_ids.txt),
given with ``--data`` (repeatable) or generated with ``--n/--d/--seed`` into a temporary directory (removed
after). The reference sets: ``--n 1000000 --d 64 --seed 1298`` and ``--n 100000 --d 128 --seed 1362``.
Ground truth: exact top-k by inner product (faiss IndexFlatIP), cached as ``gt{k}.npy`` in the data
directory when it is writable and outside the repository.

The peers are configured as ``../shared/peers.md`` says (list counts scale as sqrt(n) below 1M items):
ScaNN tree(1000 leaves) + AH (d/4 and d/2 bytes) with no, int8 or float32 reorder; hnswlib M=16,
ef_construction=100; faiss IVF1024,PQ{d/2}x4fs with and without RFlat. vqrec: PQ M=d/2 x 4 bits (the
same d/4 bytes of codes as ScaNN AH d/4 and faiss PQx4fs), score-aware codes (``--score-aware``, T 0.3 as
ScaNN's AH uses 0.2), auto nlist, nprobe x rerank grid; rerank
re-scores candidates with the int8 item vectors (d bytes per item). Every method trains on (at most) 100,000 vectors and
builds with 2 threads.

For every setting, with the same queries and ground truth:

* recall@k (fraction of the exact top-k ids found; vqrec answers string ids, mapped back to rows);
* QPS of one batched call over all queries on 1 thread and on 2 threads (faiss omp_set_num_threads,
  hnswlib set_num_threads, ScaNN search_batched vs search_batched_parallel, vqrec VQREC_THREADS),
  the best of ROUNDS (3) calls;
* one query per call on 1 thread (perf_counter around each call, Python overhead included) over the first
  ``--n-one`` queries, ROUNDS passes: QPS = calls / summed time of the best pass, p50 / p99 latency over all
  calls. Every method's indexes are built first and then timed together (``measure_pending``): each round goes
  through every setting of every method once, in its own random order (seeded), so that a slow spell of this
  shared machine, which can last minutes, costs a setting one of its passes and falls on all methods alike
  rather than on whichever method was being timed (``--per-index``: each index timed right after its build,
  its rounds through its own grid, as before 2026-11-30);
* RAM bytes per item: the index saved to disk, then loaded in a fresh subprocess (vqrec: load_index(mmap=
  False)) and asked one query; (VmRSS after - VmRSS before, both after the imports and malloc_trim) / n
  ("rss"). Beside it the nominal figure: peers.md's formula for the peers, the artifact's bytes on disk
  for vqrec. When the subprocess fails the nominal figure is used and labelled so;
* build time: train + add (vqrec: train + build_index), wall seconds.

Memory classes (by B/item, ids included): "codes only" <= 48, "compact copy" <= d + 48, "any". For each
class: the recall/QPS Pareto frontier (one-by-one and batch 1 thread) and, per recall level, the best
peer's QPS, vqrec's and their ratio.

The CLI restarts itself with OMP_WAIT_POLICY=PASSIVE unless set (as bench/run.py does: spinning OpenMP
workers stall faiss's 2-thread batches on a shared 2-core machine). Tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from vqrec.index import Embeddings, build_index, kernel_available, load_embeddings, save_index
from vqrec.index.eval import recall_at_k

from .data import DATA_ROOT, REPO
from .report import _la, json_default, md_table
from .timing import latencies, log, threads

METHODS = ("vqrec", "faiss", "scann", "hnswlib")
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97)
CLASSES = ("codes only", "compact copy", "any")
CODES_ONLY_BYTES = 48.0  # ids included
TRAIN_SAMPLE = 100_000
PEER_HINT = "pip install -e '.[bench]'"
SYNTHETIC = DATA_ROOT / "synthetic.py"

# (full grid, --quick grid) per method
VQREC_NPROBE = ((1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 30, 50, 80), (1, 3, 8, 20, 50))
VQREC_RERANK = ((0, 20, 50, 100, 200), (0, 50, 200))
FAISS_NPROBE = ((1, 2, 4, 8, 16, 32, 64), (1, 4, 16, 64))
FAISS_REFINE_NPROBE = ((2, 4, 8, 16, 32, 64), (4, 16, 64))
FAISS_K_FACTOR = ((2, 5, 10, 20), (4, 16))
SCANN_LEAVES = ((5, 10, 20, 40, 80, 160), (10, 40, 160))
SCANN_REORDER_LEAVES = ((10, 20, 40, 80, 160), (10, 40, 160))
SCANN_REORDER = ((20, 50, 100, 200), (50, 200))
HNSW_EF = ((10, 16, 24, 40, 64, 100, 160), (10, 40, 160))


# ---- data and ground truth --------------------------------------------------------------------------


@dataclass
class ScaleData:
    """Items, the first nq users as queries, and their exact top-k item rows."""

    name: str
    path: str
    items: Embeddings
    queries: NDArray[np.float32]
    gt: NDArray[np.int64]  # (nq, k) rows
    gt_how: str

    @property
    def n(self) -> int:
        return self.items.n

    @property
    def d(self) -> int:
        return self.items.d


def generate(n: int, d: int, seed: int, nq: int, out: str) -> str:
    """Run ../shared/data/synthetic.py into ``out`` (a fresh directory); returns ``out``."""
    cmd = [sys.executable, str(SYNTHETIC), "--n", str(n), "--d", str(d), "--nq", str(nq), "--seed", str(seed)]
    subprocess.run([*cmd, "--out", out], check=True, stdout=subprocess.DEVNULL)
    return out


def exact_topk(xb: NDArray[np.float32], xq: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Exact top-k rows by inner product (faiss IndexFlatIP)."""
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(np.ascontiguousarray(xb, dtype=np.float32))
    _, idx = flat.search(np.ascontiguousarray(xq, dtype=np.float32), k)
    return idx.astype(np.int64)


def _cacheable(path: Path) -> bool:
    p = path.resolve()
    return os.access(p, os.W_OK) and REPO not in (p, *p.parents)


def load_data(path: str, nq: int, k: int, name: str | None = None) -> ScaleData:
    """A synthetic.py output directory with exact top-k of its first ``nq`` users (cached as gt{k}.npy)."""
    base = Path(path)
    items = load_embeddings(str(base / "items.npy"), str(base / "item_ids.txt"))
    users = np.ascontiguousarray(np.load(base / "users.npy"), dtype=np.float32)
    queries = users[:nq]
    cache = base / f"gt{k}.npy"
    gt = None
    if cache.exists():
        g = np.load(cache)
        if g.ndim == 2 and g.shape[0] == len(users) and g.shape[1] >= k and g.max() < items.n:
            gt, how = g[:nq, :k].astype(np.int64), f"cached {cache}"
    if gt is None:
        t0 = time.perf_counter()
        full = exact_topk(items.vectors, users, k)
        how = f"faiss IndexFlatIP ({time.perf_counter() - t0:.1f} s)"
        if _cacheable(base):
            np.save(cache, full)
            how += f", cached as {cache}"
        gt = full[:nq]
    return ScaleData(name or str(base), str(base), items, queries, gt, how)


# ---- measuring one setting ------------------------------------------------------------------------


@dataclass
class Searcher:
    """One configured search: ``batch(xq, threads)`` -> raw answer, ``one(q)`` for a (1, d) query,
    ``rows(raw)`` -> (nq, k) item rows (-1 padded), ``set_threads(n)`` for engines with their own pool."""

    batch: Callable[[NDArray[np.float32], int], Any]
    one: Callable[[NDArray[np.float32]], Any]
    rows: Callable[[Any], NDArray[np.int64]]
    set_threads: Callable[[int], None] = lambda n: None


ROUNDS = 3  # timed passes per setting, spread over the whole timing phase (every method alike): the best is kept


def measure_grid(
    searchers: Sequence[Searcher], data: ScaleData, k: int, n_one: int, *, order_seed: int | None = None
) -> list[dict[str, float]]:
    """recall@k, QPS batch 1 and 2 threads, one-by-one QPS and p50/p99 (1 thread) of each setting of a grid.

    These machines are shared, and a burst of another process can last longer than a setting's timed passes: the
    grid is timed ROUNDS times over, a round going through every setting once (batch on 1 thread, one query per
    call, batch on 2 threads), and the best pass of each setting is kept (p50/p99 over all of its calls). A burst
    then costs one setting one pass, not all of them; every method is measured the same way. With ``order_seed``
    each round takes the settings in its own seeded random order (the bench's interleaved mode, where the grid
    holds every method's settings: a slow spell of the machine then falls on all methods alike)."""
    xq = data.queries
    n1 = min(n_one, len(xq))
    outs: list[dict[str, float]] = [{} for _ in searchers]
    lats: list[list[NDArray[np.float64]]] = [[] for _ in searchers]
    with threads(1):
        for s, out in zip(searchers, outs, strict=True):
            s.set_threads(1)
            raw = s.batch(xq, 1)  # warm-up, and the answers recall is computed on
            out["recall"] = recall_at_k(s.rows(raw), data.gt, k)
    for rnd in range(ROUNDS):
        order = (
            range(len(searchers))
            if order_seed is None
            else np.random.default_rng(order_seed + rnd).permutation(len(searchers)).tolist()
        )
        for i in order:
            s, out, lat = searchers[i], outs[i], lats[i]
            with threads(1):
                s.set_threads(1)
                out["qps_batch1"] = max(out.get("qps_batch1", 0.0), len(xq) / _timed(lambda s=s: s.batch(xq, 1)))
                lat.append(latencies(lambda i, s=s: s.one(xq[i : i + 1]), n1))
            with threads(2):
                s.set_threads(2)
                s.batch(xq[: min(len(xq), 64)], 2)  # the 2-thread pool started outside the timing
                out["qps_batch2"] = max(out.get("qps_batch2", 0.0), len(xq) / _timed(lambda s=s: s.batch(xq, 2)))
            s.set_threads(1)
    for out, lat in zip(outs, lats, strict=True):
        every = np.concatenate(lat)
        out["qps_one1"] = n1 / min(float(r.sum()) for r in lat)
        out["p50_ms"] = float(np.percentile(every, 50) * 1e3)
        out["p99_ms"] = float(np.percentile(every, 99) * 1e3)
    return outs


def point(method: str, setting: str, m: dict[str, float], ram: dict[str, Any], build_s: float, **extra: Any) -> dict:
    return {
        "method": method,
        "setting": setting,
        **m,
        "bytes_per_item": ram["bytes_per_item"],
        "ram_how": ram["ram_how"],
        "nominal_bytes_per_item": ram["nominal_bytes_per_item"],
        "nominal_how": ram["nominal_how"],
        "build_s": build_s,
        **extra,
    }


# ---- RAM: load the saved index in a fresh process --------------------------------------------------

_RSS_SCRIPT = r"""
import ctypes, json, sys

def rss():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

kind, path, qpath, k, params = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
import numpy as np
q = np.ascontiguousarray(np.load(qpath)[:1], dtype=np.float32)
if kind == "vqrec":
    import vqrec.index as vi
    before = rss()
    idx = vi.load_index(path, mmap=False)
    idx.search(q, k, **params)
elif kind == "faiss":
    import faiss
    before = rss()
    idx = faiss.read_index(path)
    faiss.extract_index_ivf(idx).nprobe = params["nprobe"]
    idx.search(q, k)
elif kind == "hnswlib":
    import hnswlib
    before = rss()
    idx = hnswlib.Index(space="ip", dim=q.shape[1])
    idx.load_index(path)
    idx.set_ef(params["ef"])
    idx.knn_query(q, k=k)
elif kind == "scann":
    from scann.scann_ops.py import scann_ops_pybind
    before = rss()
    idx = scann_ops_pybind.load_searcher(path)
    idx.search(q[0], final_num_neighbors=k, **params)
else:
    raise SystemExit("unknown kind " + kind)
after = rss()
print(json.dumps({"before": before, "after": after}))
"""


def rss_bytes_per_item(
    kind: str, path: str, queries: NDArray[np.float32], n: int, params: dict[str, Any], k: int = 10
) -> float:
    """(VmRSS after loading the saved index at ``path`` and one query - VmRSS before) / n, in a new process."""
    qpath = os.path.join(os.path.dirname(path.rstrip("/")), "rss_query.npy")
    np.save(qpath, queries[:1])
    env = {**os.environ, "VQREC_THREADS": "1", "OMP_NUM_THREADS": "1", "VQREC_PROGRESS": "0"}
    r = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, kind, path, qpath, str(k), json.dumps(params)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"RSS subprocess for {kind} failed: {r.stderr.strip()[-500:]}")
    v = json.loads(r.stdout.strip().splitlines()[-1])
    return (v["after"] - v["before"]) / n


def ram_figure(
    kind: str,
    path: str,
    data: ScaleData,
    params: dict[str, Any],
    nominal: float,
    nominal_how: str,
    *,
    k: int = 10,
    measure: bool = True,
) -> dict[str, Any]:
    """The RAM figure of one index: measured RSS when ``measure`` and the subprocess works, else nominal."""
    out = {"nominal_bytes_per_item": nominal, "nominal_how": nominal_how}
    if measure:
        try:
            b = rss_bytes_per_item(kind, path, data.queries, data.n, params, k)
            return {**out, "bytes_per_item": b, "ram_how": "rss"}
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
            log(f"{kind}: RSS measurement failed, using the nominal figure ({e})")
    return {**out, "bytes_per_item": nominal, "ram_how": "nominal"}


def _sample(x: NDArray[np.float32], m: int = TRAIN_SAMPLE, seed: int = 0) -> NDArray[np.float32]:
    if len(x) <= m:
        return np.ascontiguousarray(x)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), m, replace=False))
    return np.ascontiguousarray(x[rows])


def _scaled_lists(n: int, at_1m: int) -> int:
    """peers.md's list count at 1M items, scaled as sqrt(n) for other sizes."""
    return max(16, int(round(at_1m * math.sqrt(n / 1_000_000))))


def _grid(full_quick: tuple[tuple[int, ...], tuple[int, ...]], quick: bool) -> tuple[int, ...]:
    return full_quick[1] if quick else full_quick[0]


def _peer_import(name: str) -> Any:
    try:
        if name == "scann":
            from scann.scann_ops.py import scann_builder, scann_ops_pybind

            return scann_ops_pybind, scann_builder
        import hnswlib

        return hnswlib
    except ImportError as e:
        raise ImportError(f"{name} is not installed: {PEER_HINT} (peers pinned as in ../shared/peers.md)") from e


# ---- the methods ------------------------------------------------------------------------------------


def measure_vqrec(
    data: ScaleData,
    *,
    k: int = 10,
    quick: bool = False,
    n_one: int = 500,
    workdir: str,
    nlist: int | None = None,
    score_aware: float = 0.3,
) -> list[dict[str, Any]]:
    """vqrec PQ M=d/2 x 4 bits, metric ip, score-aware codes (T, 0 = nearest codeword): codes only (rerank 0)
    and with int8 item vectors (rerank > 0)."""
    from vqrec.index import load_index
    from vqrec.trainers.config import TrainConfig
    from vqrec.trainers.quantizers import train

    d, n = data.d, data.n
    cfg = TrainConfig(
        method="pq", M=d // 2, nbits=4, metric="ip", eval_queries=50, eval_max_items=20000, score_aware=score_aware
    )
    t0 = time.perf_counter()
    cb = train(data.items, cfg, show_progress=False)
    train_s = time.perf_counter() - t0
    row_of = {s: i for i, s in enumerate(data.items.ids)}
    points: list[dict[str, Any]] = []
    reranks = _grid(VQREC_RERANK, quick)
    for vectors, rr_grid in (("none", [r for r in reranks if r == 0]), ("int8", [r for r in reranks if r > 0])):
        if not rr_grid:
            continue
        t1 = time.perf_counter()
        built = build_index(cb, data.items, nlist=nlist, item_vectors=vectors, show_progress=False)
        build_s = train_s + time.perf_counter() - t1
        path = os.path.join(workdir, f"vqrec-{vectors}")
        manifest = save_index(built, path, overwrite=True)
        del built
        idx = load_index(path, mmap=False)  # searched as the RSS figure is measured: loaded, in RAM
        if vectors == "none":
            log(scan_bandwidth(idx, data))
        nprobes = sorted({min(p, idx.nlist) for p in _grid(VQREC_NPROBE, quick)})
        disk = manifest["bytes"]["total"] / n
        ram = ram_figure(
            "vqrec", path, data, {"nprobe": nprobes[0]}, disk, "artifact bytes on disk / n (all files)", k=k
        )
        shutil.rmtree(path, ignore_errors=True)
        log(
            f"vqrec item_vectors={vectors}: nlist {idx.nlist}, build {build_s:.1f} s (train {train_s:.1f}), "
            f"{ram['bytes_per_item']:.1f} B/item ({ram['ram_how']}), {disk:.1f} on disk"
        )

        def rows(res: Any) -> NDArray[np.int64]:
            out = np.full((len(res), k), -1, np.int64)
            for q, r in enumerate(res):
                got = [row_of[s] for s in r.ids[:k]]
                out[q, : len(got)] = got
            return out

        grid: list[tuple[Searcher, str, dict[str, Any]]] = []
        for rr in rr_grid:
            for p in nprobes:

                def batch(xq: NDArray[np.float32], t: int, p: int = p, rr: int = rr, ix: Any = idx) -> Any:
                    return ix.search(xq, k, nprobe=p, rerank=rr)

                sa = f"+sa{score_aware}" if score_aware else ""
                setting = f"PQ{d // 2}x4{sa} nlist={idx.nlist} nprobe={p} rerank={rr}" + (
                    " (int8 vectors)" if rr else " (codes only)"
                )
                s = Searcher(batch=batch, one=lambda q, b=batch: b(q, 1), rows=rows)
                grid.append((s, setting, {"item_vectors": vectors, "nprobe": p, "rerank": rr}))
        points += _points_of("vqrec", grid, data, k, n_one, ram, build_s)
        del idx
    return points


def scan_bandwidth(idx: Any, data: ScaleData, nq: int = 20) -> str:
    """The exhaustive 4-bit scan (every item as one list, the norm scale read beside the codes) in bytes read
    per second, beside this core's plain read bandwidth (a sum over 512 MB), one thread, best of 3."""
    import ctypes

    from vqrec.index import fastscan as fs
    from vqrec.index.adc import _KERNEL

    if _KERNEL is None or not fs.fastscan_available() or idx.scan_kind != "fastscan4":
        return "scan bandwidth: not measured (needs the C kernel and 4-bit codes)"
    n, M = len(idx), idx.codebooks.M
    rows = np.array([0, n], np.int64)
    packed = fs.pack(np.asarray(idx.codes), rows)
    scale = idx._ip_scale
    ls = fs.ListScan(M=M, ksub=16, list_rows=rows, centroids_t=np.zeros((data.d, 1), np.float32), scale=scale,
                     add=None, packed=packed, lutmat=fs.lut_matrix(idx.codebooks.centroids, "pq")[0],
                     lut_ystep=M and data.d // M)  # fmt: skip
    y = idx.codebooks.to_code_space(data.queries[:nq], normalize=False)
    best = min(_timed(lambda: ls.search(None, y, None, nprobe=1, k=10, kcand=20, threads=1)) for _ in range(3))
    scan_bytes = nq * (packed.nbytes + (0 if scale is None else 4 * n))
    buf = np.ones(64 << 20, np.uint64)  # 512 MB
    f = _KERNEL.vqrec_read_words
    f.restype, f.argtypes = ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_int64]
    read = min(_timed(lambda: f(buf.ctypes.data, len(buf))) for _ in range(3))
    scan_bw, read_bw = scan_bytes / best / 1e9, buf.nbytes / read / 1e9
    return (
        f"exhaustive 4-bit scan of {n:,} items ({packed.nbytes / n:.0f} B codes + {0 if scale is None else 4} B "
        f"scale per item): {scan_bw:.2f} GB/s, {best / nq * 1e3:.2f} ms per query; single-core read bandwidth "
        f"{read_bw:.2f} GB/s; ratio {scan_bw / read_bw:.2f}"
    )


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build_faiss_fastscan(xb: NDArray[np.float32]) -> tuple[Any, float]:
    """faiss IVF{nlist},PQ{d/2}x4fs, inner product, as peers.md configures it: trained on (at most) TRAIN_SAMPLE
    points, every item added, 2 threads. (index, build seconds)."""
    n, d = xb.shape
    with threads(2):
        t0 = time.perf_counter()
        index = faiss.index_factory(d, f"IVF{_scaled_lists(n, 1024)},PQ{d // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
        index.train(_sample(xb))
        index.add(xb)
        return index, time.perf_counter() - t0


def measure_faiss(
    data: ScaleData, *, k: int = 10, quick: bool = False, n_one: int = 500, workdir: str
) -> list[dict[str, Any]]:
    """faiss IVF{nlist},PQ{d/2}x4fs, inner product, with and without an RFlat refine (k_factor)."""
    d, n = data.d, data.n
    nlist = _scaled_lists(n, 1024)
    m_pq = d // 2
    xb = data.items.vectors
    base, base_s = build_faiss_fastscan(xb)
    with threads(2):
        t1 = time.perf_counter()
        # the refine copy of the filled base: searching ``base`` alone is the codes-only point
        refine = faiss.IndexRefineFlat(base, faiss.swig_ptr(xb))
        refine_s = base_s + time.perf_counter() - t1
    ivf = faiss.extract_index_ivf(base)
    code_b = m_pq * 4 / 8
    points: list[dict[str, Any]] = []
    rows = lambda raw: raw[1].astype(np.int64)  # noqa: E731
    for label, index, build_s, nominal, grid in (
        ("", base, base_s, code_b + 8.5, [(p, 1) for p in _grid(FAISS_NPROBE, quick)]),
        (
            ",RFlat",
            refine,
            refine_s,
            code_b + 8.5 + 4 * d,
            [(p, kf) for p in _grid(FAISS_REFINE_NPROBE, quick) for kf in _grid(FAISS_K_FACTOR, quick)],
        ),
    ):
        path = os.path.join(workdir, f"faiss{label or '-base'}.index")
        faiss.write_index(index, path)
        how = "peers.md: codes + 8 B id + 0.5" + (" + 4d float copy" if label else "")
        ram = ram_figure("faiss", path, data, {"nprobe": grid[0][0]}, nominal, how, k=k)
        os.remove(path)
        log(f"faiss IVF{nlist},PQ{m_pq}x4fs{label}: build {build_s:.1f} s, {ram['bytes_per_item']:.1f} B/item")
        settings: list[tuple[Searcher, str, dict[str, Any]]] = []
        for p, kf in grid:
            if p > nlist:
                continue

            def batch(xq: NDArray[np.float32], t: int, p: int = p, kf: int = kf, index: Any = index) -> Any:
                ivf.nprobe = p
                if index is not base:
                    index.k_factor = kf
                return index.search(xq, k)

            s = Searcher(batch=batch, one=lambda q, b=batch: b(q, 1), rows=rows)
            setting = f"IVF{nlist},PQ{m_pq}x4fs{label} nprobe={p}" + (f" k_factor={kf}" if label else "")
            settings.append((s, setting, {"nprobe": p, "k_factor": kf}))
        points += _points_of("faiss", settings, data, k, n_one, ram, build_s)
    return points


def measure_scann(
    data: ScaleData, *, k: int = 10, quick: bool = False, n_one: int = 500, workdir: str
) -> list[dict[str, Any]]:
    """ScaNN tree + AH (d/4 and d/2 bytes): no reorder, int8 reorder (AH d/4), float32 reorder (AH d/2)."""
    scann_ops_pybind, scann_builder = _peer_import("scann")
    d, n = data.d, data.n
    leaves = _scaled_lists(n, 1000)
    xb = data.items.vectors
    configs = (  # (dims_per_block, reorder type or None)
        (2, None),
        (1, None),
        (2, scann_builder.ReorderType.INT8),
        (1, scann_builder.ReorderType.FLOAT32),
    )
    points: list[dict[str, Any]] = []
    for dpb, reorder in configs:
        code_b = d / dpb * 4 / 8
        max_rr = max(_grid(SCANN_REORDER, quick))
        b = (
            scann_ops_pybind.builder(xb, k, "dot_product")
            .tree(num_leaves=leaves, num_leaves_to_search=10, training_sample_size=TRAIN_SAMPLE)
            .score_ah(dpb, anisotropic_quantization_threshold=0.2, training_sample_size=TRAIN_SAMPLE)
        )
        if reorder is not None:
            b = b.reorder(max_rr, quantize=reorder)
        t0 = time.perf_counter()
        searcher = b.set_n_training_threads(2).build()
        build_s = time.perf_counter() - t0
        rname = {None: "", scann_builder.ReorderType.INT8: " + int8 reorder"}.get(reorder, " + float reorder")
        name = f"tree{leaves}+AH{code_b:g}{rname}"
        extra = {None: 0.0, scann_builder.ReorderType.INT8: float(d)}.get(reorder, 4.0 * d)
        nominal = code_b + 20.5 + extra
        how = "peers.md: codes + 20.5" + {0.0: "", float(d): " + d int8 copy"}.get(extra, " + 4d float copy")
        path = os.path.join(workdir, "scann")
        os.makedirs(path, exist_ok=True)
        searcher.serialize(path)
        ram = ram_figure("scann", path, data, {"leaves_to_search": 10}, nominal, how, k=k)
        shutil.rmtree(path, ignore_errors=True)
        log(f"ScaNN {name}: build {build_s:.1f} s, {ram['bytes_per_item']:.1f} B/item ({ram['ram_how']})")
        if reorder is None:
            grid = [(L, None) for L in _grid(SCANN_LEAVES, quick)]
        else:
            grid = [(L, rr) for L in _grid(SCANN_REORDER_LEAVES, quick) for rr in _grid(SCANN_REORDER, quick)]
        settings: list[tuple[Searcher, str, dict[str, Any]]] = []
        for L, rr in grid:
            L = min(L, leaves)
            kw = {"leaves_to_search": L, "pre_reorder_num_neighbors": rr if rr is not None else k}

            def batch(xq: NDArray[np.float32], t: int, kw: dict[str, Any] = kw, s: Any = searcher) -> Any:
                if t > 1:
                    return s.search_batched_parallel(xq, final_num_neighbors=k, **kw)
                return s.search_batched(xq, final_num_neighbors=k, **kw)

            def one(q: NDArray[np.float32], kw: dict[str, Any] = kw, s: Any = searcher) -> Any:
                return s.search(q[0], final_num_neighbors=k, **kw)

            sr = Searcher(
                batch=batch,
                one=one,
                rows=lambda raw: np.asarray(raw[0], dtype=np.int64),
                set_threads=lambda t, s=searcher: s.set_num_threads(t),
            )
            setting = f"{name} leaves={L}" + (f" reorder={rr}" if rr is not None else "")
            settings.append((sr, setting, {"leaves_to_search": L, "reorder": rr}))
        points += _points_of("scann", settings, data, k, n_one, ram, build_s)
        del searcher
    return points


def measure_hnswlib(
    data: ScaleData, *, k: int = 10, quick: bool = False, n_one: int = 500, workdir: str
) -> list[dict[str, Any]]:
    """hnswlib M=16, ef_construction=100, space ip, ef grid."""
    hnswlib = _peer_import("hnswlib")
    d, n = data.d, data.n
    idx = hnswlib.Index(space="ip", dim=d)
    t0 = time.perf_counter()
    idx.init_index(max_elements=n, M=16, ef_construction=100)
    idx.add_items(data.items.vectors, np.arange(n), num_threads=2)
    build_s = time.perf_counter() - t0
    path = os.path.join(workdir, "hnsw.bin")
    idx.save_index(path)
    ef_grid = _grid(HNSW_EF, quick)
    nominal = 4 * d + 148.5
    ram = ram_figure("hnswlib", path, data, {"ef": ef_grid[0]}, nominal, "peers.md: 4d float + 2M links + 20.5", k=k)
    os.remove(path)
    log(f"hnswlib M=16: build {build_s:.1f} s, {ram['bytes_per_item']:.1f} B/item ({ram['ram_how']})")
    settings: list[tuple[Searcher, str, dict[str, Any]]] = []
    for ef in ef_grid:

        def batch(xq: NDArray[np.float32], t: int, ef: int = ef) -> Any:
            idx.set_ef(ef)
            return idx.knn_query(xq, k=k)

        s = Searcher(
            batch=batch,
            one=lambda q, b=batch: b(q, 1),
            rows=lambda raw: raw[0].astype(np.int64),
            set_threads=idx.set_num_threads,
        )
        settings.append((s, f"M=16 efC=100 ef={ef}", {"ef": ef}))
    return _points_of("hnswlib", settings, data, k, n_one, ram, build_s)


MEASURE = {"vqrec": measure_vqrec, "faiss": measure_faiss, "scann": measure_scann, "hnswlib": measure_hnswlib}


@dataclass
class Pending:
    """One index's grid, built and waiting to be timed with every other method's (interleaved mode)."""

    method: str
    settings: Sequence[tuple[Searcher, str, dict[str, Any]]]
    ram: dict[str, Any]
    build_s: float


_DEFERRED: list[Pending] | None = None  # set by bench_dataset in interleaved mode


def _points_of(
    method: str,
    settings: Sequence[tuple[Searcher, str, dict[str, Any]]],
    data: ScaleData,
    k: int,
    n_one: int,
    ram: dict[str, Any],
    build_s: float,
) -> list[dict[str, Any]]:
    """The measured points of one index's grid of (searcher, setting name, extra fields), logged. In interleaved
    mode the grid is kept for ``measure_pending`` instead (the index stays alive through its searchers) and no
    point is returned yet."""
    if _DEFERRED is not None:
        _DEFERRED.append(Pending(method, settings, ram, build_s))
        return []
    ms = measure_grid([s for s, _, _ in settings], data, k, n_one)
    return _make_points(method, settings, ms, ram, build_s)


def _make_points(
    method: str,
    settings: Sequence[tuple[Searcher, str, dict[str, Any]]],
    ms: Sequence[dict[str, float]],
    ram: dict[str, Any],
    build_s: float,
) -> list[dict[str, Any]]:
    out = []
    for (_, setting, extra), m in zip(settings, ms, strict=True):
        out.append(point(method, setting, m, ram, build_s, **extra))
        _log_point(out[-1])
    return out


def measure_pending(
    pending: Sequence[Pending], data: ScaleData, k: int, n_one: int, *, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Time every pending grid together: ROUNDS rounds over all methods' settings, each round in its own seeded
    random order (``measure_grid``). Points per method, in the order the grids were built."""
    flat = [(p, st) for p in pending for st in p.settings]
    ms = measure_grid([st[0] for _, st in flat], data, k, n_one, order_seed=seed)
    out: dict[str, list[dict[str, Any]]] = {}
    i = 0
    for p in pending:
        n = len(p.settings)
        out.setdefault(p.method, []).extend(_make_points(p.method, p.settings, ms[i : i + n], p.ram, p.build_s))
        i += n
    return out


def _log_point(p: dict[str, Any]) -> None:
    log(
        f"{p['method']} {p['setting']}: recall {p['recall']:.3f}, QPS batch1 {p['qps_batch1']:.0f} "
        f"one {p['qps_one1']:.0f} batch2 {p['qps_batch2']:.0f}"
    )


# ---- frontier and ratios (pure) ---------------------------------------------------------------------


def memory_classes(bytes_per_item: float, d: int) -> list[str]:
    """The memory classes a figure fits: codes only <= 48 B, compact copy <= d + 48 B, any."""
    out = []
    if bytes_per_item <= CODES_ONLY_BYTES:
        out.append("codes only")
    if bytes_per_item <= d + CODES_ONLY_BYTES:
        out.append("compact copy")
    out.append("any")
    return out


def in_class(points: Sequence[dict[str, Any]], cls: str, d: int, bytes_key: str = "bytes_per_item") -> list[dict]:
    return [p for p in points if cls in memory_classes(p[bytes_key], d)]


def pareto(points: Sequence[dict[str, Any]], qps_key: str) -> list[dict[str, Any]]:
    """The points no other point beats on both recall and ``qps_key`` (ties kept once), by recall ascending."""
    best: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (-p["recall"], -p[qps_key])):
        if not best or p[qps_key] > best[-1][qps_key]:
            best.append(p)
    return best[::-1]


def best_at(points: Sequence[dict[str, Any]], level: float, qps_key: str) -> dict[str, Any] | None:
    """The fastest point (by ``qps_key``) with recall >= level, or None."""
    ok = [p for p in points if p["recall"] >= level]
    return max(ok, key=lambda p: p[qps_key]) if ok else None


def compare(
    points: Sequence[dict[str, Any]],
    d: int,
    *,
    qps_key: str,
    levels: Sequence[float] = LEVELS,
    ours: str = "vqrec",
    bytes_key: str = "bytes_per_item",
) -> list[dict[str, Any]]:
    """Per memory class and recall level: the best peer's and our best QPS at recall >= level and
    ours / peer (None when a side does not reach the level)."""
    rows = []
    for cls in CLASSES:
        pts = in_class(points, cls, d, bytes_key)
        mine = [p for p in pts if p["method"] == ours]
        peers = [p for p in pts if p["method"] != ours]
        for level in levels:
            a, b = best_at(mine, level, qps_key), best_at(peers, level, qps_key)
            rows.append(
                {
                    "class": cls,
                    "level": level,
                    "qps_key": qps_key,
                    "ours": a[qps_key] if a else None,
                    "ours_setting": a["setting"] if a else None,
                    "peer": b[qps_key] if b else None,
                    "peer_method": b["method"] if b else None,
                    "peer_setting": b["setting"] if b else None,
                    "ratio": a[qps_key] / b[qps_key] if a and b else None,
                }
            )
    return rows


# ---- output -----------------------------------------------------------------------------------------

QPS_KEYS = {"qps_one1": "one-by-one, 1 thread", "qps_batch1": "batch, 1 thread"}


def machine() -> dict[str, Any]:
    model, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass

    def ver(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "scann": ver("scann"),
        "hnswlib": ver("hnswlib"),
        "numpy": np.__version__,
        "vqrec_kernel": kernel_available(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }


def _n(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def method_table(points: Sequence[dict[str, Any]]) -> str:
    headers = [
        "setting",
        "recall@k",
        "QPS batch 1t",
        "QPS 1-by-1 1t",
        "QPS batch 2t",
        "p50 ms",
        "p99 ms",
        "B/item",
        "nominal B/item",
        "build s",
    ]
    rows = [
        [
            p["setting"],
            f"{p['recall']:.3f}",
            _n(p["qps_batch1"]),
            _n(p["qps_one1"]),
            _n(p["qps_batch2"]),
            f"{p['p50_ms']:.3f}",
            f"{p['p99_ms']:.3f}",
            f"{p['bytes_per_item']:.1f} ({p['ram_how']})",
            f"{p['nominal_bytes_per_item']:.1f}",
            f"{p['build_s']:.1f}",
        ]
        for p in points
    ]
    return md_table(headers, rows)


def format_dataset(entry: dict[str, Any], bytes_key: str = "bytes_per_item") -> str:
    d = entry["d"]
    pts = [p for b in entry["methods"].values() for p in b["points"]]
    out = [
        "",
        f"## {entry['name']}: {entry['n']:,} items x d={d}, {entry['nq']} queries, k={entry['k']}",
        "",
        f"ground truth: {entry['gt_how']}; one-by-one over the first {entry['n_one']} queries",
    ]
    mz = entry.get("measure")
    if mz:
        out += [
            "",
            f"Every method's indexes were built first, then timed together: {mz['settings']} settings of "
            f"{mz['indexes']} indexes, {mz['rounds']} rounds, each round in its own random order, the best pass of "
            f"each setting kept ({mz['seconds']:.0f} s; load {_la(mz['load_start'])} at start, "
            f"{_la(mz['load_end'])} at end). The load under each method is that of its build.",
        ]
    for method, block in entry["methods"].items():
        out += ["", f"### {method}  (load {_la(block['load_start'])} at start, {_la(block['load_end'])} at end)", ""]
        if "error" in block:
            out.append(f"skipped: {block['error']}")
        else:
            out.append(method_table(block["points"]))
    out += [
        "",
        f"Memory classes by {'measured RSS (nominal where marked)' if bytes_key == 'bytes_per_item' else 'nominal'}"
        f" B/item: codes only <= {CODES_ONLY_BYTES:g}, compact copy <= d + {CODES_ONLY_BYTES:g} = "
        f"{d + CODES_ONLY_BYTES:g}, any.",
    ]
    for qk, title in QPS_KEYS.items():
        for cls in CLASSES:
            front = pareto(in_class(pts, cls, d, bytes_key), qk)
            out += ["", f"### Pareto frontier, recall vs QPS {title}, class '{cls}'", ""]
            if not front:
                out.append("(no point in this class)")
                continue
            out.append(
                md_table(
                    ["method", "setting", "recall@10", "QPS", "B/item"],
                    [
                        [p["method"], p["setting"], f"{p['recall']:.3f}", _n(p[qk]), f"{p[bytes_key]:.1f}"]
                        for p in front
                    ],
                )
            )
    for qk, title in QPS_KEYS.items():
        rows = compare(pts, d, qps_key=qk, bytes_key=bytes_key)
        out += ["", f"### vqrec / best peer at recall >= level, QPS {title}", ""]
        table = []
        for r in rows:
            peer = f"{_n(r['peer'])} ({r['peer_method']}: {r['peer_setting']})" if r["peer"] else "-"
            ours = f"{_n(r['ours'])} ({r['ours_setting']})" if r["ours"] else "-"
            table.append([r["class"], f"{r['level']:g}", peer, ours, _n(r["ratio"], ".2f")])
        out.append(md_table(["class", "recall >=", "best peer QPS", "vqrec QPS", "vqrec / peer"], table))
    return "\n".join(out)


def format_header(report: dict[str, Any]) -> str:
    h = report["machine"]
    return "\n".join(
        [
            f"# vqrec scale bench {report['started_at']}",
            "",
            f"machine: {h['cpu']}, {h['cpus']} cpus, AVX2 {'yes' if h['avx2'] else 'no'}, AVX-512 "
            f"{' '.join(h['avx512']) if h['avx512'] else 'no'}; {h['platform']}, python {h['python']}",
            f"versions: faiss {h['faiss']}, scann {h['scann']}, hnswlib {h['hnswlib']}, numpy {h['numpy']}; "
            f"vqrec C kernel {'yes' if h['vqrec_kernel'] else 'NO (numpy fallback)'}; "
            f"OMP_WAIT_POLICY={h['omp_wait_policy']}; loadavg at start {_la(report['loadavg_start'])}",
            "B/item: (rss) = VmRSS delta of loading the saved index + one query in a fresh process / n; "
            "(nominal) = peers.md's formula (peers) or the artifact's bytes on disk (vqrec).",
        ]
    )


# ---- driver -----------------------------------------------------------------------------------------


def bench_dataset(
    data: ScaleData,
    methods: Sequence[str],
    *,
    k: int,
    quick: bool,
    n_one: int,
    nlist: int | None = None,
    score_aware: float = 0.3,
    interleave: bool = True,
) -> dict[str, Any]:
    """Build and time every method on ``data``. ``interleave`` (default): every method's indexes are built first,
    then timed together (``measure_pending``), so that each setting's ROUNDS passes fall at random times across
    the whole timing phase, whichever method it belongs to; else each index is timed right after its build."""
    global _DEFERRED
    entry: dict[str, Any] = {
        "name": data.name,
        "path": data.path,
        "n": data.n,
        "d": data.d,
        "nq": len(data.queries),
        "k": k,
        "n_one": min(n_one, len(data.queries)),
        "gt_how": data.gt_how,
        "methods": {},
        "interleaved": interleave,
    }
    pending: list[Pending] = []
    _DEFERRED = pending if interleave else None
    try:
        _build_methods(entry, data, methods, k=k, quick=quick, n_one=n_one, nlist=nlist, score_aware=score_aware)
    finally:
        _DEFERRED = None
    if pending:
        la0, t0 = os.getloadavg(), time.perf_counter()
        n_settings = sum(len(p.settings) for p in pending)
        log(f"{data.name}: timing {n_settings} settings of {len(pending)} indexes together, {ROUNDS} rounds ...")
        got = measure_pending(pending, data, k, n_one)
        entry["measure"] = {
            "settings": n_settings,
            "indexes": len(pending),
            "rounds": ROUNDS,
            "load_start": la0,
            "load_end": os.getloadavg(),
            "seconds": time.perf_counter() - t0,
        }
        for method, pts in got.items():
            entry["methods"][method]["points"] = pts
    return entry


def _build_methods(
    entry: dict[str, Any],
    data: ScaleData,
    methods: Sequence[str],
    *,
    k: int,
    quick: bool,
    n_one: int,
    nlist: int | None,
    score_aware: float,
) -> None:
    for method in methods:
        block: dict[str, Any] = {"load_start": os.getloadavg()}
        log(f"{data.name}: {method} ...")
        t0 = time.perf_counter()
        workdir = tempfile.mkdtemp(prefix=f"vqrec-scale-{method}-")
        try:
            kw: dict[str, Any] = {"nlist": nlist, "score_aware": score_aware} if method == "vqrec" else {}
            block["points"] = MEASURE[method](data, k=k, quick=quick, n_one=n_one, workdir=workdir, **kw)
        except ImportError as e:
            block["error"] = str(e)
            block["points"] = []
            log(str(e))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        block["load_end"] = os.getloadavg()
        block["seconds"] = time.perf_counter() - t0
        entry["methods"][method] = block


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", default=[], help="a synthetic.py output directory (repeatable)")
    p.add_argument("--n", type=int, default=None, help="generate this many items into a temporary directory")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--seed", type=int, default=1298)
    p.add_argument("--nq", type=int, default=1000, help="queries (the first nq users)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--n-one", type=int, default=500, help="queries timed one per call (300-1000)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--quick", action="store_true", help="shorter parameter grids")
    p.add_argument("--nlist", type=int, default=None, help="vqrec lists (default: auto, 2 sqrt(n) from 100k items)")
    p.add_argument(
        "--score-aware",
        type=float,
        default=0.3,
        help="vqrec's score-aware codes threshold T (0: nearest-codeword codes); 0.3 is what train auto tries",
    )
    p.add_argument(
        "--classes-by",
        choices=("rss", "nominal"),
        default="rss",
        help="B/item figure the memory classes use: measured RSS (default) or nominal",
    )
    p.add_argument(
        "--per-index",
        action="store_true",
        help="time each index right after its build, not every method's indexes together in random order "
        "(less memory at once; a slow spell of the machine then falls on whichever method it meets)",
    )
    p.add_argument("--json", default=None, help="write every measured point to this JSON file")
    p.add_argument("--omp-spin", action="store_true", help="keep OpenMP spin-waiting (no OMP_WAIT_POLICY=PASSIVE)")
    args = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(args)
    if argv is None and not a.omp_spin and "OMP_WAIT_POLICY" not in os.environ:
        # read when libgomp loads (import faiss): restart with it set, as bench/run.py does
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "bench.scale", *args])
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {','.join(METHODS)}")
    if not a.data and a.n is None:
        p.error("give --data DIR or --n N (with --d, --seed) to generate")
    os.environ.setdefault("VQREC_PROGRESS", "0")
    report: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": os.getloadavg(),
        "args": vars(a),
        "datasets": [],
    }
    print(format_header(report), flush=True)
    sets: list[tuple[str, str | None]] = [(dpath, None) for dpath in a.data]
    if a.n is not None:
        sets.append(("", f"synthetic n={a.n} d={a.d} seed={a.seed} nq={a.nq}"))
    bytes_key = "bytes_per_item" if a.classes_by == "rss" else "nominal_bytes_per_item"
    for dpath, gen_name in sets:
        tmp = None
        try:
            if gen_name is not None:
                tmp = tempfile.mkdtemp(prefix="vqrec-scale-data-")
                log(f"generating {gen_name} into {tmp} ...")
                dpath = generate(a.n, a.d, a.seed, a.nq, tmp)
            data = load_data(dpath, a.nq, a.k, name=gen_name)
            log(f"{data.name}: {data.n} x {data.d}, {len(data.queries)} queries; ground truth {data.gt_how}")
            entry = bench_dataset(
                data,
                methods,
                k=a.k,
                quick=a.quick,
                n_one=a.n_one,
                nlist=a.nlist,
                score_aware=a.score_aware,
                interleave=not a.per_index,
            )
            del data
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        report["datasets"].append(entry)
        print(format_dataset(entry, bytes_key), flush=True)
        if a.json:  # after every data set, so a long run keeps what it measured
            report["loadavg_end"] = os.getloadavg()
            Path(a.json).write_text(json.dumps(report, indent=1, default=json_default))
    if a.json:
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
