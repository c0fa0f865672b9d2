"""vqrec benchmark: quality, speed, size and build time of PQ / OPQ / RQ indexes, beside faiss.

    python -m bench.run [--quick] [--datasets ml100k,synth100k] [--out DIR]

For every dataset, method (pq, opq, rq) and size (M = 8, 16, 32 bytes per item, nbits = 8, metric ip)
it trains codebooks with ``trainers.quantizers.train``, builds an index with ``index.build_index`` and
measures, against exact search on the float vectors:

* recall@10 user->item (exact inner product), ADC only and with rerank=100 on float16 item vectors;
* recall@10 item->item (exact cosine; zero-norm items are neither queries nor neighbours);
* on ml100k, leave-one-out HR@10 with seen items excluded, beside the exact HR@10;
* QPS batched (all users at once, 2 threads) and one query at a time (1 thread), p50/p99 latency;
* bytes per item and per artifact (from the saved manifest), train and encode time;
* the lookup-table path of queries by id: precomputed codeword-pair tables vs decode-then-LUT;
* the same figures for two faiss indexes: "same codes" (our codebooks and codes inside
  faiss.IndexPQ / IndexPreTransform+IndexPQ / IndexResidualQuantizer: the speed comparison on
  identical codes) and "native" (faiss's own index of the same kind and size, trained by faiss on the
  raw vectors: the quality comparison);
* for one config per dataset, the p50/p99 latency of recommend / similar through the real HTTP
  service (uvicorn subprocess on 127.0.0.1), and how much HTTP adds over the in-process call.

Our ip codebooks are norm-explicit (codes hold unit directions y_hat, the index keeps |x| exactly), so
faiss searching the same codes ranks by <q, y_hat> without the per-item norm: its recall is not
comparable (marked n.c.), its speed is.

Data never enters the repository: ml100k is read from ../shared/data, synth100k is generated in memory
with ../shared/data/synthetic.py. Results go to bench/out/ (gitignored) as JSON and markdown; progress
goes to stderr. The CLI restarts itself with OMP_WAIT_POLICY=PASSIVE unless that is set (or --omp-spin):
faiss's spinning OpenMP workers made its 2-thread batches up to 50x slower on this shared 2-core machine.

    bench/data.py       datasets and exact answers     bench/faiss_ref.py  the faiss counterparts
    bench/measure.py    recall, HR, scan, LUT paths    bench/serving.py    HTTP through the real service
    bench/timing.py     threads, latencies, QPS        bench/report.py     markdown tables and JSON
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from vqrec.index import build_index, kernel_available, save_index
from vqrec.index.codebooks import Codebooks
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train, training_sample

from .data import DATASETS, EXPECTED_EXACT_HR, REPO, RERANK, Dataset, K, Truth, load_dataset, make_tiny, prepare_truth
from .faiss_ref import faiss_native, faiss_same_codes
from .measure import lut_paths, quality_faiss, quality_ours, scan_speed
from .report import format_report, json_default, write_report
from .serving import bench_http, service_available, wait_for_service
from .timing import log, speed

__all__ = [
    "Dataset",
    "Truth",
    "bench_config",
    "bench_http",
    "dataset_entry",
    "format_report",
    "json_default",
    "main",
    "make_tiny",
    "new_report",
    "prepare_truth",
    "run",
    "service_available",
    "write_report",
]

DEFAULT_OUT = REPO / "bench" / "out"
METHODS = ("pq", "opq", "rq")
SIZES = (8, 16, 32)
# one config per dataset goes through HTTP
HTTP_CONFIG = {"ml100k": ("rq", 16), "synth100k": ("pq", 16)}


def bench_config(
    ds: Dataset,
    method: str,
    M: int,
    *,
    nbits: int = 8,
    truth: Truth | None = None,
    overrides: dict[str, Any] | None = None,
    n_single: int = 500,
    n_lut: int = 200,
    save_dir: str | None = None,
    compare_faiss: bool = True,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Train, build, save and measure one (method, M, nbits) config on ``ds``; returns a JSON-able dict.

    With ``save_dir`` the index artifact is kept at ``save_dir/<dataset>-<method><M>`` (for the HTTP
    figures); otherwise it is written to a temporary directory and removed after its size is read.
    """
    truth = truth or prepare_truth(ds)
    overrides = dict(overrides if overrides is not None else ds.train_overrides.get(method, {}))
    cfg = TrainConfig(method=method, M=M, nbits=nbits, metric="ip", **overrides)
    name = f"{ds.name}-{method}{M}" + ("" if nbits == 8 else f"x{nbits}")
    res: dict[str, Any] = {
        "dataset": ds.name,
        "data": ds.data,
        "name": name,
        "method": method,
        "M": M,
        "nbits": nbits,
        "code_bytes_per_item": cfg.M * cfg.nbits / 8,
        "train_config": cfg.to_dict(),
        "overrides": overrides,
        "n_items": ds.items.n,
        "n_users": ds.users.n,
        "d": ds.items.d,
        "loadavg_start": os.getloadavg(),
    }

    phases: dict[str, float] = {}
    res["phase_seconds"] = phases
    t0 = time.perf_counter()
    cb: Codebooks = train(ds.items, cfg, queries=ds.users, show_progress=show_progress)
    t1 = time.perf_counter()
    index = build_index(cb, ds.items, users=ds.users, item_vectors="float16", show_progress=show_progress)
    t2 = time.perf_counter()
    res["build"] = {
        "train_s": cb.report.get("train_seconds"),
        "train_wall_s": t1 - t0,
        "encode_s": t2 - t1,
        "train_report_recall@10": cb.report.get("eval", {}).get("recall@10"),
    }
    res["size"] = _saved_size(index, name, save_dir)
    if save_dir is not None:
        res["index_dir"] = os.path.join(save_dir, name)
    phases["train_build_save"] = time.perf_counter() - t0

    t = time.perf_counter()
    res["ours"] = quality_ours(index, ds, truth)
    phases["ours_quality"] = time.perf_counter() - t
    t = time.perf_counter()
    res["ours"].update(speed(lambda x: index.search(x, K), ds.users.vectors, n_single))
    res["ours"].update(scan_speed(index, ds.users.vectors, n_single))
    phases["ours_speed"] = time.perf_counter() - t
    t = time.perf_counter()
    res["lut"] = lut_paths(index, truth.i2i_rows, n_single=n_lut)
    phases["lut_paths"] = time.perf_counter() - t

    if compare_faiss:
        xv = index.item_vectors
        assert xv is not None
        t = time.perf_counter()
        same = faiss_same_codes(index)
        res["faiss_same_codes"] = {
            "decode_max_abs_err": same.decode_max_abs_err,
            "bytes": same.nbytes,
            "code_bytes_per_item": same.code_size,
            **quality_faiss(same, ds, truth, xv),
        }
        res["faiss_same_codes"].update(speed(lambda x: same.search(x, K), ds.users.vectors, n_single))
        del same
        phases["faiss_same_codes"] = time.perf_counter() - t
        t = time.perf_counter()
        train_rows, _ = training_sample(ds.items, cfg, has_queries=True)
        native = faiss_native(
            method, ds.items.d, M, nbits, ds.items.vectors[train_rows], ds.items.vectors, beam_size=cfg.beam_size
        )
        phases["faiss_native_train_add"] = time.perf_counter() - t
        t = time.perf_counter()
        res["faiss_native"] = {
            "train_s": native.train_s,
            "add_s": native.add_s,
            "bytes": native.nbytes,
            "code_bytes_per_item": native.code_size,
            "n_train": len(train_rows),
            **quality_faiss(native, ds, truth, xv),
        }
        res["faiss_native"].update(speed(lambda x: native.search(x, K), ds.users.vectors, n_single))
        del native
        phases["faiss_native_measure"] = time.perf_counter() - t
        ours = res["ours"]
        res["ratios"] = {
            f"{what}_vs_{other}": ours[what] / res[f"faiss_{other}"][what]
            for what in ("qps_batch", "qps_single")
            for other in ("same_codes", "native")
        }
    res["loadavg_end"] = os.getloadavg()
    return res


def _saved_size(index: Any, name: str, save_dir: str | None) -> dict[str, Any]:
    """Bytes from the manifest of the saved artifact (in ``save_dir``, or a temporary directory removed after)."""
    tmp = tempfile.mkdtemp(prefix="vqrec-bench-") if save_dir is None else None
    try:
        b = save_index(index, os.path.join(tmp or str(save_dir), name), overwrite=True)["bytes"]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "code_bytes_per_item": b["code_bytes_per_item"],
        "index_bytes_per_item": b["index_bytes_per_item"],
        "artifact_bytes": b["total"],
        "pair_tables_bytes": b["pair_tables"],
        "item_vectors_bytes": b["item_vectors"],
        "users_bytes": b["users"],
        "float32_bytes_per_item": b["float32_bytes_per_item"],
    }


def run(
    datasets: Sequence[str] = DATASETS,
    *,
    methods: Sequence[str] = METHODS,
    sizes: Sequence[int] = SIZES,
    http: bool = True,
    n_http: int = 500,
    wait_service_s: float = 0.0,
) -> dict[str, Any]:
    """Every (dataset, method, size) config, then HTTP for one config per dataset; returns the JSON report."""
    started = time.perf_counter()
    report = new_report()
    http_root = tempfile.mkdtemp(prefix="vqrec-bench-http-")
    try:
        for dname in datasets:
            t0 = time.perf_counter()
            ds = load_dataset(dname)
            truth = prepare_truth(ds)
            log(f"{dname}: {ds.data}; exact HR@{K} = {truth.exact_hr}")
            entry = dataset_entry(ds, truth)
            n_single = min(ds.users.n, 1000 if ds.items.n < 10_000 else 500)
            for method in methods:
                for M in sizes:
                    keep = http and HTTP_CONFIG.get(dname) == (method, M)
                    log(f"{dname} {method} M={M} ...")
                    r = bench_config(
                        ds,
                        method,
                        M,
                        truth=truth,
                        n_single=n_single,
                        save_dir=os.path.join(http_root, dname) if keep else None,
                    )
                    entry["configs"].append(r)
                    o = r["ours"]
                    log(
                        f"{dname} {method} M={M}: recall u2i {o['recall_u2i']:.3f} i2i {o['recall_i2i']:.3f} "
                        f"qps batch {o['qps_batch']:.0f} single {o['qps_single']:.0f} "
                        f"({r['build']['train_wall_s']:.1f}s train)"
                    )
            if http:
                entry["http"] = _run_http(dname, entry, ds, truth, n_http, wait_service_s)
            entry["seconds"] = time.perf_counter() - t0
            report["datasets"][dname] = entry
    finally:
        shutil.rmtree(http_root, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    report["seconds"] = time.perf_counter() - started
    return report


def new_report() -> dict[str, Any]:
    """The report skeleton: when, where (host, load), k and rerank; ``datasets`` filled by ``run``."""
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "adc_kernel": kernel_available(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        },
        "loadavg_start": os.getloadavg(),
        "k": K,
        "rerank": RERANK,
        "datasets": {},
    }


def dataset_entry(ds: Dataset, truth: Truth) -> dict[str, Any]:
    """A dataset's part of the report; ``configs`` gets one ``bench_config`` result per config."""
    return {
        "data": ds.data,
        "n_items": ds.items.n,
        "n_users": ds.users.n,
        "d": ds.items.d,
        "exact_hr": truth.exact_hr,
        "expected_exact_hr": EXPECTED_EXACT_HR.get(ds.name),
        "zero_items": int((~ds.items.vectors.any(axis=1)).sum()),
        "i2i_queries": len(truth.i2i_rows),
        "configs": [],
    }


def _run_http(
    dname: str, entry: dict[str, Any], ds: Dataset, truth: Truth, n_http: int, wait_service_s: float
) -> dict[str, Any]:
    cfgs = [c for c in entry["configs"] if "index_dir" in c]
    if not cfgs:
        return {"skipped": f"the HTTP config {HTTP_CONFIG.get(dname)} was not benchmarked"}
    if not wait_for_service(wait_service_s):
        return {"skipped": "service/main.py with create_app does not exist (yet)"}
    log(f"{dname}: HTTP on {cfgs[0]['name']} ...")
    try:
        items = [ds.items.ids[r] for r in truth.i2i_rows]
        return {"config": cfgs[0]["name"], **bench_http(cfgs[0]["index_dir"], ds.users.ids, items, n_requests=n_http)}
    except Exception as e:  # report and carry on: the other figures are still worth printing
        log(f"HTTP failed: {e}")
        return {"config": cfgs[0]["name"], "error": f"{type(e).__name__}: {e}"}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="ml100k only, 16 bytes per item only")
    p.add_argument("--datasets", default=None, help=f"comma-separated, from {','.join(DATASETS)}")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--bytes", default=None, help="comma-separated bytes per item (M), default 8,16,32")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="directory for the JSON and markdown report")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP latency figures")
    p.add_argument("--http-requests", type=int, default=500)
    p.add_argument(
        "--wait-service",
        type=float,
        default=0.0,
        help="seconds to wait for service/main.py to appear before skipping HTTP",
    )
    p.add_argument(
        "--omp-spin", action="store_true", help="keep OpenMP's default spin-waiting instead of OMP_WAIT_POLICY=PASSIVE"
    )
    args = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(args)
    if argv is None and not a.omp_spin and "OMP_WAIT_POLICY" not in os.environ:
        # faiss's OpenMP workers spin-wait by default; on a shared 2-core machine a spinning worker that loses
        # its core stalls the whole parallel region (2-thread faiss batches measured up to 50x slower). The
        # policy is read when libgomp loads (at import faiss), so restart with it set.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "bench.run", *args])
    datasets = a.datasets.split(",") if a.datasets else (["ml100k"] if a.quick else list(DATASETS))
    sizes = [int(s) for s in a.bytes.split(",")] if a.bytes else ([16] if a.quick else list(SIZES))
    methods = a.methods.split(",")
    for dname in datasets:
        if dname not in DATASETS:
            p.error(f"unknown dataset {dname!r}; choose from {','.join(DATASETS)}")
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {','.join(METHODS)}")
    os.environ.setdefault("VQREC_PROGRESS", "0")
    report = run(
        datasets,
        methods=methods,
        sizes=sizes,
        http=not a.no_http,
        n_http=a.http_requests,
        wait_service_s=a.wait_service,
    )
    report["args"] = vars(a)
    text = format_report(report)
    print(text)
    jpath, mpath = write_report(report, a.out)
    print(f"\nwrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
