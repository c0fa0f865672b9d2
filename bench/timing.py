"""Timing helpers: thread settings for both engines, median wall time, per-call latencies, QPS."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the tables)."""
    print(f"[bench {time.strftime('%H:%M:%S')} load {_load()}] {msg}", file=sys.stderr, flush=True)


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run our ADC scan (VQREC_THREADS) and faiss (OpenMP) with ``n`` threads, then restore.

    numpy's OpenBLAS (pthreads) runs one thread in both modes, as the service runs it: its worker threads
    spin after a small product (a query rotation, a LUT) and steal the core the scan threads need (opq
    32 B batches ran at 0.64x faiss that way). faiss's own OpenBLAS is left alone: it is built on
    OpenMP, and limiting it would also cut faiss's OpenMP scan threads."""
    old_env = os.environ.get("VQREC_THREADS")
    old_omp = faiss.omp_get_max_threads()
    os.environ["VQREC_THREADS"] = str(n)
    faiss.omp_set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        blas: contextlib.AbstractContextManager[Any] = threadpool_limits(limits={"libscipy_openblas": 1})
    except ImportError:  # the service extra brings it; without it BLAS keeps its own thread count
        blas = contextlib.nullcontext()
    try:
        with blas:
            yield
    finally:
        if old_env is None:
            os.environ.pop("VQREC_THREADS", None)
        else:
            os.environ["VQREC_THREADS"] = old_env
        faiss.omp_set_num_threads(old_omp)


def time_call(fn: Callable[[], Any], *, min_seconds: float = 0.3, max_runs: int = 5) -> float:
    """Median wall seconds of ``fn()`` over runs (at least one, until ``min_seconds`` or ``max_runs``)."""
    times: list[float] = []
    while not times or (len(times) < max_runs and sum(times) < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def latencies(fn: Callable[[int], Any], n: int, *, warmup: int = 10) -> NDArray[np.float64]:
    """Seconds of ``fn(i)`` for i in 0..n-1, each call timed alone (after ``warmup`` untimed calls)."""
    for i in range(min(warmup, n)):
        fn(i)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
    return out


def speed(
    search: Callable[[NDArray[np.float32]], Any], xq: NDArray[np.float32], n_single: int, *, batch_threads: int = 2
) -> dict[str, float]:
    """QPS of one batched call over all of xq (``batch_threads``) and of single queries (1 thread)."""
    with threads(batch_threads):
        search(xq[: min(len(xq), 16)])  # warm-up
        t = time_call(lambda: search(xq))
    n1 = min(n_single, len(xq))
    with threads(1):
        lat = latencies(lambda i: search(xq[i : i + 1]), n1)
    return {
        "qps_batch": len(xq) / t,
        "qps_single": n1 / float(lat.sum()),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "batch_threads": batch_threads,
        "n_single": n1,
    }
