"""RQ-VAE / CoST trainer: determinism, resume == uninterrupted, dead-code reset, forward == decode(codes),
numpy tokenizer == torch model, the CLI, and torch never reaching the serving path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from vqrec.index.embeddings import save_embeddings  # noqa: E402
from vqrec.index.errors import ConfigError  # noqa: E402
from vqrec.index.semantic import Tokenizer  # noqa: E402
from vqrec.trainers.configfile import load_settings  # noqa: E402
from vqrec.trainers.learned import rqvae as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"codebook_size": 16, "latent_dim": 8, "hidden": (32,), "epochs": 3, "batch_size": 64, "report_queries": 200}


@pytest.fixture(scope="module")
def items(recsys):  # type: ignore[no-untyped-def]
    return recsys.items  # 2000 x 32, clustered, a few zero rows


def small(**kw):  # type: ignore[no-untyped-def]
    return R.RQVAEConfig(**{**SMALL, **kw})


def weights(tok: Tokenizer) -> dict[str, np.ndarray]:
    return tok.arrays()


def test_deterministic_for_a_seed_and_different_across_seeds(items) -> None:
    a, _ = R.train_rqvae(items, small(seed=7), show_progress=False)
    b, _ = R.train_rqvae(items, small(seed=7), show_progress=False)
    c, _ = R.train_rqvae(items, small(seed=8), show_progress=False)
    for k, v in weights(a).items():
        np.testing.assert_array_equal(v, weights(b)[k], err_msg=k)
    assert any(not np.array_equal(v, weights(c)[k]) for k, v in weights(a).items())
    assert a.report["quality"] == b.report["quality"]


@pytest.mark.parametrize("ema", [False, True])
def test_resume_equals_an_uninterrupted_run(items, ema: bool) -> None:
    """The checkpoint holds every piece of state: 1 epoch + resume for 2 == 3 epochs straight."""
    cfg = small(epochs=3, ema=ema)
    full, _ = R.train_rqvae(items, cfg, show_progress=False)
    part, ckpt = R.train_rqvae(items, cfg, show_progress=False, stop_after_epochs=1)
    assert part.report["epochs"] == 1 and not part.report["complete"]
    state = R.read_checkpoint(ckpt)
    assert state["kmeans_done"] is True and state["epoch"] == 1
    resumed, _ = R.train_rqvae(items, cfg, resume=ckpt, show_progress=False)
    assert resumed.report["epochs"] == 3 and resumed.report["complete"]
    for k, v in weights(full).items():
        np.testing.assert_array_equal(v, weights(resumed)[k], err_msg=k)


def test_resume_with_a_different_shape_is_refused(items) -> None:
    _, ckpt = R.train_rqvae(items, small(epochs=1), show_progress=False)
    with pytest.raises(ConfigError, match=r"different \['codebook_size'\]"):
        R.train_rqvae(items, small(codebook_size=8), resume=ckpt, show_progress=False)
    with pytest.raises(ConfigError, match="RQ-VAE checkpoint"):
        R.read_checkpoint(b"not a checkpoint")


def test_kmeans_initialises_every_level_on_the_first_batch(items) -> None:
    cfg = small()
    st = R._new_state(items.d, cfg)
    before = st.model.rq.codebooks.detach().clone()
    x = torch.from_numpy(R._prepare(items.vectors, cfg.input_norm))
    R._kmeans_init(st, x, cfg)
    assert st.kmeans_done
    after = st.model.rq.codebooks.detach()
    assert not torch.equal(before, after)
    # level 0 codewords are k-means centroids of encoder outputs: every one is used on that batch
    codes = st.model.encode(x[: cfg.kmeans_init_points]).numpy()
    assert len(np.unique(codes[:, 0])) == cfg.codebook_size


@pytest.mark.parametrize("ema", [False, True])
def test_a_starved_code_is_replaced_by_dead_code_reset(items, ema: bool) -> None:
    cfg = small(ema=ema)
    st = R._new_state(items.d, cfg)
    x = torch.from_numpy(R._prepare(items.vectors, cfg.input_norm))
    R._kmeans_init(st, x, cfg)
    starved = 5
    with torch.no_grad():
        st.model.rq.codebooks[0, starved] = 1e3  # far from every latent: no input can choose it
    codes = st.model.encode(x).numpy()
    assert starved not in codes[:, 0]
    resets = R.reset_dead_codes(st, x, cfg)
    assert resets[0] >= 1
    new = st.model.rq.codebooks[0, starved].detach()
    assert float(new.abs().max()) < 10.0  # moved back among the data
    # it is now the latent of a real input, and inputs choose it
    z = st.model.embed(x).detach()
    assert float(((z - new[None]) ** 2).sum(1).min()) < 1e-10
    assert starved in st.model.encode(x).numpy()[:, 0]
    if ema:
        np.testing.assert_allclose(st.model.rq.ema_sum[0, starved].numpy(), new.numpy())
    # threshold 0 turns resets off
    with torch.no_grad():
        st.model.rq.codebooks[0, starved] = 1e3
    assert R.reset_dead_codes(st, x, R.RQVAEConfig(**{**SMALL, "dead_code_threshold": 0.0})) == [0] * cfg.levels
    assert float(st.model.rq.codebooks[0, starved].detach().max()) == 1e3


@pytest.mark.parametrize("loss", ["mse", "contrastive", "both"])
def test_forward_output_equals_decode_of_its_codes(items, loss: str) -> None:
    tok, ckpt = R.train_rqvae(items, small(loss=loss, epochs=2), show_progress=False)
    st = R.load_checkpoint(ckpt, items.d, small(loss=loss, epochs=2))
    st.model.eval()
    x = torch.from_numpy(R._prepare(items.vectors[:300], "l2"))
    with torch.no_grad():
        out = st.model(x)
    assert torch.equal(out["x_hat"], st.model.decode(out["codes"]))  # exactly: the STE adds an exact zero
    # the numpy tokenizer (what `vqrec build` uses) gives the same codes and reconstructions
    codes = tok.encode(items.vectors[:300])
    assert (codes == out["codes"].numpy()).mean() >= 0.99  # float rounding may flip a near-tie
    same = np.all(codes == out["codes"].numpy(), axis=1)
    np.testing.assert_allclose(tok.decode(codes[same]), out["x_hat"].numpy()[same], atol=2e-5)


def test_training_learns_codes_that_follow_neighbourhoods(items) -> None:
    """On clustered data the first code groups neighbours far above chance, and every level is used."""
    tok, _ = R.train_rqvae(items, small(epochs=15), show_progress=False)
    q = tok.report["quality"]
    nb = q["neighbourhood"]
    assert nb["share@1"] > 5 * nb["chance@1"]
    assert all(lv["utilization"] >= 0.9 for lv in q["levels"])
    assert q["collisions_after_dedup"] == 0
    hist = tok.report["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_contrastive_loss_is_infonce_over_the_batch() -> None:
    x = torch.eye(4)
    # reconstructions equal to the inputs: the diagonal wins by 1/tau; uniform when all equal
    perfect = R.info_nce(x, x, 0.1)
    expected = -torch.log_softmax(torch.eye(4) / 0.1, dim=1).diagonal().mean()
    assert torch.allclose(perfect, expected)
    same = R.info_nce(torch.ones(4, 4), x, 0.1)
    assert torch.allclose(same, torch.log(torch.tensor(4.0)))


def test_config_validation_and_overrides() -> None:
    with pytest.raises(ConfigError, match="loss must be one of"):
        R.RQVAEConfig(loss="l1")
    with pytest.raises(ConfigError, match="codebook_size must be a positive integer"):
        R.RQVAEConfig(codebook_size=0)
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        R.RQVAEConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_settings(R.RQVAEConfig, None, ["nope=1"])
    with pytest.raises(ConfigError, match="not a valid float"):
        load_settings(R.RQVAEConfig, None, ["temperature=warm"])
    cfg = load_settings(R.RQVAEConfig, None, ["hidden=64,32", "ema=true", "temperature=0.2"], levels=4)
    assert cfg.hidden == (64, 32) and cfg.ema is True and cfg.temperature == 0.2 and cfg.levels == 4
    with pytest.raises(ConfigError, match="exceeds the number of embeddings"):
        R.train_rqvae(as_small_embeddings(10), small(), show_progress=False)


def as_small_embeddings(n: int):  # type: ignore[no-untyped-def]
    from vqrec.index.embeddings import Embeddings

    rng = np.random.default_rng(0)
    return Embeddings(ids=[f"i{i}" for i in range(n)], vectors=rng.standard_normal((n, 8)).astype(np.float32))


# ---- CLI ---------------------------------------------------------------------------------------
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
