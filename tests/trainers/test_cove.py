"""COVE (BPR-MF + cascaded VQ) and the plain BPR-MF baseline: training input checks, determinism, the code
tree, the artifact (loads as vqrec embeddings), leave-one-out metrics, and ml-100k when present.
Config: test_cove_config.py; reading the log: test_cove_data.py; the CLI: test_cove_cli.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vqrec.index import ConfigError, load_embeddings
from vqrec.index.embeddings import Embeddings
from vqrec.index.eval import exact_hit_rate
from vqrec.index.interactions import pairs_by_user

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from tests.trainers.cove_helpers import FAST, make_log  # noqa: E402
from vqrec.trainers.learned.cove import (  # noqa: E402
    CoveConfig,
    leave_one_out,
    read_heldout,
    read_interactions,
    train_cove,
    tree_check,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k-als64"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_log(tmp_path_factory.mktemp("cove"))


@pytest.fixture(scope="module")
def trained(log):
    """One COVE and one BPR run on the synthetic log (shared by several tests)."""
    data = read_interactions(str(log[0]))
    held = read_heldout(str(log[1]))
    cove = train_cove(data, CoveConfig(**FAST), heldout=held, show_progress=False)
    bpr = train_cove(data, CoveConfig(**FAST, quantize=False), heldout=held, show_progress=False)
    return data, held, cove, bpr


def test_too_many_codes_for_the_entities_is_an_error(log):
    data = read_interactions(str(log[0]))
    with pytest.raises(ConfigError, match=r"levels\[0\]=500 codes but the log has only 160 users"):
        train_cove(data, CoveConfig(**{**FAST, "levels": (500, 10)}), show_progress=False)


# ---- training ------------------------------------------------------------------------------------
def test_same_seed_same_output_other_seed_differs(log, trained):
    data, held, cove, _ = trained
    again = train_cove(data, CoveConfig(**FAST), heldout=held, show_progress=False)
    for a in ("user_vectors", "item_vectors", "user_codes", "item_codes"):
        np.testing.assert_array_equal(getattr(cove, a), getattr(again, a))
    assert cove.report["eval"] == again.report["eval"]
    other = train_cove(data, CoveConfig(**{**FAST, "seed": 8}), show_progress=False)
    assert not np.array_equal(cove.item_vectors, other.item_vectors)


def test_learns_far_above_chance_and_uses_its_codes(trained):
    data, held, cove, bpr = trained
    chance = 10 / len(data.item_ids)  # ~0.042
    for r in (cove, bpr):
        assert r.report["eval"]["users"] == 160
        assert r.report["eval"]["hr@10"] > 5 * chance, r.report["eval"]
        assert 0 < r.report["eval"]["ndcg@10"] <= r.report["eval"]["hr@10"]
        hist = r.report["loss_history"]
        assert len(hist) == FAST["epochs"] and hist[-1]["bpr"] < 0.5 * hist[0]["bpr"]
    # the fine codes recover the taste groups (each code's members share one group; random codes: ~0.3)
    for ids, codes in ((cove.user_ids, cove.user_codes), (cove.item_ids, cove.item_codes)):
        group = np.array([int(x[1:]) % 8 for x in ids])
        purity = sum(np.bincount(group[codes[:, 0] == k]).max() for k in np.unique(codes[:, 0])) / len(ids)
        assert purity >= 0.8, purity
    q = cove.report["quantization"]
    for side in ("users", "items"):
        fine, coarse = q[side]["levels"]
        assert fine["utilization"] >= 0.75 and coarse["utilization"] == 1.0, q[side]
        assert 1 < coarse["perplexity"] <= 6 and fine["perplexity"] > coarse["perplexity"]


def test_codes_form_a_tree_that_matches_the_codebooks(trained):
    data, _, cove, _ = trained
    for side, codes, n in (("user", cove.user_codes, 160), ("item", cove.item_codes, len(data.item_ids))):
        assert codes.shape == (n, 2) and codes.dtype == np.int32
        assert codes[:, 0].min() >= 0 and codes[:, 0].max() < 24 and codes[:, 1].min() >= 0 and codes[:, 1].max() < 6
        parent = {}
        for f, c in codes.tolist():
            assert parent.setdefault(f, c) == c, f"{side} code {f} has two parents"
        # the coarse code is the nearest level-2 codeword to the fine codeword
        c0, c1 = cove.codebooks[f"{side}_level0"], cove.codebooks[f"{side}_level1"]
        d = ((c0[:, None, :] - c1[None, :, :]) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, 1], d.argmin(1)[codes[:, 0]])
        assert cove.report["quantization"][f"{side}s"]["tree"]["is_tree"]
    bad = tree_check(np.array([[0, 0], [0, 1], [1, 1]]), (2, 2))
    assert not bad["is_tree"] and bad["levels"][0]["codes_with_several_parents"] == 1


def test_plain_bpr_is_cove_without_quantization(trained):
    """quantize=False ignores alpha/omega/levels, and COVE with alpha = omega = 0 computes the same model."""
    data, _, _, bpr = trained
    other = train_cove(
        data, CoveConfig(**{**FAST, "levels": (10, 2)}, quantize=False, alpha=5.0, omega=3.0), show_progress=False
    )
    np.testing.assert_array_equal(bpr.item_vectors, other.item_vectors)
    assert bpr.user_codes is None and bpr.codebooks == {} and "quantization" not in bpr.report
    zero = train_cove(data, CoveConfig(**FAST, alpha=0.0, omega=0.0), show_progress=False)
    np.testing.assert_array_equal(zero.item_vectors, bpr.item_vectors)  # bit for bit: one code path
    np.testing.assert_array_equal(zero.user_vectors, bpr.user_vectors)


def test_leave_one_out_matches_exact_hit_rate_and_ndcg_by_hand(trained):
    data, held, cove, _ = trained
    items = Embeddings(ids=cove.item_ids, vectors=cove.item_vectors)
    users = Embeddings(ids=cove.user_ids, vectors=cove.user_vectors)
    assert cove.report["eval"]["hr@10"] == round(exact_hit_rate(items, users, data.seen(), held, k=10), 4)
    # 3 items on a line, scores = item value; user a saw item x (excluded), target z at rank 1 -> 1/log2(3)
    iv = np.array([[3.0], [2.0], [1.0]], np.float32)
    uv = np.array([[1.0], [1.0]], np.float32)
    r = leave_one_out(uv, iv, ["a", "b"], ["x", "y", "z"], {"a": ["x"]}, {"a": "z", "b": "q", "c": "x"}, k=2)
    assert (r["hr@2"], r["users"], r["users_unknown"], r["heldout_items_unknown"]) == (0.5, 2, 1, 1)
    assert r["ndcg@2"] == round(0.5 / math.log2(3), 4)


def test_artifact_loads_as_embeddings(trained, tmp_path):
    _, _, cove, bpr = trained
    m = cove.save(str(tmp_path / "cove"))
    items = load_embeddings(str(tmp_path / "cove" / "items.npy"))  # finds item_ids.txt beside it
    users = load_embeddings(str(tmp_path / "cove" / "users.npy"))
    np.testing.assert_array_equal(items.vectors, cove.item_vectors)
    assert items.ids == cove.item_ids and users.ids == cove.user_ids and users.d == FAST["dim"]
    np.testing.assert_array_equal(np.load(tmp_path / "cove" / "item_codes.npy"), cove.item_codes)
    on_disk = json.loads((tmp_path / "cove" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert (on_disk["artifact"], on_disk["kind"], on_disk["levels"]) == ("cove", "cove", [24, 6])
    assert on_disk["config"] == CoveConfig(**FAST).to_dict()
    assert {"train_seconds", "final_losses", "quantization", "eval"} <= set(on_disk["report"])
    assert set(on_disk["files"]) == {
        "items.npy", "item_ids.txt", "users.npy", "user_ids.txt", "item_codes.npy", "user_codes.npy", "codebooks.npz"
    }  # fmt: skip
    bpr.save(str(tmp_path / "bpr"))
    assert sorted(p.name for p in (tmp_path / "bpr").iterdir()) == [
        "item_ids.txt", "items.npy", "manifest.json", "user_ids.txt", "users.npy"
    ]  # fmt: skip


# ---- real data -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k():
    if not (DATA / "train.tsv").exists():
        pytest.skip("needs ../shared/data/ml-100k-als64 (MovieLens-100k train.tsv/test.tsv) beside the repo")
    return read_interactions(str(DATA / "train.tsv")), read_heldout(str(DATA / "test.tsv"))


def test_ml100k_short_cove_run_beats_popularity(ml100k):
    """A 10-epoch COVE run on ml-100k: HR@10 well above the most-popular ranking, and a tree of codes."""
    data, held = ml100k
    assert (len(data.user_ids), len(data.item_ids), data.n) == (942, 1432, 54433)
    seen = pairs_by_user(str(DATA / "train.tsv"))
    counts: dict[str, int] = {}
    for its in seen.values():
        for i in its:
            counts[i] = counts.get(i, 0) + 1
    ranked = sorted(counts, key=lambda i: -counts[i])
    pop_hits = sum(held[u] in [i for i in ranked if i not in set(seen[u])][:10] for u in held)
    pop_hr = pop_hits / len(held)
    r = train_cove(data, CoveConfig(epochs=10), heldout=held, show_progress=False)
    assert r.report["eval"]["users"] == 942
    assert r.report["eval"]["hr@10"] > pop_hr + 0.02, (r.report["eval"], pop_hr)
    for side in ("users", "items"):
        q = r.report["quantization"][side]
        assert q["tree"]["is_tree"] and q["levels"][0]["utilization"] > 0.9 and q["levels"][1]["utilization"] == 1.0
