"""bench/run.py on tiny synthetic data, so the benchmark cannot rot: every figure is produced and sane."""

from __future__ import annotations

import json
import math

import pytest

from bench import run

QUALITY = ("recall_u2i", "recall_u2i_rerank", "recall_i2i", "hr", "hr_rerank")
SPEED = ("qps_batch", "qps_single", "p50_ms", "p99_ms")


@pytest.fixture(scope="module")
def tiny() -> tuple[run.Dataset, run.Truth]:
    ds = run.make_tiny(n=500, d=16, nq=40, seed=3)
    return ds, run.prepare_truth(ds, nsim=60)


def _check_engine(d: dict, *, comparable: bool = True) -> None:
    for key in QUALITY:
        assert 0.0 <= d[key] <= 1.0, (key, d[key])
    for key in SPEED:
        assert d[key] > 0 and math.isfinite(d[key]), (key, d[key])
    assert d["p50_ms"] <= d["p99_ms"]
    if comparable:
        # rerank of 100 candidates (of 500 items) with float16 vectors recovers most of the exact top-10
        assert d["recall_u2i_rerank"] >= 0.5


@pytest.mark.parametrize(("method", "compare_faiss"), [("pq", True), ("opq", False), ("rq", True)])
def test_bench_config(tiny, tmp_path, method: str, compare_faiss: bool) -> None:
    ds, truth = tiny
    r = run.bench_config(
        ds, method, 4, nbits=4, truth=truth, n_single=10, n_lut=10, save_dir=str(tmp_path), compare_faiss=compare_faiss
    )
    assert r["method"] == method and r["M"] == 4 and r["nbits"] == 4
    _check_engine(r["ours"])
    assert r["ours"]["recall_u2i"] > 0.2  # far better than chance (10/500)
    size = r["size"]
    assert size["code_bytes_per_item"] == 4
    assert size["index_bytes_per_item"] >= 4 and size["artifact_bytes"] > 0
    assert (tmp_path / r["name"] / "manifest.json").exists()
    assert r["build"]["train_s"] >= 0 and r["build"]["encode_s"] > 0
    lut = r["lut"]
    assert lut["pair_tables_stored"] and lut["pairs"]["single_us"] > 0 and lut["decode"]["similar_p50_us"] > 0
    assert lut["max_abs_diff"] < 1e-4  # both paths build the same table
    if compare_faiss:
        same, native = r["faiss_same_codes"], r["faiss_native"]
        assert same["decode_max_abs_err"] < 1e-5  # faiss decodes our codes exactly as we do
        _check_engine(same, comparable=False)
        _check_engine(native)
        assert all(v > 0 for v in r["ratios"].values())
    else:
        assert "faiss_native" not in r
    json.dumps(r, default=run.json_default)  # the report is JSON-able


def test_report_formats(tiny, tmp_path) -> None:
    ds, truth = tiny
    report = run.new_report()
    entry = run.dataset_entry(ds, truth)
    entry["configs"].append(run.bench_config(ds, "pq", 2, nbits=4, truth=truth, n_single=5, n_lut=5))
    entry["http"] = {"skipped": "not in the smoke test"}
    report["datasets"]["tiny"] = entry
    report["loadavg_end"], report["seconds"] = report["loadavg_start"], 1.0
    text = run.format_report(report)
    for heading in ("quality", "speed", "lookup tables", "size and build", "HTTP"):
        assert heading in text
    assert "| pq | 2 |" in text
    jpath, mpath = run.write_report(report, tmp_path)
    assert json.loads(jpath.read_text())["datasets"]["tiny"]["configs"][0]["M"] == 2
    assert mpath.read_text().startswith("# vqrec bench")
