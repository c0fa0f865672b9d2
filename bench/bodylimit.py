"""Oversized request bodies against the real service on loopback: how fast a 50 MB body is refused, what it
costs the server in memory, and what it does to ``/healthz`` answered meanwhile.

    python -m bench.bodylimit [--rounds 20] [--mb 50]

A small index is served by ``uvicorn vqrec.service.main:create_app`` on 127.0.0.1 with a read and an admin key.
Each round sends, one after another, a body of ``--mb`` MB declared with Content-Length (with a read key, and
without a key) and the same body streamed in 1 MiB chunks without Content-Length (with a key), each over its
own connection: the headers and the first MiB, then the answer is read (the time to it is the refusal time).
A probe thread asks ``/healthz`` every 5 ms throughout. Printed: status and refusal time (p50, max) per kind,
``/healthz`` p50/p99/max, the server's RSS before, after and at peak (VmHWM), and the load average. Bounded:
``rounds`` x 3 uploads, the probe stops with them.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from vqrec.index import Embeddings, build_index, save_index

from .serving import serve_process
from .timing import log

MiB = 1 << 20
READ_KEY = "bench-read-key"


def _index_root(tmp: str) -> str:
    from vqrec.trainers.config import TrainConfig
    from vqrec.trainers.quantizers import train

    rng = np.random.default_rng(0)
    items = Embeddings([f"i{i}" for i in range(2000)], rng.standard_normal((2000, 16)).astype(np.float32), "bench")
    cb = train(items, TrainConfig(method="pq", M=4, nbits=6, niter=5, eval_queries=20), show_progress=False)
    save_index(build_index(cb, items, show_progress=False), os.path.join(tmp, "demo"))
    return tmp


def _rss(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _upload(port: int, mb: int, *, key: bool, chunked: bool) -> tuple[int, float]:
    """(status, seconds to the answer) for one oversized upload on a fresh connection."""
    head = ["POST /v1/indexes/demo/recommend HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {mb * MiB}")
    if key:
        head.append(f"Authorization: Bearer {READ_KEY}")
    first = b'{"user_id": "' + b"a" * (MiB - 14)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            s.sendall(b"%x\r\n%s\r\n" % (len(first), first) if chunked else first)
            if chunked:  # a streamed body is counted as it arrives: keep sending until the server answers
                for _ in range(mb):
                    if select.select([s], [], [], 0)[0]:
                        break
                    s.sendall(b"%x\r\n%s\r\n" % (MiB, b"a" * MiB))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: the answer is waiting
        status_line = s.makefile("rb").readline()
    took = time.perf_counter() - t0
    return int(status_line.split()[1]), took


class Probe(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.times, self.failures = url, [], 0
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self.halt.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append(time.perf_counter() - t0)
                self.failures += not ok
                time.sleep(0.005)


def bench(rounds: int, mb: int) -> dict[str, Any]:
    keys = {"VQREC_API_KEYS": READ_KEY, "VQREC_ADMIN_KEYS": "bench-admin-key"}
    with (
        tempfile.TemporaryDirectory(prefix="vqrec-bodylimit-") as tmp,
        serve_process(_index_root(tmp), settings=keys) as (url, proc),
    ):
        port = int(url.rsplit(":", 1)[1])
        for _ in range(20):  # warm the probe's and the server's paths
            httpx.get(f"{url}/healthz", timeout=2)
        before = _rss(proc.pid)
        load_start = os.getloadavg()
        probe = Probe(url)
        probe.start()
        kinds = {"content-length, key": (True, False), "content-length, no key": (False, False)}
        kinds["chunked, key"] = (True, True)
        results: dict[str, list[tuple[int, float]]] = {k: [] for k in kinds}
        for r in range(rounds):
            for kind, (key, chunked) in kinds.items():
                results[kind].append(_upload(port, mb, key=key, chunked=chunked))
            log(f"round {r + 1}/{rounds}")
        probe.halt.set()
        probe.join()
        after = _rss(proc.pid)
    return {
        "mb": mb,
        "rounds": rounds,
        "uploads": {k: summarize_uploads(v) for k, v in results.items()},
        "healthz": summarize_times(probe.times, probe.failures),
        "rss_mb": {"before": before["VmRSS"], "after": after["VmRSS"], "peak": after["VmHWM"]},
        "load": {"start": load_start, "end": os.getloadavg()},
    }


def summarize_uploads(rows: Sequence[tuple[int, float]]) -> dict[str, Any]:
    t = np.array([took for _, took in rows]) * 1000
    return {"statuses": sorted({s for s, _ in rows}), "p50_ms": float(np.median(t)), "max_ms": float(t.max())}


def summarize_times(times: Sequence[float], failures: int) -> dict[str, Any]:
    t = np.array(times) * 1000
    return {
        "n": len(times),
        "failures": failures,
        "p50_ms": float(np.percentile(t, 50)),
        "p99_ms": float(np.percentile(t, 99)),
        "max_ms": float(t.max()),
    }


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"{rep['mb']} MB bodies, {rep['rounds']} rounds of each kind, one at a time, on 127.0.0.1"]
    lines.append(f"{'upload':<24} {'status':<8} {'p50 ms':>8} {'max ms':>8}")
    for kind, u in rep["uploads"].items():
        lines.append(f"{kind:<24} {','.join(map(str, u['statuses'])):<8} {u['p50_ms']:8.2f} {u['max_ms']:8.2f}")
    h = rep["healthz"]
    lines.append(
        f"/healthz meanwhile: {h['n']} answers, {h['failures']} failed, p50 {h['p50_ms']:.2f} ms, "
        f"p99 {h['p99_ms']:.2f} ms, max {h['max_ms']:.2f} ms"
    )
    r = rep["rss_mb"]
    lines.append(
        f"server RSS: {r['before']:.1f} MB before, {r['after']:.1f} MB after (+{r['after'] - r['before']:.1f}), "
        f"peak {r['peak']:.1f} MB"
    )
    ld = rep["load"]
    lines.append(f"load average: {'/'.join(f'{v:.2f}' for v in ld['start'])} at start, "
                 f"{'/'.join(f'{v:.2f}' for v in ld['end'])} at end (2 cores)")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--mb", type=int, default=50)
    args = p.parse_args(argv)
    rep = bench(args.rounds, args.mb)
    print(format_report(rep))
    return rep


if __name__ == "__main__":
    main()
