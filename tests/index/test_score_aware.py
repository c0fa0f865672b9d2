"""Score-aware (anisotropic) pq/opq codes (index/score_aware.py): the loss they minimize, checked against a
brute-force oracle; the codebook field through training, artifacts, manifests and the index."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.index.test_artifact import resign
from vqrec.index import ConfigError, build_index
from vqrec.index.artifact import load_index, save_index
from vqrec.index.codebooks import Codebooks
from vqrec.index.errors import ArtifactError
from vqrec.index.exact import exact_search
from vqrec.index.score_aware import _c_kernel, encode_score_aware, score_aware_loss
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

FAST = {"M": 4, "nbits": 4, "niter": 5, "opq_niter": 3, "eval_queries": 20}


@pytest.fixture(scope="module")
def pq(recsys) -> Codebooks:
    return train(recsys.items, TrainConfig(method="pq", **FAST), show_progress=False)


def _y(cb: Codebooks, x: np.ndarray) -> np.ndarray:
    return cb.to_code_space(x)[np.linalg.norm(x, axis=1) > 0]


IMPLS = ["numpy", pytest.param("c", marks=pytest.mark.skipif(_c_kernel() is None, reason="C kernel not built"))]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("t", [0.2, 0.5])
def test_codes_are_a_local_minimum_of_the_loss_and_never_worse_than_nearest(recsys, pq, t, impl):
    cb = Codebooks(**{**_fields(pq), "score_aware": t})
    y = _y(pq, recsys.xb[:300])
    plain = pq.encode_code_space(y)
    eta = cb.score_aware_eta
    sa = encode_score_aware(y, cb.centroids, plain, eta, impl=impl)
    base = score_aware_loss(y, pq.decode(plain), eta)
    got = score_aware_loss(y, cb.decode(sa), eta)
    assert np.all(got <= base + 1e-5)
    assert np.mean(got) < np.mean(base)  # it does move codes
    # oracle: no single sub-space change lowers any row's loss (coordinate-wise minimum, brute force)
    for m in range(cb.M):
        for j in range(cb.ksub):
            alt = sa.copy()
            alt[:, m] = j
            assert np.all(score_aware_loss(y, cb.decode(alt), eta) >= got - 1e-5), (m, j)


def test_eta_one_is_the_nearest_codeword(recsys, pq):
    y = _y(pq, recsys.xb[:200])
    plain = pq.encode_code_space(y)
    np.testing.assert_array_equal(encode_score_aware(y, pq.centroids, plain, 1.0), plain)
    # and the plain codes are the brute-force nearest codewords per sub-space
    ys = y.reshape(len(y), pq.M, pq.dsub)
    d2 = ((ys[:, :, None, :] - pq.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(plain, d2.argmin(-1))


def test_chunks_give_the_same_codes(recsys, pq, monkeypatch):
    import vqrec.index.score_aware as sa_mod

    y = _y(pq, recsys.xb)
    plain = pq.encode_code_space(y)
    whole = encode_score_aware(y, pq.centroids, plain, 3.0, impl="numpy")
    monkeypatch.setattr(sa_mod, "_TABLE_FLOATS", pq.M * pq.ksub * 7)  # 7 rows a chunk
    np.testing.assert_array_equal(encode_score_aware(y, pq.centroids, plain, 3.0, impl="numpy"), whole)


@pytest.mark.skipif(_c_kernel() is None, reason="the C kernel (index/_score_aware.c) is not built")
@pytest.mark.parametrize("nbits", [4, 8])
def test_c_kernel_agrees_with_the_numpy_reference(recsys, nbits):
    """The kernel (threads over rows) and the reference pick the same codes; float32 sums in another order
    may break a near-tie the other way, so all but 0.1 % of rows must agree (measured: all, 200k rows)."""
    cb = train(recsys.items, TrainConfig(method="pq", **{**FAST, "nbits": nbits}), show_progress=False)
    y = _y(cb, recsys.xb)
    plain = cb.encode_code_space(y)
    ref = encode_score_aware(y, cb.centroids, plain, 5.7, impl="numpy")
    for threads in (1, 2):
        got = encode_score_aware(y, cb.centroids, plain, 5.7, impl="c", threads=threads)
        assert np.mean(np.all(got == ref, axis=1)) >= 0.999
        # without start codes the kernel finds the nearest codewords itself (what Codebooks.encode uses)
        own = encode_score_aware(y, cb.centroids, None, 5.7, impl="c", threads=threads)
        assert np.mean(np.all(own == ref, axis=1)) >= 0.999
    assert not np.array_equal(ref, plain)
    nearest = encode_score_aware(y, cb.centroids, None, 1.0, impl="c")
    assert np.mean(np.all(nearest == plain, axis=1)) >= 0.999


def _fields(cb: Codebooks) -> dict:
    return {
        "kind": cb.kind,
        "metric": cb.metric,
        "d": cb.d,
        "M": cb.M,
        "nbits": cb.nbits,
        "centroids": cb.centroids,
        "rotation": cb.rotation,
        "norm_explicit": cb.norm_explicit,
    }


@pytest.mark.parametrize("method", ["pq", "opq"])
def test_trained_score_aware_index_searches_its_codes_exactly(recsys, tmp_path, method):
    """Training with score_aware encodes every item score-aware; the index answers as exact search over its
    own reconstructions (the ADC oracle), and the field survives the codebook and index artifacts."""
    cb = train(recsys.items, TrainConfig(method=method, score_aware=0.3, **FAST), show_progress=False)
    assert cb.score_aware == 0.3 and cb.config["score_aware"] == 0.3
    cb.save(str(tmp_path / "cb"))
    back = Codebooks.load(str(tmp_path / "cb"))
    assert back.score_aware == 0.3
    np.testing.assert_array_equal(back.encode(recsys.xb), cb.encode(recsys.xb))
    index = build_index(cb, recsys.items, show_progress=False, nlist=0)
    np.testing.assert_array_equal(index.codes, cb.encode(recsys.xb))
    xr = cb.decode_input_space(index.codes) * np.linalg.norm(recsys.xb, axis=1, keepdims=True)
    _, truth = exact_search(xr, recsys.xq, 10, "ip")
    got = np.stack([r.rows for r in index.search(recsys.xq, 10)])
    np.testing.assert_array_equal(np.sort(got, 1), np.sort(truth, 1))
    save_index(index, str(tmp_path / "idx"))
    loaded = load_index(str(tmp_path / "idx"))
    assert loaded.codebooks.score_aware == 0.3
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["method"]["score_aware"] == 0.3


def test_bad_score_aware_settings_are_clear_errors(recsys, pq, tmp_path):
    with pytest.raises(ConfigError, match="score_aware codes are for pq and opq"):
        TrainConfig(method="rq", score_aware=0.3)
    with pytest.raises(ConfigError, match=r"score_aware must be in \[0, 1\)"):
        TrainConfig(score_aware=1.0)
    with pytest.raises(ConfigError, match="score_aware must be a number"):
        TrainConfig(score_aware="high")
    with pytest.raises(ConfigError, match=r"score_aware must be in \[0, 1\)"):
        Codebooks(**{**_fields(pq), "score_aware": -0.1})
    # a manifest claiming score-aware rq codes is refused at load, naming the field
    index = build_index(pq, recsys.items, show_progress=False, nlist=0)
    save_index(index, str(tmp_path / "idx"))
    path = tmp_path / "idx" / "manifest.json"
    m = json.loads(path.read_text())
    assert m["method"]["score_aware"] == 0.0
    m["method"]["score_aware"] = 2
    path.write_text(json.dumps(m))
    resign(tmp_path / "idx")
    with pytest.raises(ArtifactError, match="score_aware"):
        load_index(str(tmp_path / "idx"))
    assert os.path.exists(path)
