"""bench/soar.py: the second list under SOAR's loss, and coverage of the exact top-k at equal items scanned,
checked against brute force on small data."""

from __future__ import annotations

import numpy as np

from bench.soar import coverage, second_lists
from vqrec.index.codebooks import normalize_rows


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = normalize_rows(rng.standard_normal((12, 8)).astype(np.float32))
    x = normalize_rows(rng.standard_normal((400, 8)).astype(np.float32))
    return C, x, np.argmax(x @ C.T, axis=1)


def test_second_list_minimizes_the_loss() -> None:
    C, x, prim = _data()
    for lam in (0.0, 1.0):
        sec = second_lists(x, C, prim, lam)
        assert (sec != prim).all()
        i = 7
        r = x[i] - C[prim[i]]
        loss = [
            np.inf if c == prim[i] else ((x[i] - C[c]) ** 2).sum() + lam * ((x[i] - C[c]) @ r) ** 2 / (r @ r)
            for c in range(len(C))
        ]
        assert sec[i] == int(np.argmin(loss))
    # lambda 0: the second-nearest list
    near2 = np.argsort(-(x @ C.T), axis=1)[:, 1]
    np.testing.assert_array_equal(second_lists(x, C, prim, 0.0), near2)


def test_coverage_against_brute_force() -> None:
    C, x, prim = _data(1)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((30, 8)).astype(np.float32)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :5]
    sec = second_lists(x, C, prim, 1.0)
    budgets = (50, 150, 400, 800)
    for s in (None, sec):
        got = coverage(C, prim, s, q, truth, budgets)
        sizes = np.bincount(prim, minlength=len(C)) + (0 if s is None else np.bincount(s, minlength=len(C)))
        for b, g in zip(budgets, got, strict=True):
            hits = 0
            for qi in range(len(q)):
                order = np.argsort(-(q[qi] @ C.T))
                probed = set(order[: int((np.cumsum(sizes[order]) <= b).sum())].tolist())
                hits += sum(prim[t] in probed or (s is not None and s[t] in probed) for t in truth[qi])
            assert g == hits / truth.size
    assert coverage(C, prim, None, q, truth, (len(x),))[0] == 1.0  # every list fits: every item is found
