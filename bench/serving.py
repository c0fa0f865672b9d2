"""Latency through the real HTTP service: uvicorn (service.main:create_app) in a subprocess on 127.0.0.1,
sequential requests with one httpx.Client, beside the same calls in process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vqrec.index import load_index

from .data import REPO, K
from .timing import latencies, log


def service_available() -> bool:
    p = REPO / "service" / "main.py"
    return p.exists() and "def create_app" in p.read_text(encoding="utf-8")


def wait_for_service(timeout_s: float, poll_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not service_available():
        if time.monotonic() >= deadline:
            return False
        log(f"waiting for service/main.py with create_app ({deadline - time.monotonic():.0f}s left)")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(index_root: str, *, startup_timeout: float = 90.0) -> Iterator[str]:
    """Run the real service on a free 127.0.0.1 port until /readyz is 200 and yield its base URL (see
    ``serve_process``)."""
    with serve_process(index_root, startup_timeout=startup_timeout) as (url, _):
        yield url


@contextlib.contextmanager
def serve_process(
    index_root: str,
    *,
    settings: dict[str, str] | None = None,
    startup_timeout: float = 90.0,
    workers: int = 0,
    ready_checks: int = 1,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run the real service (uvicorn, create_app factory; with ``workers`` > 0, ``vqrec serve --workers N``) on a
    free 127.0.0.1 port until /readyz is 200 ``ready_checks`` times in a row (several workers: each answers for
    itself); yield its base URL and process; terminate it afterwards. The bench's own service: no ``VQREC_*``
    setting of the caller's environment reaches it (API keys, alias polling, index selection would change what
    is measured), only the ``settings`` given here."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VQREC_")}
    env.update(VQREC_INDEX_ROOT=index_root, VQREC_PROGRESS="0", **(settings or {}))
    logf = tempfile.TemporaryFile(mode="w+")
    if workers:
        cmd = [sys.executable, "-m", "vqrec", "serve", "--port", str(port), "--workers", str(workers)]
        cmd += ["--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "vqrec.service.main:create_app", "--factory", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                logf.seek(0)
                raise RuntimeError(f"service exited with {proc.returncode} before ready:\n{logf.read()[-3000:]}")
            try:
                if all(httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200 for _ in range(ready_checks)):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logf.seek(0)
                raise RuntimeError(f"service not ready after {startup_timeout}s:\n{logf.read()[-3000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        logf.close()


def http_latencies(
    client: Any, route: str, key: str, ids: Sequence[str], expect: Sequence[list[str]], *, warmup: int = 20
) -> dict[str, Any]:
    """Sequential POSTs of {key: ids[i], "k": K}: latency p50/p99, the server's took_ms, and how many
    responses were not 200 or did not return the ids the in-process call returned (``expect``)."""
    for i in range(min(warmup, len(ids))):
        client.post(route, json={key: ids[i], "k": K})
    lat = np.empty(len(ids))
    took: list[float] = []
    errors = mismatches = 0
    first_error = None
    for i, ident in enumerate(ids):
        t0 = time.perf_counter()
        r = client.post(route, json={key: ident, "k": K})
        lat[i] = time.perf_counter() - t0
        if r.status_code != 200:
            errors += 1
            first_error = first_error or f"{r.status_code}: {r.text[:300]}"
            continue
        body = r.json()
        if "took_ms" in body:
            took.append(float(body["took_ms"]))
        if [x.get("id") for x in body.get("results", [])] != expect[i]:
            mismatches += 1
    if first_error:
        log(f"HTTP {route}: {errors} errors, first {first_error}")
    return {
        "http_p50_ms": float(np.percentile(lat, 50) * 1e3),
        "http_p99_ms": float(np.percentile(lat, 99) * 1e3),
        "server_took_p50_ms": float(np.percentile(took, 50)) if took else None,
        "errors": errors,
        "first_error": first_error,
        "result_mismatches": mismatches,
    }


def bench_http(
    index_dir: str,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    *,
    n_requests: int = 500,
    warmup: int = 20,
    startup_timeout: float = 90.0,
) -> dict[str, Any]:
    """p50/p99 of single k=10 recommend (by user id) and similar (by item id) requests through HTTP, beside
    the same calls in process on the same saved index (loaded as the service loads it). ``index_dir``'s
    parent is the service's VQREC_INDEX_ROOT and its name the index name."""
    import httpx

    root, name = os.path.split(os.path.abspath(index_dir))
    index = load_index(index_dir)
    queries = {
        "recommend": ("user_id", [user_ids[i % len(user_ids)] for i in range(n_requests)], index.recommend),
        "similar": ("item_id", [item_ids[i % len(item_ids)] for i in range(n_requests)], index.similar),
    }
    out: dict[str, Any] = {"index": name, "n_requests": n_requests, "loadavg_start": os.getloadavg()}
    expect: dict[str, list[list[str]]] = {}
    for ep, (_, ids, fn) in queries.items():
        lat = latencies(lambda i, ids=ids, fn=fn: fn([ids[i]], K), n_requests, warmup=warmup)
        expect[ep] = [r.ids for r in fn(list(ids), K)]
        out[ep] = {
            "in_process_p50_ms": float(np.percentile(lat, 50) * 1e3),
            "in_process_p99_ms": float(np.percentile(lat, 99) * 1e3),
        }
    with serve(root, startup_timeout=startup_timeout) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        # the floor: a GET that does no index work (client + uvicorn + FastAPI round trip)
        lat = latencies(lambda i: client.get("/healthz"), n_requests, warmup=warmup)
        out["healthz_p50_ms"] = float(np.percentile(lat, 50) * 1e3)
        for ep, (key, ids, _) in queries.items():
            o = out[ep]
            o.update(http_latencies(client, f"/v1/indexes/{name}/{ep}", key, ids, expect[ep], warmup=warmup))
            o["http_adds_ms"] = o["http_p50_ms"] - o["in_process_p50_ms"]
    out["loadavg_end"] = os.getloadavg()
    return out
