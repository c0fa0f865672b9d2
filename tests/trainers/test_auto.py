"""``method="auto"`` (trainers/auto.py): the candidates, the choice by held-out recall against exact search,
the report, the CLI table and the rebuild job's drift check. The ml-100k acceptance (joint RQ chosen, u->i
recall >= 0.97, >= 99 % of exact HR@10) runs in tests/test_readme.py's walkthrough."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vqrec.index import ConfigError, Embeddings
from vqrec.index.codebooks import Codebooks
from vqrec.index.eval import recall_at_k
from vqrec.index.exact import exact_search
from vqrec.trainers.auto import candidates
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train
from vqrec.trainers.rebuild.steps import drift_decision

FAST = {"M": 4, "nbits": 5, "niter": 5, "opq_niter": 3, "beam_size": 2, "eval_queries": 20, "auto_queries": 60}


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**FAST, "method": "auto", **kw})


def test_candidates_cheapest_first_per_metric():
    def labels(cs):
        return [(c.method, c.norm_explicit, c.score_aware) for c in cs]

    # each pq/opq codebook twice: nearest-codeword codes, then score-aware (T 0.3 unless the config sets one)
    assert labels(candidates(cfg(), 32)) == [
        ("pq", True, 0.0),
        ("pq", True, 0.3),
        ("pq", False, 0.0),
        ("pq", False, 0.3),
        ("opq", True, 0.0),
        ("opq", True, 0.3),
        ("opq", False, 0.0),
        ("opq", False, 0.3),
        ("rq", True, 0.0),
        ("rq", False, 0.0),
    ]
    assert labels(candidates(cfg(metric="l2", score_aware=0.2), 32))[:2] == [("pq", False, 0.0), ("pq", False, 0.2)]
    assert [c.method for c in candidates(cfg(metric="cosine"), 32)] == ["pq", "pq", "opq", "opq", "rq"]
    assert labels(candidates(cfg(norm="explicit"), 32))[::2] == [
        ("pq", True, 0.0),
        ("opq", True, 0.0),
        ("rq", True, 0.0),
    ]
    # d not divisible by M: only rq can code it, and auto says so by its candidates rather than failing
    assert labels(candidates(cfg(M=5), 32)) == [("rq", True, 0.0), ("rq", False, 0.0)]
    with pytest.raises(ConfigError, match="auto_tolerance"):
        cfg(auto_tolerance=1.5)
    with pytest.raises(ConfigError, match="method must be one of"):
        TrainConfig(method="best")


@pytest.fixture(scope="module")
def auto_users(recsys) -> Codebooks:
    return train(recsys.items, cfg(), queries=recsys.users, show_progress=False)


def test_auto_keeps_the_candidate_with_the_best_held_out_recall(recsys, auto_users):
    cb, sel = auto_users, auto_users.report["auto"]
    rows = sel["candidates"]
    assert [r["candidate"] for r in rows] == [
        "pq-explicit",
        "pq-explicit+sa",
        "pq-joint",
        "pq-joint+sa",
        "opq-explicit",
        "opq-explicit+sa",
        "opq-joint",
        "opq-joint+sa",
        "rq-explicit",
        "rq-joint",
    ]
    best = max(r["recall@10"] for r in rows)
    chosen = next(r for r in rows if r["candidate"] == sel["chosen"])
    # the first candidate within the tolerance of the best, and the codebooks are that candidate's
    assert chosen["recall@10"] >= best - sel["tolerance"]
    assert all(r["recall@10"] < best - sel["tolerance"] for r in rows[: rows.index(chosen)])
    assert (cb.kind, cb.norm_explicit, cb.score_aware) == (
        chosen["method"],
        chosen["norm_explicit"],
        chosen["score_aware"],
    )
    assert cb.config["method"] == chosen["method"]
    # 100 users: the report takes 20, the selection the other 60 (disjoint)
    assert sel["queries"] == 60 and sel["queries_from"] == "queries file" and sel["queries_disjoint_from_report"]
    assert sel["database"] == recsys.items.n and cb.report["eval"]["queries"] == 20
    # the chosen codebooks' recall, recomputed independently on the selection queries, is the table's figure
    perm = np.random.default_rng(cb.config["seed"]).permutation(recsys.users.n)
    xq = recsys.users.vectors[np.sort(perm[20:80])]
    from vqrec.index import build_index

    index = build_index(cb, recsys.items, show_progress=False, nlist=0)
    found = np.stack([np.pad(r.rows, (0, 10 - len(r.rows)), constant_values=-1) for r in index.search(xq, 10)])
    _, truth = exact_search(recsys.items.vectors, xq, 10, "ip")
    assert recall_at_k(found, truth, 10) == pytest.approx(chosen["recall@10"], abs=1e-4)


def test_auto_report_survives_save_and_load(tmp_path, auto_users):
    auto_users.save(str(tmp_path / "cb"))
    back = Codebooks.load(str(tmp_path / "cb"))
    assert back.report["auto"] == auto_users.report["auto"]
    assert back.kind == auto_users.kind


def test_auto_on_a_sampled_catalogue_with_item_queries(recsys):
    """No query file: held-out items are the queries (the selection's disjoint from the report's and from
    training); a catalogue over auto_max_items selects on a sample, then trains the winner on everything."""
    c = cfg(auto_max_items=1000, norm="explicit", auto_tolerance=0.0)
    cb = train(recsys.items, c, show_progress=False)
    sel = cb.report["auto"]
    assert sel["database"] == 1000 and sel["queries_from"] == "items" and sel["queries_disjoint_from_report"]
    assert sel["queries"] == 60 and len(sel["candidates"]) == 5
    assert cb.report["n_items"] == recsys.items.n
    assert cb.report["eval"]["queries_held_out_of_training"] is True
    # tolerance 0: exactly the best
    assert sel["chosen"] == max(sel["candidates"], key=lambda r: r["recall@10"])["candidate"]
    # the winner is retrained on every item but the 20 + 60 held-out queries (not only the 1000 sampled)
    assert cb.report["n_train"] == recsys.items.n - 80


def test_rebuild_drift_accepts_any_family_auto_chose(recsys, auto_users):
    items = recsys.items
    same = drift_decision(auto_users, items, cfg(), 0.1)
    assert same["decision"] == "reuse", same
    # a fixed method other than the chosen one retrains
    other = "pq" if auto_users.kind != "pq" else "rq"
    assert drift_decision(auto_users, items, cfg(method=other), 0.1)["decision"] == "retrain"
    # codebooks trained with a fixed method are not auto's: an auto config retrains
    fixed = train(items, TrainConfig(**{**FAST, "method": auto_users.kind}), show_progress=False)
    assert drift_decision(fixed, items, cfg(), 0.1)["reason"].startswith("trainer config")


def test_cli_train_auto_prints_every_candidate(tmp_path, recsys):
    from vqrec.index.embeddings import save_embeddings

    save_embeddings(str(tmp_path / "items.npz"), recsys.items.ids, recsys.items.vectors)
    save_embeddings(str(tmp_path / "users.npz"), recsys.users.ids, recsys.users.vectors)
    argv = [sys.executable, "-m", "vqrec", "train", "auto", "-e", str(tmp_path / "items.npz")]
    argv += ["--queries", str(tmp_path / "users.npz"), "--out", str(tmp_path / "cb"), "-q", "--M", "4"]
    argv += ["--nbits", "5", "--set", "niter=5", "--set", "beam_size=2", "--set", "norm=joint"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "auto: 5 candidates on 2000 items" in out
    for name in ("pq-joint", "pq-joint+sa", "opq-joint", "opq-joint+sa", "rq-joint"):
        assert name in out
    chosen = Codebooks.load(str(tmp_path / "cb")).report["auto"]["chosen"]
    assert f"auto: chose {chosen}:" in out
    assert sum(ln.startswith(" *") for ln in out.splitlines()) == 1


def test_auto_with_an_empty_query_file_side_is_a_clear_error(recsys):
    q = Embeddings(ids=["u0"], vectors=np.zeros((1, 16), np.float32), source="users16.npy")
    with pytest.raises(Exception, match="query dimension"):
        train(recsys.items, cfg(), queries=q, show_progress=False)
