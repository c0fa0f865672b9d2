"""The numpy tokenizer (index/semantic/tokenizer.py) against brute-force oracles written here: residual
quantization (encode), decode, input / latent normalisation, shape errors, and its artifact (save / load,
loud load errors naming the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from semantic_helpers import D, random_tokenizer, sample_x  # shared semantic-id test helpers (same directory)
from test_artifact import rewrite  # artifact-surgery helpers (same directory)

from vqrec.index import ArtifactCorrupt, ConfigError, DimensionMismatchError
from vqrec.index.semantic import Tokenizer


# ---- oracles ------------------------------------------------------------------------------------
def mlp64(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def brute_encode(tok: Tokenizer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes by explicit distances in float64, level by level, one row at a time; and each row's smallest
    gap between the best and second-best distance over the levels (tiny gaps: float32 may choose the
    other codeword)."""
    x = np.asarray(x, dtype=np.float64)
    if tok.input_norm == "l2":
        norms = np.sqrt((x * x).sum(1, keepdims=True))
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    z = mlp64(x, tok.encoder)
    if tok.latent_norm:
        z = z / np.maximum(np.sqrt((z * z).sum(1, keepdims=True)), 1e-12)
    codes = np.zeros((len(x), tok.levels), dtype=np.int64)
    margin = np.full(len(x), np.inf)
    for i in range(len(x)):
        r = z[i].copy()
        for lvl, cb in enumerate(tok.codebooks):
            dist = [float(((r - np.asarray(c, np.float64)) ** 2).sum()) for c in cb]
            best = int(np.argmin(dist))
            second = min(dd for j, dd in enumerate(dist) if j != best) if len(dist) > 1 else np.inf
            margin[i] = min(margin[i], (second - dist[best]) / (1.0 + float((r * r).sum())))
            codes[i, lvl] = best
            r = r - np.asarray(cb[best], np.float64)
    return codes, margin


def assert_encode_matches(tok: Tokenizer, x: np.ndarray) -> np.ndarray:
    got = tok.encode(x)
    want, margin = brute_encode(tok, x)
    clear = margin > 1e-4
    assert clear.mean() >= 0.98, "test data too close to ties to be an oracle"
    np.testing.assert_array_equal(got[clear], want[clear])
    assert got.dtype == np.int64 and got.shape == (len(x), tok.levels)
    assert all(len(np.unique(got[:, lvl])) > 1 for lvl in range(tok.levels))  # not a constant code
    return got


# ---- tokenizer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("latent_norm", [False, True])
@pytest.mark.parametrize("input_norm", ["l2", "none"])
@pytest.mark.parametrize("data_codebooks", [False, True])
def test_encode_matches_brute_force(latent_norm, input_norm, data_codebooks):
    x = sample_x(1)
    tok = random_tokenizer(
        3, D, (6, 5, 4), x=x if data_codebooks else None, input_norm=input_norm, latent_norm=latent_norm
    )
    codes = assert_encode_matches(tok, x)
    np.testing.assert_array_equal(tok.encode(x, batch_size=7), codes)  # batching does not change anything
    np.testing.assert_array_equal(tok.encode(x.astype(np.float64)), codes)


def test_latent_norm_changes_the_codes():
    x = sample_x(2)
    a = random_tokenizer(4, D, (6, 5, 4))
    b = Tokenizer(encoder=a.encoder, codebooks=a.codebooks, decoder=a.decoder, latent_norm=True)
    assert (a.encode(x) != b.encode(x)).any()


def test_input_norm_l2_is_scale_invariant():
    x = sample_x(3)
    tok = random_tokenizer(5, D, (6, 5, 4), x=x, input_norm="l2")
    codes = tok.encode(x)
    np.testing.assert_array_equal(tok.encode(3 * x), codes)
    np.testing.assert_array_equal(tok.encode(0.01 * x), codes)
    np.testing.assert_allclose(np.linalg.norm(tok.prepare(3 * x), axis=1)[x.any(1)], 1.0, rtol=1e-5)
    assert not tok.prepare(x)[7].any()  # zero row stays zero (no NaN)

    raw = Tokenizer(encoder=tok.encoder, codebooks=tok.codebooks, decoder=tok.decoder, input_norm="none")
    assert (raw.encode(3 * x) != raw.encode(x)).any()  # biases + ReLU: not scale-invariant in general
    np.testing.assert_array_equal(raw.prepare(3 * x), 3 * x)


def test_decode_and_latent_match_the_mlp_of_the_codeword_sum():
    tok = random_tokenizer(6, D, (6, 5, 4))
    codes = np.random.default_rng(0).integers(0, [6, 5, 4], (50, 3))
    z = sum(np.asarray(c, np.float64)[codes[:, lvl]] for lvl, c in enumerate(tok.codebooks))
    np.testing.assert_allclose(tok.latent(codes), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tok.decode(codes), mlp64(z, tok.decoder), rtol=1e-4, atol=1e-5)
    assert tok.decode(codes).shape == (50, D)


def test_tokenizer_shape_errors():
    tok = random_tokenizer(7, D, (6, 5, 4))
    with pytest.raises(DimensionMismatchError, match="dimension 15, the tokenizer expects 16"):
        tok.encode(np.zeros((3, 15), np.float32))
    with pytest.raises(DimensionMismatchError, match=r"\(n, 16\) array, got shape \(16,\)"):
        tok.encode(np.zeros(16, np.float32))
    with pytest.raises(ConfigError, match="input_norm must be one of"):
        Tokenizer(encoder=tok.encoder, codebooks=tok.codebooks, decoder=tok.decoder, input_norm="l1")
    with pytest.raises(ConfigError, match=r"codebook 1 has shape \(5, 7\), expected \(K, 8\)"):
        Tokenizer(encoder=tok.encoder, codebooks=[tok.codebooks[0], np.zeros((5, 7), np.float32)], decoder=tok.decoder)
    with pytest.raises(ConfigError, match="decoder shapes"):
        Tokenizer(encoder=tok.encoder, codebooks=tok.codebooks, decoder=tok.decoder[:1])
    with pytest.raises(ConfigError, match="at least one codebook"):
        Tokenizer(encoder=tok.encoder, codebooks=[], decoder=tok.decoder)
    assert (tok.d, tok.latent_dim, tok.levels, tok.sizes) == (16, 8, 3, [6, 5, 4])


@pytest.fixture
def saved_tokenizer(tmp_path) -> tuple[Tokenizer, Path]:
    tok = random_tokenizer(8, D, (6, 5, 4), latent_norm=True)
    path = tmp_path / "tok"
    tok.save(str(path), extra_files={"checkpoint.pt": b"not really torch"})
    return tok, path


def test_tokenizer_save_load_round_trip(saved_tokenizer):
    tok, path = saved_tokenizer
    back = Tokenizer.load(str(path))
    a, b = tok.arrays(), back.arrays()
    assert sorted(a) == sorted(b) and len(a) == 2 * 2 + 2 * 2 + 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert b[name].dtype == np.float32
    assert back.header() == tok.header() and back.header()["latent_norm"] is True
    assert back.fingerprint() == tok.fingerprint()
    assert back.config == tok.config and back.report == tok.report and back.path == str(path)
    x = sample_x(4)
    np.testing.assert_array_equal(back.encode(x), tok.encode(x))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["artifact"] == "tokenizer" and manifest["fingerprint"] == tok.fingerprint()
    assert manifest["codebook_sizes"] == [6, 5, 4] and set(manifest["files"]) == {"weights.npz", "checkpoint.pt"}
    other = random_tokenizer(9, D, (6, 5, 4))
    assert other.fingerprint() != tok.fingerprint()


def edit_manifest(path: Path, **changes: Any) -> None:
    mpath = path / "manifest.json"
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), **changes}))


def test_tokenizer_corrupted_weights(saved_tokenizer):
    _, path = saved_tokenizer
    w = path / "weights.npz"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: sha256 .* does not match"):
        Tokenizer.load(str(path))
    # without checksums the zip's CRC still catches it, as an ArtifactCorrupt naming the file
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: unreadable"):
        Tokenizer.load(str(path), verify=False)
    w.write_bytes(bytes(data[:-10]))
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: size .* \(truncated\?\)"):
        Tokenizer.load(str(path), verify=False)


def test_tokenizer_weights_missing_an_array(saved_tokenizer, tmp_path):
    tok, path = saved_tokenizer
    arrays = tok.arrays()
    del arrays["encoder.1.bias"]
    scratch = tmp_path / "w.npz"
    np.savez(scratch, **arrays)
    rewrite(path, "weights.npz", scratch.read_bytes())
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: does not hold a usable tokenizer"):
        Tokenizer.load(str(path))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"codebook_sizes": [6, 5, 5]}, r"weights\.npz: shapes do not match the manifest"),
        ({"codebook_sizes": [6, 5]}, r"weights\.npz: shapes do not match the manifest"),
        ({"d": 17}, r"weights\.npz: shapes do not match the manifest"),
        ({"input_norm": "cube"}, r"weights\.npz: does not hold a usable tokenizer .*input_norm"),
    ],
)
def test_tokenizer_manifest_mismatch(saved_tokenizer, changes, match):
    _, path = saved_tokenizer
    edit_manifest(path, **changes)
    with pytest.raises(ArtifactCorrupt, match=match):
        Tokenizer.load(str(path))


def test_tokenizer_weights_missing_from_the_manifest(saved_tokenizer):
    _, path = saved_tokenizer
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    del manifest["files"]["weights.npz"]
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"weights\.npz: missing from the manifest"):
        Tokenizer.load(str(path))
