"""bench/scale.py's pure part: memory classes, Pareto frontier, best QPS per recall level and the ratios; and
the order measure_grid times a grid in."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scale import CLASSES, ROUNDS, ScaleData, Searcher, best_at, compare, measure_grid, memory_classes, pareto


def _p(method: str, setting: str, recall: float, one: float, batch: float, b: float) -> dict:
    return {
        "method": method,
        "setting": setting,
        "recall": recall,
        "qps_one1": one,
        "qps_batch1": batch,
        "bytes_per_item": b,
        "nominal_bytes_per_item": b,
    }


D = 64
POINTS = [
    _p("vqrec", "a", 0.60, 9000.0, 20000.0, 40.0),  # codes only
    _p("vqrec", "b", 0.90, 3000.0, 8000.0, 200.0),  # any
    _p("vqrec", "c", 0.55, 5000.0, 15000.0, 40.0),  # dominated by a
    _p("scann", "x", 0.50, 20000.0, 30000.0, 36.5),
    _p("scann", "y", 0.80, 10000.0, 12000.0, 100.5),  # compact copy (<= 112)
    _p("hnswlib", "z", 0.95, 5000.0, 6000.0, 404.5),
]


def test_memory_classes() -> None:
    assert memory_classes(48.0, D) == ["codes only", "compact copy", "any"]
    assert memory_classes(48.1, D) == ["compact copy", "any"]
    assert memory_classes(112.0, D) == ["compact copy", "any"]
    assert memory_classes(112.5, D) == ["any"]


def test_pareto() -> None:
    front = pareto(POINTS, "qps_one1")
    assert [p["setting"] for p in front] == ["x", "y", "z"]  # by recall; a, b, c are beaten on both
    front = pareto([p for p in POINTS if p["method"] == "vqrec"], "qps_one1")
    assert [p["setting"] for p in front] == ["a", "b"]
    # a tie on recall keeps the faster point only
    tie = [_p("m", "s", 0.7, 10.0, 1.0, 1.0), _p("m", "f", 0.7, 20.0, 1.0, 1.0)]
    assert [p["setting"] for p in pareto(tie, "qps_one1")] == ["f"]
    assert pareto([], "qps_one1") == []


def test_best_at() -> None:
    assert best_at(POINTS, 0.5, "qps_one1")["setting"] == "x"
    assert best_at(POINTS, 0.85, "qps_batch1")["setting"] == "b"
    assert best_at(POINTS, 0.99, "qps_one1") is None


def test_compare() -> None:
    rows = compare(POINTS, D, qps_key="qps_one1", levels=(0.5, 0.6, 0.9, 0.97))
    assert len(rows) == len(CLASSES) * 4
    by = {(r["class"], r["level"]): r for r in rows}
    r = by[("codes only", 0.5)]
    assert (r["ours_setting"], r["peer_setting"]) == ("a", "x")
    assert r["ratio"] == pytest.approx(9000 / 20000)
    r = by[("codes only", 0.6)]  # scann x stops at 0.5 in this class: no peer
    assert r["peer"] is None and r["ratio"] is None and r["ours"] == 9000.0
    r = by[("compact copy", 0.6)]
    assert (r["ours_setting"], r["peer_setting"]) == ("a", "y")
    r = by[("any", 0.9)]
    assert (r["ours_setting"], r["peer_setting"]) == ("b", "z")
    assert r["ratio"] == pytest.approx(3000 / 5000)
    r = by[("any", 0.97)]
    assert r["ours"] is None and r["peer"] is None and r["ratio"] is None
    # batch figures and the nominal bytes go through the same code
    rows = compare(POINTS, D, qps_key="qps_batch1", levels=(0.8,), bytes_key="nominal_bytes_per_item")
    r = next(r for r in rows if r["class"] == "any")
    assert (r["ours_setting"], r["peer_setting"], r["ratio"]) == ("b", "y", pytest.approx(8000 / 12000))


def test_measure_grid_spreads_the_rounds_over_the_grid() -> None:
    """Every setting gets its recall and the three timings; a round goes through the whole grid before the next
    one starts (a burst on the machine then costs a setting one pass, not all of them)."""
    calls: list[tuple[str, int]] = []
    gt = np.arange(400).reshape(80, 5)  # 80 queries: the 2-thread warm-up (64) is told from a full batch

    def searcher(name: str, rows: np.ndarray) -> Searcher:
        def batch(xq: np.ndarray, t: int) -> np.ndarray:
            calls.append((name, len(xq)))
            return rows[: len(xq)]

        return Searcher(batch=batch, one=lambda q: batch(q, 1), rows=lambda raw: raw)

    data = ScaleData("t", "t", None, np.zeros((80, 3), np.float32), gt, "given")  # type: ignore[arg-type]
    good, half = searcher("good", gt.copy()), searcher("half", np.where(gt % 2 == 0, gt, -1))
    out = measure_grid([good, half], data, 5, n_one=2)
    assert [o["recall"] for o in out] == [1.0, pytest.approx(0.5, abs=0.1)]
    for o in out:
        assert {"qps_batch1", "qps_one1", "qps_batch2", "p50_ms", "p99_ms"} <= set(o) and o["qps_one1"] > 0
    full = [name for name, n in calls if n == 80]  # full batches: recall, then 1 and 2 threads per round
    assert full[:2] == ["good", "half"] and full[2:] == ["good", "good", "half", "half"] * ROUNDS


def test_interleaved_rounds_visit_every_setting_in_a_new_order() -> None:
    """Interleaved mode: every method's grids are timed together, each round a seeded permutation of all their
    settings (each setting timed once per round), and the points come back per method in build order."""
    from bench.scale import Pending, measure_pending

    calls: list[str] = []
    gt = np.arange(400).reshape(80, 5)

    def searcher(name: str) -> Searcher:
        def batch(xq: np.ndarray, t: int) -> np.ndarray:
            if len(xq) == 80 and t == 1:
                calls.append(name)
            return gt[: len(xq)]

        return Searcher(batch=batch, one=lambda q: batch(q, 1), rows=lambda raw: raw)

    data = ScaleData("t", "t", None, np.zeros((80, 3), np.float32), gt, "given")  # type: ignore[arg-type]
    names = [f"s{i}" for i in range(8)]
    ram = {"bytes_per_item": 1.0, "ram_how": "rss", "nominal_bytes_per_item": 1.0, "nominal_how": "x"}
    grids = [
        Pending("a", [(searcher(n), n, {}) for n in names[:3]], ram, 1.0),
        Pending("b", [(searcher(n), n, {}) for n in names[3:]], ram, 2.0),
    ]
    got = measure_pending(grids, data, 5, n_one=2, seed=3)
    assert [p["setting"] for p in got["a"]] == names[:3] and [p["setting"] for p in got["b"]] == names[3:]
    assert all(p["recall"] == 1.0 and p["qps_one1"] > 0 for pts in got.values() for p in pts)
    warm, rounds = calls[:8], [calls[8 + 8 * r : 16 + 8 * r] for r in range(ROUNDS)]
    assert warm == names and len(calls) == 8 * (ROUNDS + 1)
    assert all(sorted(r) == names for r in rounds)  # each round times every setting once
    assert len({tuple(r) for r in rounds}) == ROUNDS and rounds[0] != names  # in its own shuffled order
