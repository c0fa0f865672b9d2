"""RQ-VAE / CoST trainer (trainers/learned/rqvae/train.py, model.py): determinism, resume == uninterrupted,
k-means initialisation, dead-code reset, forward == decode(codes), numpy tokenizer == torch model, InfoNCE.
Config: test_rqvae_config.py; the CLI and torch never reaching the serving path: test_rqvae_cli.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'train' extra: pip install torch==2.13.0)")

from tests.trainers.rqvae_helpers import SMALL, small  # noqa: E402
from vqrec.index.errors import ConfigError  # noqa: E402
from vqrec.index.semantic import Tokenizer  # noqa: E402
from vqrec.trainers.learned import rqvae as R  # noqa: E402
from vqrec.trainers.learned.rqvae.train import _kmeans_init, _new_state, _prepare  # noqa: E402


@pytest.fixture(scope="module")
def items(recsys):  # type: ignore[no-untyped-def]
    return recsys.items  # 2000 x 32, clustered, a few zero rows


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
    st = _new_state(items.d, cfg)
    before = st.model.rq.codebooks.detach().clone()
    x = torch.from_numpy(_prepare(items.vectors, cfg.input_norm))
    _kmeans_init(st, x, cfg)
    assert st.kmeans_done
    after = st.model.rq.codebooks.detach()
    assert not torch.equal(before, after)
    # level 0 codewords are k-means centroids of encoder outputs: every one is used on that batch
    codes = st.model.encode(x[: cfg.kmeans_init_points]).numpy()
    assert len(np.unique(codes[:, 0])) == cfg.codebook_size


@pytest.mark.parametrize("ema", [False, True])
def test_a_starved_code_is_replaced_by_dead_code_reset(items, ema: bool) -> None:
    cfg = small(ema=ema)
    st = _new_state(items.d, cfg)
    x = torch.from_numpy(_prepare(items.vectors, cfg.input_norm))
    _kmeans_init(st, x, cfg)
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
    x = torch.from_numpy(_prepare(items.vectors[:300], "l2"))
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
