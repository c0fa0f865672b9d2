"""bench.cli_build on a small catalogue: the CLI's train and build timed per configuration, the build's recall read
back, the targets judged, faiss's build beside them; bad arguments and a failing command say what went wrong."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bench import cli_build


def _data(path, n=2500, d=16, nu=150):
    rng = np.random.default_rng(3)
    path.mkdir()
    np.save(path / "items.npy", rng.standard_normal((n, d)).astype(np.float32))
    np.save(path / "users.npy", rng.standard_normal((nu, d)).astype(np.float32))
    (path / "item_ids.txt").write_text("".join(f"item-{i}\n" for i in range(n)))
    (path / "user_ids.txt").write_text("".join(f"user-{i}\n" for i in range(nu)))
    return path


def test_times_the_cli_and_faiss(tmp_path, capsys, monkeypatch):
    data = _data(tmp_path / "data")
    scratch = tmp_path / "scratch"
    monkeypatch.setattr(cli_build.tempfile, "mkdtemp", lambda prefix: (scratch.mkdir(), str(scratch))[1])
    out = tmp_path / "runs.json"
    assert cli_build.main(["--data", str(data), "--rounds", "1", "--methods", "pq32x4,faiss", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert sorted(r["config"] for r in runs) == ["faiss", "pq32x4"]
    pq = next(r for r in runs if r["config"] == "pq32x4")
    assert pq["train_s"] > 0 and pq["build_s"] > 0 and pq["total_s"] == pytest.approx(pq["train_s"] + pq["build_s"])
    assert 0.5 < pq["recall"] <= 1.0 and pq["target_s"] == 30.0 and pq["probe_s"] > 0
    fa = next(r for r in runs if r["config"] == "faiss")
    assert fa["build_s"] > 0 and fa["train_s"] is None and fa["recall"] is None and fa["target_s"] is None
    text = capsys.readouterr().out
    assert re.search(
        r"\| 1 \| pq32x4 \| [0-9.]+ \| [0-9./]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 30 \| yes \| 0\.\d{4} \|", text
    )
    assert re.search(r"\| pq32x4 \| 30 \| [0-9.]+ \[[0-9.]+\] \| 1 of 1 \|", text)
    assert not scratch.exists() and sorted(p.name for p in data.iterdir()) == [
        "item_ids.txt",
        "items.npy",
        "user_ids.txt",
        "users.npy",
    ]  # the codebooks and index went to the scratch directory, removed after; the data left as it was


def test_summary_counts_misses():
    rows = [
        {"config": "rq", "total_s": 55.0, "probe_s": 0.31, "recall": 0.7764},
        {"config": "rq", "total_s": 61.0, "probe_s": 0.55, "recall": 0.7764},
    ]
    assert cli_build.summary(rows)[2] == "| rq | 60 | 55.0 [0.31]; 61.0 [0.55] | 1 of 2 | 0.7764 |"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "x", "--methods", "pq,hnsw"], "unknown methods ['hnsw']"),
        (["--methods", "pq"], "give --data DIR or --n N"),
        (["--data", "x", "--n", "10"], "give --data DIR or --n N"),
        (["--data", "x", "--rounds", "0"], "--rounds must be at least 1"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli_build.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_failing_command_says_why(tmp_path):
    with pytest.raises(RuntimeError, match=r"vqrec train pq failed \(exit \d\): .*missing\.npy"):
        cli_build.run_cli(["train", "pq", "-e", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "cb"), "-q"])
