"""bench/bodylimit.py through the real service, so the oversized-body bench cannot rot: every kind of upload
is refused (413 with a key, 401 without), /healthz answered meanwhile, the figures are there. Correctness only:
the timings and memory figures belong to the bench's report, not to assertions."""

from __future__ import annotations

import math

from bench import bodylimit


def test_bodylimit_smoke(monkeypatch, capsys) -> None:
    monkeypatch.setenv("VQREC_MAX_BODY_BYTES", "1")  # the caller's settings do not reach the bench's service
    rep = bodylimit.main(["--rounds", "1", "--mb", "20"])
    assert rep["uploads"]["content-length, key"]["statuses"] == [413]
    assert rep["uploads"]["content-length, no key"]["statuses"] == [401]
    assert rep["uploads"]["chunked, key"]["statuses"] == [413]
    assert rep["healthz"]["n"] > 0 and rep["healthz"]["failures"] == 0
    assert all(math.isfinite(v) and v > 0 for v in rep["rss_mb"].values())
    assert "/healthz meanwhile" in capsys.readouterr().out
