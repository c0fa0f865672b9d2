"""The README stays true: its two set-up commands are the ones CI runs, the demo it starts answers
every curl example in it, and the train/build/eval/serve walkthrough runs on the shared data.

Servers are started on 127.0.0.1 on a free port with the `server` fixture (tests/conftest.py): a
bounded wait for /readyz, always stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHARED = ROOT.parent / "shared"
ML100K = SHARED / "data" / "ml-100k-als64"


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def vqrec_argv(command: str) -> list[str]:
    """`vqrec ...` from the README, run with this interpreter's console script."""
    argv = shlex.split(command)
    assert argv[0] == "vqrec", command
    exe = Path(sys.executable).parent / "vqrec"
    return [str(exe) if exe.exists() else "vqrec", *argv[1:]]


def serve_env(port: int) -> dict[str, str]:
    return {"VQREC_PORT": str(port), "VQREC_HOST": "127.0.0.1", "VQREC_PROGRESS": "0"}


def run_curl(line: str, port: int) -> dict:  # type: ignore[type-arg]
    """Run one README curl line against 127.0.0.1:``port``; assert HTTP 200 and return the JSON body."""
    cmd = line.replace("localhost:8000", f"127.0.0.1:{port}")
    out = subprocess.run(
        ["bash", "-c", cmd + " -w '\\n%{http_code}'"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    body, code = out.rsplit("\n", 1)
    assert code == "200", (line, body)
    return json.loads(body)


def test_two_commands_and_ci() -> None:
    blocks = bash_blocks()
    assert blocks[0].strip() == 'pip install -e ".[service]" && vqrec demo'
    assert blocks[1].strip() == 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q'
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci.splitlines(), ".ci/run must run the README's test command exactly"
    assert "ruff check . && ruff format --check ." in ci, ".ci/run must lint"


def test_demo_serves_every_curl_example(tmp_path: Path, server, free_port) -> None:
    demo = bash_blocks()[0].strip().split("&&")[1].strip()  # the install half already ran (we are in it)
    curls = [ln for ln in bash_blocks()[3].splitlines() if ln.startswith("curl ")]
    assert len(curls) >= 10  # one per endpoint
    port = free_port()
    with server(vqrec_argv(demo), port, env=serve_env(port), cwd=tmp_path, timeout=300):
        for line in curls:
            data = run_curl(line, port)
            assert "error" not in data, (line, data)
            if "/recommend" in line or "/similar" in line:
                assert data["results"] and data["index_version"], (line, data)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/indexes/demo/recommend",
            json={"user_id": "u0", "k": 5, "exclude_item_ids": ["i1"]},
        )
        assert len(r.json()["results"]) == 5 and "i1" not in [x["id"] for x in r.json()["results"]]
    assert (tmp_path / "vqrec-demo" / "indexes" / "demo" / "manifest.json").exists()


def test_walkthrough_on_movielens(tmp_path: Path, server, free_port) -> None:
    if not ML100K.is_dir():
        pytest.skip(f"needs {ML100K} (MovieLens-100k ALS embeddings, ../shared/data beside the repo)")
    # the README runs from the repository root with ../shared beside it: mirror that layout
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    lines = [ln for ln in bash_blocks()[2].splitlines() if ln.startswith("vqrec ")]
    assert [ln.split()[1] for ln in lines] == ["train", "build", "eval", "serve"]
    env = {**os.environ, "VQREC_PROGRESS": "0"}
    outputs = {}
    for line in lines[:3]:
        p = subprocess.run(vqrec_argv(line), cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, (line, p.stdout, p.stderr)
        outputs[line.split()[1]] = p.stdout
    manifest = json.loads((work / "runs" / "indexes" / "ml100k" / "manifest.json").read_text())
    ev = manifest["evaluation"]
    # the acceptance figures at 16 bytes per item (README: Benchmarks)
    assert manifest["bytes"]["code_bytes_per_item"] == 16
    assert ev["user_to_item"]["recall@10"] >= 0.90
    assert ev["user_to_item_rerank"]["recall@10"] >= 0.99
    assert ev["item_to_item"]["recall@10"] >= 0.90 and ev["item_to_item"]["zero_items_excluded"] == 15
    assert "HR@10 exact                     0.1274" in outputs["eval"]
    port = free_port()
    with server(vqrec_argv(lines[3]), port, env=serve_env(port), cwd=work, timeout=180) as base:
        r = httpx.post(f"{base}/v1/indexes/ml100k/recommend", json={"user_id": "1", "k": 10})
        assert r.status_code == 200 and len(r.json()["results"]) == 10
        r = httpx.post(f"{base}/v1/indexes/ml100k/similar", json={"item_id": "1", "k": 10})
        assert r.status_code == 200 and "1" not in [x["id"] for x in r.json()["results"]]


def test_learned_quantizers_and_semantic_ids(tmp_path: Path, server, free_port) -> None:
    """The README's semantic-ID walkthrough: embed titles, train a CoST tokenizer, build an ALS index with
    title semantic ids, serve it and answer every curl example."""
    if not ML100K.is_dir() or not (SHARED / "data" / "ml-100k" / "u.item").exists():
        pytest.skip(f"needs {SHARED / 'data'} (MovieLens-100k and its ALS embeddings, ../shared beside the repo)")
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    block = bash_blocks()[4]
    lines = [ln for ln in block.splitlines() if ln.startswith("vqrec ")]
    steps = [" ".join(ln.split()[1:3]) for ln in lines]
    assert steps[:4] == ["embed --items", "train rqvae", "train pq", "build --codebooks"], steps
    env = {**os.environ, "VQREC_PROGRESS": "0"}
    serve_line = next(ln for ln in lines if ln.split()[1] == "serve")
    for line in lines:
        if line is serve_line:
            continue
        p = subprocess.run(vqrec_argv(line), cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, (line, p.stdout, p.stderr)
    manifest = json.loads((work / "runs" / "semantic" / "ml100k" / "manifest.json").read_text())
    sem = manifest["semantic_ids"]
    assert sem["levels"] == 3 and sem["items"]["n"] == manifest["n_items"] == 1447
    assert sem["items"]["collisions_after_dedup"] == 0
    assert sem["tokenizer"]["loss"] == "contrastive"
    curls = [ln for ln in block.splitlines() if ln.startswith("curl ")]
    assert len(curls) >= 3
    port = free_port()
    with server(vqrec_argv(serve_line), port, env=serve_env(port), cwd=work, timeout=180):
        for line in curls:
            data = run_curl(line, port)
            if "/prefix" in line:
                assert data["total"] == 1447 and len(data["results"]) == 3 and data["next_tokens"]
            if "/lookup" in line:
                assert data["unknown"] == ["nope"] and [r["id"] for r in data["results"]] == ["50", "172"]
            if line.endswith("/semantic-id"):
                assert len(data["codes"]) == 3 and data["semantic_id"].count("-") == 3


def test_cove_and_bpr_walkthrough(tmp_path: Path) -> None:
    """The README's COVE example: train COVE and the BPR baseline, index the COVE embeddings at 16 bytes per
    item and keep >= 99 % of their exact HR@10 (leave-one-out, training items excluded)."""
    if not ML100K.is_dir():
        pytest.skip(f"needs {ML100K} (MovieLens-100k interactions, ../shared/data beside the repo)")
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    lines = [ln for ln in bash_blocks()[5].splitlines() if ln.startswith("vqrec ")]
    assert [" ".join(ln.split()[1:3]) for ln in lines][:2] == ["train cove", "train bpr"]
    env = {**os.environ, "VQREC_PROGRESS": "0"}
    out = ""
    for line in lines:
        p = subprocess.run(vqrec_argv(line), cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, (line, p.stdout, p.stderr)
        out = p.stdout
    for kind in ("cove", "bpr"):
        m = json.loads((work / "runs" / "ml100k" / kind / "manifest.json").read_text())
        assert m["config"]["quantize"] is (kind == "cove")
        assert m["report"]["eval"]["hr@10"] > 0.10  # ALS with exact search: 0.127; most-popular: 0.079
    manifest = json.loads((work / "runs" / "indexes" / "cove" / "manifest.json").read_text())
    assert manifest["bytes"]["code_bytes_per_item"] == 16
    hr = {key: float(v) for key, v in re.findall(r"HR@10 (exact|index)\s+([0-9.]+)", out)}
    assert set(hr) == {"exact", "index"}, out
    assert hr["index"] >= 0.99 * hr["exact"], hr
