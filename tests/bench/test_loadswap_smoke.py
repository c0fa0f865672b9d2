"""bench/loadswap.py on tiny synthetic data through the real service, so the load-and-swap bench cannot rot:
every phase runs, no request fails while the index is swapped, both versions answer, every figure is there.
Correctness only: performance figures belong to the bench, not to assertions."""

from __future__ import annotations

import json
import math

import pytest

from bench import loadswap
from bench.serving import service_available

pytestmark = pytest.mark.skipif(not service_available(), reason="service/main.py with create_app is missing")


def _figures(row: dict) -> None:
    assert row["requests"] > 0
    for key in ("req_per_s", "queries_per_s", "p50_ms", "p99_ms"):
        assert row[key] is not None and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert row["p50_ms"] <= row["p99_ms"]


def test_loadswap_smoke(tmp_path, monkeypatch) -> None:
    # the caller's service settings must not reach the bench's own service (keys would make every request 401)
    monkeypatch.setenv("VQREC_API_KEYS", "a-key-of-the-caller")
    monkeypatch.setenv("VQREC_ADMIN_KEYS", "an-admin-key-of-the-caller")
    out = tmp_path / "loadswap.json"
    args = ["--synthetic", "--seconds", "1", "--concurrency", "2", "--swaps", "2", "--max-requests", "2000"]
    rep = loadswap.main([*args, "--out", str(out)])
    v1, v2 = rep["versions"]
    assert v1 != v2
    assert [(r["kind"], r["concurrency"]) for r in rep["sweep"]] == [("single", 2), ("batch", 2)]
    for r in rep["sweep"]:
        _figures(r)
        assert r["failed"] == 0, r["first_errors"]
        assert r["requests"] <= 2000
    assert rep["swap_concurrency"] == 2
    assert [row["kind"] for row in rep["swap"]] == ["single", "batch"]
    for row in rep["swap"]:
        base, during = row["without_swaps"], row["during_swaps"]
        _figures(base)
        _figures(during)
        assert base["failed"] == 0 and during["failed"] == 0, (base["first_errors"], during["first_errors"])
        assert set(base["by_version"]) == {v1}  # no swap, v1 active
        assert during["swaps_done"] == during["swaps_ok"] == 2, during["swap_errors"]
        assert during["by_version"].get(v1, 0) > 0 and during["by_version"].get(v2, 0) > 0
        assert sum(during["by_version"].values()) == during["requests"]
        assert during["reload_took_ms_p50"] is not None
    # an even number of swaps ends on v1 again
    served = {i["name"]: i["index_version"] for i in rep["serving_at_end"]["indexes"]}
    assert served[loadswap.NAME] == v1
    saved = json.loads(out.read_text())
    assert saved["versions"] == [v1, v2] and len(saved["loadavg_end"]) == 3
    text = loadswap.format_report(rep)
    assert "Hot swaps under load" in text and "| single | during swaps |" in text
