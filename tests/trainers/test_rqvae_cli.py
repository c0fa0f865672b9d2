"""`vqrec train rqvae` (vqrec/cli/train_rqvae.py): the artifact, resume, semantic ids at build, errors that
leave nothing behind; and torch never reaching the serving path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from vqrec.index.embeddings import save_embeddings  # noqa: E402
from vqrec.index.semantic import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def vqrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "vqrec"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                              "VQREC_PROGRESS": "0", **(env or {})}
    )  # fmt: skip


def test_cli_trains_writes_the_artifact_and_builds_semantic_ids(tmp_path: Path, recsys) -> None:
    emb = tmp_path / "items.npz"
    save_embeddings(str(emb), recsys.items.ids, recsys.items.vectors)
    tok_dir = tmp_path / "tok"
    sets = ["--set", "latent_dim=8", "--set", "hidden=32", "--set", "report_queries=200"]
    r = vqrec("train", "rqvae", "-e", str(emb), "-o", str(tok_dir), "--codebook-size", "16", "--epochs", "2",
              "--loss", "contrastive", *sets)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "tokenizer written to" in r.stdout and "codes used per level" in r.stdout
    assert "warning" not in r.stderr
    m = json.loads((tok_dir / "manifest.json").read_text())
    assert m["artifact"] == "tokenizer" and m["loss"] == "contrastive" and m["codebook_sizes"] == [16, 16, 16]
    assert m["config"]["epochs"] == 2 and m["config"]["latent_dim"] == 8
    assert {"checkpoint.pt", "weights.npz"} <= set(m["files"])
    assert m["report"]["quality"]["collisions_after_dedup"] == 0

    # resume to 3 epochs from the artifact: its config (contrastive, latent 8) is the base
    r = vqrec("train", "rqvae", "-e", str(emb), "-o", str(tmp_path / "tok3"), "--resume", str(tok_dir), "--epochs", "3")
    assert r.returncode == 0, r.stderr
    m3 = json.loads((tmp_path / "tok3" / "manifest.json").read_text())
    assert m3["report"]["epochs"] == 3 and m3["loss"] == "contrastive"

    # PQ codebooks + build with semantic ids for items and users
    cb = tmp_path / "cb"
    assert vqrec("train", "pq", "-e", str(emb), "-o", str(cb), "-M", "4", "-q").returncode == 0
    users = tmp_path / "users.npz"
    save_embeddings(str(users), recsys.users.ids, recsys.users.vectors)
    idx = tmp_path / "idx"
    r = vqrec("build", "--codebooks", str(cb), "--items", str(emb), "--users", str(users), "--semantic-ids",
              str(tok_dir), "--tokenize-users", "-o", str(idx), "--no-eval", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "semantic ids (items)" in r.stdout and "semantic ids (users)" in r.stdout
    from vqrec.index.artifact import load_index

    index = load_index(str(idx))
    tok = Tokenizer.load(str(tok_dir))
    np.testing.assert_array_equal(index.semantic_items.codes, tok.encode(recsys.items.vectors))
    assert index.semantic_users is not None and len(index.semantic_users) == len(recsys.users.ids)


def test_collapsed_levels_are_named() -> None:
    from vqrec.cli.train_rqvae import collapse_warnings

    levels = [
        {"level": 0, "used": 250, "codebook_size": 256, "utilization": 250 / 256},
        {"level": 1, "used": 1, "codebook_size": 256, "utilization": 1 / 256},
    ]
    (warning,) = collapse_warnings(levels)
    assert warning.startswith("warning: level 1 uses only 1 of 256 codes")
    assert collapse_warnings(levels[:1]) == []


def test_cli_errors_leave_nothing_behind(tmp_path: Path, recsys) -> None:
    emb = tmp_path / "items.npz"
    save_embeddings(str(emb), recsys.items.ids, recsys.items.vectors)
    out = tmp_path / "tok"
    cases = [
        (["--set", "loss=l1"], "loss must be one of"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--resume", str(tmp_path / "missing")], "checkpoint not found"),
        (["--codebook-size", "5000"], "exceeds the number of embeddings"),
    ]
    for extra, msg in cases:
        r = vqrec("train", "rqvae", "-e", str(emb), "-o", str(out), *extra)
        assert r.returncode == 1 and msg in r.stderr, (extra, r.stderr)
        assert not out.exists()
    r = vqrec("train", "rqvae", "-e", str(tmp_path / "nope.npy"), "-o", str(out))
    assert r.returncode == 1 and "nope.npy" in r.stderr and not out.exists()
    r = vqrec("build", "--codebooks", "x", "--items", str(emb), "-o", str(tmp_path / "i"), "--tokenize-users")
    assert r.returncode == 1


def test_the_service_and_index_never_import_torch() -> None:
    code = (
        "import sys, index, index.semantic, index.build, index.artifact, service.main, service.routes.semantic\n"
        "from service.main import create_app\n"
        "from service.settings import Settings\n"
        "create_app(Settings(index_root='.'))\n"
        "heavy = ('torch', 'sentence_transformers', 'transformers')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # and the CLI's start-up (vqrec --help, vqrec serve) does not either
    code = (
        "import sys\nfrom vqrec import cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch']\nsys.exit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
