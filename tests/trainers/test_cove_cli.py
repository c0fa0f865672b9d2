"""`vqrec train cove` / `vqrec train bpr` (vqrec/cli/train_cove.py): artifacts, --force, the progress bar, and
errors that write nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from tests.trainers.cove_helpers import FAST, make_log  # noqa: E402
from vqrec.cli import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_log(tmp_path_factory.mktemp("cove"))


def digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def invoke(*args) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def fast_sets() -> list[str]:
    out = []
    for k, v in FAST.items():
        if k != "seed":
            out += ["--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"]
    return out


def test_cli_cove_and_bpr(log, tmp_path, monkeypatch):
    monkeypatch.setenv("VQREC_PROGRESS", "0")
    train, test = log
    code, out = invoke("train", "cove", "-i", train, "--test", test, "-o", tmp_path / "c", *fast_sets(), "--seed", 7)
    assert code == 0, out
    assert "cove embeddings written to" in out and "HR@10 / NDCG@10" in out and "a tree" in out
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["config"]["seed"] == 7 and m["report"]["eval"]["hr@10"] > 0.2
    code, out = invoke("train", "bpr", "-i", train, "-o", tmp_path / "b", *fast_sets(), "--set", "quantize=true")
    assert code == 0, out
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["kind"] == "bpr" and m["config"]["quantize"] is False and "eval" not in m["report"]
    # --force replaces; without it an existing artifact is left alone
    before = digest(tmp_path / "b")
    code, out = invoke("train", "bpr", "-i", train, "-o", tmp_path / "b", *fast_sets())
    assert code == 1 and "already exists" in out and digest(tmp_path / "b") == before


def test_cli_shows_a_progress_bar_per_epoch(log, tmp_path, monkeypatch):
    monkeypatch.setenv("VQREC_PROGRESS", "1")
    code, out = invoke("train", "bpr", "-i", log[0], "-o", tmp_path / "b", *fast_sets())
    assert code == 0, out
    assert "train bpr: 100%" in out and f"{FAST['epochs']}/{FAST['epochs']}" in out and "epoch" in out
    monkeypatch.setenv("VQREC_PROGRESS", "0")
    code, out = invoke("train", "bpr", "-i", log[0], "-o", tmp_path / "b", *fast_sets(), "--force")
    assert code == 0 and "train bpr:" not in out


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["-i", "{d}/missing.tsv"], "interactions file not found"),
        ("u1\ti1\nbad line\n", ["-i", "{d}/log.tsv"], "line 2 is not `user TAB item`"),
        ("\n", ["-i", "{d}/log.tsv"], "no interactions"),
        ("u1\ti1\n", ["-i", "{d}/log.tsv", "--set", "alpah=1"], "unknown key 'alpah'"),
        ("u1\ti1\n", ["-i", "{d}/log.tsv", "--set", "levels=10,100"], "levels go from fine to coarse"),
        ("u1\ti1\n", ["-i", "{d}/log.tsv", "--config", "{d}/none.toml"], "config file not found"),
        ("u1\ti1\n", ["-i", "{d}/log.tsv", "--test", "{d}/none.tsv"], "interactions file not found"),
        ("u1\ti1\nu2\ti2\n", ["-i", "{d}/log.tsv"], "levels[0]=100 codes but the log has only 2 users"),
        (
            "u1\ti1\n",
            ["-i", "{d}/log.tsv", "--test", "{d}/log.tsv", "--set", "quantize=false", "--set", "init_std=1e30"],
            "training diverged in epoch 1",
        ),
        (
            "u1\ti1\n",
            ["-i", "{d}/log.tsv", "--test", "{d}/other.tsv", "--set", "quantize=0"],
            "none of the 1 held-out users appears",
        ),
    ],
)
def test_cli_errors_write_nothing(tmp_path, setup, args, message):
    if setup is not None:
        (tmp_path / "log.tsv").write_text(setup)
        (tmp_path / "other.tsv").write_text("u9\ti1\n")
    code, out = invoke("train", "cove", *[a.format(d=tmp_path) for a in args], "-o", tmp_path / "out", "-q")
    assert code == 1, out
    assert out.startswith("error: ") and message in out, out
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
