"""The `vqrec` CLI end to end on small data: every step, and every bad input exits 1 with a message
naming what was wrong while leaving existing artifacts untouched."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vqrec.cli import app

runner = CliRunner()


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def invoke(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1234)
    d = tmp_path_factory.mktemp("cli")
    centers = rng.standard_normal((12, 16))
    items = centers[rng.integers(0, 12, 800)] + 0.3 * rng.standard_normal((800, 16))
    items *= rng.lognormal(0, 0.5, (800, 1))
    items[:2] = 0.0
    users = rng.standard_normal((60, 16))
    np.save(d / "items.npy", items.astype(np.float32))
    (d / "item_ids.txt").write_text("".join(f"i{j}\n" for j in range(800)))
    np.savez(d / "users.npz", ids=np.array([f"u{j}" for j in range(60)]), vectors=users.astype(np.float64))
    return d


@pytest.fixture(scope="module")
def built(data: Path) -> Path:
    code, out = invoke(
        "train",
        "pq",
        "-e",
        data / "items.npy",
        "--queries",
        data / "users.npz",
        "-o",
        data / "cb",
        "-M",
        "4",
        "--nbits",
        "6",
        "--set",
        "niter=8",
        "-q",
    )
    assert code == 0, out
    assert "codebooks written to" in out and "recall@10/@100" in out
    code, out = invoke(
        "build",
        "--codebooks",
        data / "cb",
        "--items",
        data / "items.npy",
        "--users",
        data / "users.npz",
        "--item-vectors",
        "float16",
        "-o",
        data / "idx",
        "-q",
    )
    assert code == 0, out
    assert "index written to" in out and "user->item recall@10" in out
    assert re.search(r"bytes per item\s+4 code, ", out), out  # M=4 codes of 6 bits: one byte each
    return data / "idx"


def test_code_bytes_as_a_loaded_index_holds_them() -> None:
    from vqrec.cli.index import _code_bytes

    assert _code_bytes({"M": 32, "nbits": 4}) == "16 (32 x 4 bits)"  # two to a byte (the fast-scan layout)
    assert _code_bytes({"M": 16, "nbits": 8}) == "16" and _code_bytes({"M": 8, "nbits": 6}) == "8"
    assert _code_bytes({"M": 3, "nbits": 4}) == "3"  # odd M: not packed


def test_train_writes_config_and_report(data: Path, built: Path) -> None:
    m = json.loads((data / "cb" / "manifest.json").read_text())
    assert m["trainer_config"]["M"] == 4 and m["trainer_config"]["niter"] == 8 and m["trainer_config"]["method"] == "pq"
    rep = m["train_report"]
    assert 0 <= rep["eval"]["recall@10"] <= 1 and rep["eval"]["queries_from"] == "queries file"
    assert len(rep["usage"]["utilization"]) == 4 and rep["mse"] >= 0


def test_build_manifest_and_eval(data: Path, built: Path) -> None:
    m = json.loads((built / "manifest.json").read_text())
    assert m["n_items"] == 800 and m["n_users"] == 60 and m["bytes"]["code_bytes_per_item"] == 4
    assert 0.3 < m["evaluation"]["user_to_item"]["recall@10"] <= 1
    assert m["evaluation"]["user_to_item_rerank"]["recall@10"] >= 0.95
    code, out = invoke("eval", "--index", built, "--items", data / "items.npy", "--users", data / "users.npz", "--json")
    assert code == 0, out
    rep = json.loads(out)
    assert rep["user_to_item"] == m["evaluation"]["user_to_item"]


def test_eval_hit_rate(data: Path, built: Path) -> None:
    (data / "seen.tsv").write_text("u0\ti5\nu0\ti6\nu1\ti7\n")
    (data / "held.tsv").write_text("u0\ti8\nu1\ti9\n")
    code, out = invoke(
        "eval",
        "--index",
        built,
        "--items",
        data / "items.npy",
        "--users",
        data / "users.npz",
        "--seen",
        data / "seen.tsv",
        "--heldout",
        data / "held.tsv",
        "--json",
    )
    assert code == 0, out
    hr = json.loads(out)["hr@10"]
    assert set(hr) == {"exact", "index", "index_rerank"} and all(0 <= v <= 1 for v in hr.values())


def test_help_lists_every_step() -> None:
    code, out = invoke("--help")
    assert code == 0
    for cmd in ("train", "build", "eval", "serve", "demo", "embed"):
        assert cmd in out
        c, o = invoke(cmd, "--help")
        assert c == 0 and "Usage" in o
    code, out = invoke("train", "--help")
    for method in ("pq", "opq", "rq", "rqvae", "cove", "bpr"):
        assert method in out
        c, o = invoke("train", method, "--help")
        assert c == 0 and "Usage" in o, (method, o)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_file", "embeddings file not found"),
        ("nan_row", "row 3 (id 'i3') contains NaN"),
        ("bad_M", "d (16) must be divisible by M (5)"),
        ("bad_set", "unknown key 'nope'"),
        ("bad_metric_in_config", "metric must be one of"),
        ("too_few", "training vectors for 256 codewords"),
        ("dup_ids", "duplicate id 'i1' at rows 1 and 2"),
    ],
)
def test_train_errors(data: Path, tmp_path: Path, case: str, expect: str) -> None:
    x = np.load(data / "items.npy")
    ids = [f"i{j}" for j in range(len(x))]
    emb = tmp_path / "e.npy"
    args = ["-M", "4", "--nbits", "6"]
    if case == "nan_row":
        x[3, 5] = np.nan
    if case == "bad_M":
        args = ["-M", "5"]
    if case == "bad_set":
        args += ["--set", "nope=1"]
    if case == "bad_metric_in_config":
        (tmp_path / "c.json").write_text('{"metric": "dot"}')
        args += ["--config", str(tmp_path / "c.json")]
    if case == "too_few":
        x = x[:100]
        ids = ids[:100]
        args = ["-M", "4", "--nbits", "8"]
    if case == "dup_ids":
        ids[2] = "i1"
    np.save(emb, x)
    (tmp_path / "e_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    target = tmp_path / "missing.npy" if case == "missing_file" else emb
    code, out = invoke("train", "pq", "-e", target, "-o", tmp_path / "cb", "-q", *args)
    assert code == 1, out
    assert "error:" in out and expect in out
    assert not (tmp_path / "cb").exists()


def test_existing_outputs_are_left_untouched(data: Path, built: Path) -> None:
    before_cb, before_idx = tree_digest(data / "cb"), tree_digest(built)
    code, out = invoke("train", "pq", "-e", data / "items.npy", "-o", data / "cb", "-M", "4", "--nbits", "6")
    assert code == 1 and "already exists" in out
    code, out = invoke("build", "--codebooks", data / "cb", "--items", data / "items.npy", "-o", built)
    assert code == 1 and "already exists" in out
    assert tree_digest(data / "cb") == before_cb and tree_digest(built) == before_idx


def test_build_errors(data: Path, built: Path, tmp_path: Path) -> None:
    # items of another dimension
    np.savez(tmp_path / "other.npz", ids=np.array(["a", "b"]), vectors=np.ones((2, 8), np.float32))
    code, out = invoke("build", "--codebooks", data / "cb", "--items", tmp_path / "other.npz", "-o", tmp_path / "o1")
    assert code == 1 and "item dimension (8) does not match the codebook dimension (16)" in out
    assert not (tmp_path / "o1").exists()
    # corrupt codebook artifact: a flipped byte
    cb = tmp_path / "cb"
    os.system(f"cp -r {data / 'cb'} {cb}")
    raw = bytearray((cb / "codebooks.npz").read_bytes())
    raw[-10] ^= 0xFF
    (cb / "codebooks.npz").write_bytes(bytes(raw))
    code, out = invoke("build", "--codebooks", cb, "--items", data / "items.npy", "-o", tmp_path / "o2")
    assert code == 1 and "codebooks.npz" in out and "sha256" in out
    assert not (tmp_path / "o2").exists()
    # not a codebook artifact at all
    code, out = invoke(
        "build", "--codebooks", tmp_path / "nowhere", "--items", data / "items.npy", "-o", tmp_path / "o3"
    )
    assert code == 1 and "not found" in out


def test_eval_rejects_other_embeddings(data: Path, built: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", ids=np.array(["a", "b"]), vectors=np.ones((2, 16), np.float32))
    code, out = invoke("eval", "--index", built, "--items", tmp_path / "other.npz")
    assert code == 1 and "2x16 embeddings, but the index holds 800x16" in out


def test_serve_missing_root(tmp_path: Path) -> None:
    code, out = invoke("serve", "--index-root", tmp_path / "none")
    assert code == 1 and "index root not found" in out


def test_demo_builds_an_index(tmp_path: Path) -> None:
    code, out = invoke("demo", "--out", tmp_path / "demo", "--no-serve", "-q")
    assert code == 0, out
    m = json.loads((tmp_path / "demo" / "indexes" / "demo" / "manifest.json").read_text())
    assert m["n_items"] == 5000 and m["n_users"] == 2000
    assert m["evaluation"]["user_to_item"]["recall@10"] >= 0.85
    assert (tmp_path / "demo" / "data" / "items.npz").exists()


def test_serve_bad_setting_is_one_line(tmp_path: Path) -> None:
    code, out = invoke("serve", "--index-root", tmp_path, "--log-level", "verbose")
    assert code == 1 and "error: invalid settings: log_level" in out and "Traceback" not in out


def test_build_pair_tables_option(data: Path, built: Path, tmp_path: Path) -> None:
    assert json.loads((built / "manifest.json").read_text())["lut_path"] == "decode"
    code, out = invoke(
        "build", "--codebooks", data / "cb", "--items", data / "items.npy", "--pair-tables", "--no-eval", "-o",
        tmp_path / "idx", "-q",
    )  # fmt: skip
    assert code == 0, out
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["lut_path"] == "pairs" and "pair_tables.npy" in m["files"] and m["evaluation"] == {}
