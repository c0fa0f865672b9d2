"""bench/workers.py on a tiny 4-bit index through the real service (`vqrec serve --workers 2`), so the
large-artifact bench cannot rot: every way of loading runs, both worker counts answer without errors, and the
report holds every figure. Correctness only: the figures themselves belong to the bench."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from bench import workers
from bench.serving import service_available
from vqrec.index import Embeddings, build_index, save_index
from vqrec.index.fastscan import fastscan_available
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

pytestmark = [
    pytest.mark.skipif(not service_available(), reason="service/main.py with create_app is missing"),
    pytest.mark.skipif(not pathlib.Path("/proc/self/smaps_rollup").exists(), reason="needs /proc/<pid>/smaps_rollup"),
]


def test_workers_smoke(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VQREC_API_KEYS", "a-key-of-the-caller")  # must not reach the bench's own service
    rng = np.random.default_rng(5)
    items = Embeddings(ids=[f"i{i}" for i in range(3000)], vectors=rng.standard_normal((3000, 16)).astype(np.float32))
    cb = train(items, TrainConfig(method="pq", M=8, nbits=4, niter=5, eval_queries=10), show_progress=False)
    save_index(build_index(cb, items, nlist=16, item_vectors="int8", show_progress=False), str(tmp_path / "idx"))
    np.save(tmp_path / "q.npy", rng.standard_normal((50, 16)).astype(np.float32))
    args = ["--index", str(tmp_path / "idx"), "--queries", str(tmp_path / "q.npy"), "--workers", "2"]
    args += ["--seconds", "1", "--concurrency", "2", "--warmup", "20", "--load-repeats", "1", "--max-requests", "500"]
    rep = workers.main([*args, "--json", str(tmp_path / "w.json")])
    assert [r["way"] for r in rep["load"]] == [w[0] for w in workers._WAYS]
    scan = "fastscan4" if fastscan_available() else "lists"
    assert all(r["n"] == 3000 and r["scan"] == scan and r["seconds"] > 0 for r in rep["load"])
    assert [(r["workers"], r["mmap"], r["processes"]) for r in rep["workers"]] == [(2, "auto", 2), (2, "never", 2)]
    for r in rep["workers"]:
        assert r["recommend"]["errors"] == 0 and r["healthz"]["errors"] == 0, r["recommend"]["first_errors"]
        assert r["recommend"]["requests"] > 0 and len(r["recommend_cpu_seconds"]) == r["processes"]
        assert all(m["Rss"] > 0 and m["Pss"] > 0 and m["anon"] > 0 for m in r["per_worker"])
    assert json.loads((tmp_path / "w.json").read_text())["n_items"] == 3000
    out = capsys.readouterr().out
    assert "| mapped, sizes and shapes |" in out and "## --workers 2, VQREC_MMAP=never" in out
