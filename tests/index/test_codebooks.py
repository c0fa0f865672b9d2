"""Codebooks: lookup tables, pair tables, encode/decode, bit packing, the codebook artifact.

Oracles: a plain numpy loop for the LUTs (faiss TestPQTables), brute-force nearest centroid for PQ
encoding, faiss's own ProductQuantizer / ResidualQuantizer for decode and the packed code layout,
and save/load round trips.
"""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

from vqrec.index import ArtifactCorrupt, ArtifactError, ArtifactNotFound, Codebooks, ConfigError, DimensionMismatchError
from vqrec.index.codebooks import _pack_bits, _unpack_bits, normalize_rows, row_norms

KINDS = ("pq", "opq", "rq")


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def random_codebooks(
    rng: np.random.Generator, kind: str, *, d: int = 16, M: int = 4, nbits: int = 6, metric: str = "ip", **kw
) -> Codebooks:
    ksub = 1 << nbits
    shape = (M, ksub, d) if kind == "rq" else (M, ksub, d // M)
    rot = random_rotation(rng, d) if kind == "opq" else None
    return Codebooks(
        kind=kind,
        metric=metric,
        d=d,
        M=M,
        nbits=nbits,  # type: ignore[arg-type]
        centroids=rng.standard_normal(shape).astype(np.float32),
        rotation=rot,
        **kw,
    )


def lut_loop(cb: Codebooks, y: np.ndarray) -> np.ndarray:
    """lut[q, m, j] = <y_q (m-th slice for pq/opq), C[m, j]>, one codeword at a time in float64."""
    out = np.zeros((len(y), cb.M, cb.ksub))
    for m in range(cb.M):
        ym = y if cb.kind == "rq" else y[:, m * cb.dsub : (m + 1) * cb.dsub]
        for j in range(cb.ksub):
            out[:, m, j] = ym.astype(np.float64) @ cb.centroids[m, j].astype(np.float64)
    return out


def decode_loop(cb: Codebooks, codes: np.ndarray) -> np.ndarray:
    """Reconstruction (code space) by the definition: concat (pq/opq) or sum (rq) of codewords."""
    parts = [cb.centroids[m, codes[:, m]] for m in range(cb.M)]
    return np.sum(parts, axis=0) if cb.kind == "rq" else np.concatenate(parts, axis=1)


def faiss_packed(cb: Codebooks, codes: np.ndarray) -> np.ndarray:
    return codes if cb.nbits == 8 else _pack_bits(codes, cb.nbits)


# ---- lookup tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_lut_equals_numpy_loop(rng, kind):
    cb = random_codebooks(rng, kind, d=24, M=6, nbits=5)
    y = rng.standard_normal((7, 24)).astype(np.float32)
    lut = cb.lut(y)
    assert lut.shape == (7, 6, 32) and lut.dtype == np.float32
    np.testing.assert_allclose(lut, lut_loop(cb, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_lut_sum_is_inner_product_with_reconstruction(rng, kind):
    cb = random_codebooks(rng, kind)
    y = rng.standard_normal((5, 16)).astype(np.float32)
    codes = rng.integers(0, cb.ksub, (40, cb.M), dtype=np.uint8)
    adc = cb.lut(y)[:, np.arange(cb.M), codes.astype(np.intp)].sum(axis=2)  # (nq, nb)
    np.testing.assert_allclose(adc, y @ decode_loop(cb, codes).T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_lut_from_pair_tables_equals_lut_of_decode(rng, kind):
    cb = random_codebooks(rng, kind, nbits=5)
    codes = rng.integers(0, cb.ksub, (50, cb.M), dtype=np.uint8)
    tables = cb.pair_tables()
    want_shape = (cb.M, cb.M, cb.ksub, cb.ksub) if kind == "rq" else (cb.M, cb.ksub, cb.ksub)
    assert tables.shape == want_shape and tables.dtype == np.float32
    assert cb.pair_tables_bytes() == tables.nbytes
    np.testing.assert_allclose(cb.lut_from_codes(codes, tables), cb.lut(cb.decode(codes)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_lut_from_pair_tables_on_trained_codebooks(trained, recsys, kind):
    cb = trained(kind, "ip")
    codes = cb.encode(recsys.xb[:200])
    got = cb.lut_from_codes(codes, cb.pair_tables())
    np.testing.assert_allclose(got, cb.lut(cb.decode(codes)), rtol=1e-4, atol=1e-4)


# ---- encode / decode ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nbits", [8, 6])
def test_decode_equals_definition_and_faiss(rng, kind, nbits):
    cb = random_codebooks(rng, kind, nbits=nbits)
    codes = rng.integers(0, cb.ksub, (30, cb.M), dtype=np.uint8)
    x_hat = cb.decode(codes)
    assert x_hat.shape == (30, 16) and x_hat.dtype == np.float32
    np.testing.assert_allclose(x_hat, decode_loop(cb, codes), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x_hat, cb.faiss_quantizer().decode(faiss_packed(cb, codes)), rtol=1e-5, atol=1e-5)
    want_in = x_hat @ cb.rotation if kind == "opq" else x_hat
    np.testing.assert_allclose(cb.decode_input_space(codes), want_in, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nbits", [8, 4])
def test_recon_norms_equal_the_norm_of_the_decoded_vector(rng, kind, nbits):
    """PQ/OPQ sum the codewords' squared norms (orthogonal sub-spaces), RQ decodes: both are |decode(codes)|."""
    cb = random_codebooks(rng, kind, nbits=nbits)
    codes = rng.integers(0, cb.ksub, (500, cb.M), dtype=np.uint8)
    got = cb.recon_norms(codes)
    assert got.shape == (500,) and got.dtype == np.float32
    want = np.sqrt((decode_loop(cb, codes).astype(np.float64) ** 2).sum(axis=1))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert cb.recon_norms(codes[:0]).shape == (0,)


def test_rq_recon_norms_in_pieces_are_the_whole(rng, monkeypatch):
    """RQ decodes RECON_ROWS rows at a time: pieces (and a short last one) give the norms of the whole, bit for bit."""
    import vqrec.index.codebooks as codebooks_module

    cb = random_codebooks(rng, "rq", nbits=8)
    codes = rng.integers(0, cb.ksub, (500, cb.M), dtype=np.uint8)
    whole = row_norms(cb.decode(codes))
    monkeypatch.setattr(codebooks_module, "RECON_ROWS", 64)
    np.testing.assert_array_equal(cb.recon_norms(codes), whole)


def test_row_norms_and_normalize_rows(rng):
    x = rng.standard_normal((200, 24)).astype(np.float32)
    x[[3, 77]] = 0
    np.testing.assert_allclose(row_norms(x), np.linalg.norm(x.astype(np.float64), axis=1), rtol=1e-6)
    assert row_norms(x).dtype == np.float32
    u = normalize_rows(x)
    assert u.dtype == np.float32 and not u[[3, 77]].any()
    np.testing.assert_allclose(np.linalg.norm(np.delete(u, [3, 77], axis=0), axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kind", ["pq", "opq"])
def test_pq_encode_picks_the_nearest_centroid(rng, kind):
    cb = random_codebooks(rng, kind, metric="l2")
    x = rng.standard_normal((300, 16)).astype(np.float32)
    codes = cb.encode(x)
    assert codes.shape == (300, cb.M) and codes.dtype == np.uint8
    y = x @ cb.rotation.T if kind == "opq" else x
    for m in range(cb.M):
        ym = y[:, m * cb.dsub : (m + 1) * cb.dsub]
        dist = ((ym[:, None, :] - cb.centroids[m][None]) ** 2).sum(axis=2)
        np.testing.assert_array_equal(codes[:, m], dist.argmin(axis=1))


@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_round_trip_error(trained, recsys, kind):
    """Relative squared error of decode(encode(y)) on the unit directions the codebooks were trained on.

    Measured at M=8, nbits=6 on the shared set: pq 0.111, opq 0.106, rq 0.037; bounds 0.15 / 0.15 /
    0.06 (returning the mean vector scores close to 1).
    """
    cb = trained(kind, "ip")
    y = cb.to_code_space(recsys.xb)  # normalized (norm-explicit) and rotated
    y = y[y.any(axis=1)]
    rel = ((y - cb.decode(cb.encode_code_space(y))) ** 2).sum(axis=1).mean() / (y**2).sum(axis=1).mean()
    assert rel < {"pq": 0.15, "opq": 0.15, "rq": 0.06}[kind]
    # never worse than the best single codeword of the first (sub)codebook alone
    if kind == "rq":
        first = ((y[:, None, :] - cb.centroids[0][None]) ** 2).sum(axis=2).min(axis=1).mean()
        assert ((y - cb.decode(cb.encode_code_space(y))) ** 2).sum(axis=1).mean() < first


def test_rq_stages_reduce_error_and_beam_helps(trained, recsys):
    cb = trained("rq", "ip")
    y = cb.to_code_space(recsys.xb)
    y = y[y.any(axis=1)]
    codes = cb.encode_code_space(y)
    partial = np.zeros_like(y)
    errs = []
    for m in range(cb.M):
        partial += cb.centroids[m, codes[:, m]]
        errs.append(((y - partial) ** 2).sum(axis=1).mean())
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs
    greedy = Codebooks(kind="rq", metric="ip", d=cb.d, M=cb.M, nbits=cb.nbits, centroids=cb.centroids, beam_size=1)
    err_greedy = ((y - greedy.decode(greedy.encode_code_space(y))) ** 2).sum(axis=1).mean()
    assert errs[-1] <= err_greedy


@pytest.mark.parametrize("kind", KINDS)
def test_encode_nbits6_matches_faiss_packed_codes(rng, kind):
    cb = random_codebooks(rng, kind, M=4, nbits=6, metric="l2")  # 24 bits: 3 packed bytes per vector
    x = rng.standard_normal((200, 16)).astype(np.float32)
    codes = cb.encode(x)
    assert codes.max() < 64
    y = cb.to_code_space(x)
    packed = cb.faiss_quantizer().compute_codes(y)
    assert packed.shape == (200, 3)
    np.testing.assert_array_equal(_pack_bits(codes, 6), packed)
    np.testing.assert_allclose(cb.decode(codes), cb.faiss_quantizer().decode(packed), rtol=1e-5, atol=1e-5)


def test_pq_encode_equals_a_fresh_faiss_product_quantizer(rng):
    """Independent of Codebooks.faiss_quantizer: a faiss PQ set up by hand gives the same codes."""
    cb = random_codebooks(rng, "pq", M=4, nbits=5, metric="l2")
    pq = faiss.ProductQuantizer(16, 4, 5)
    faiss.copy_array_to_vector(cb.centroids.ravel(), pq.centroids)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    np.testing.assert_array_equal(_pack_bits(cb.encode(x), 5), pq.compute_codes(x))


@pytest.mark.parametrize("nbits", range(1, 9))
@pytest.mark.parametrize("M", [1, 3, 4, 7])
def test_pack_unpack_round_trip(rng, nbits, M):
    codes = rng.integers(0, 1 << nbits, (25, M), dtype=np.uint8)
    packed = _pack_bits(codes, nbits)
    assert packed.shape == (25, -(-M * nbits // 8)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(_unpack_bits(packed, M, nbits), codes)


def test_pack_bits_layout_is_little_endian():
    # faiss BitstringWriter: code m occupies bits [m*nbits, (m+1)*nbits), least significant bit first
    codes = np.array([[0b000001, 0b100000, 0b111111, 0b010101]], np.uint8)
    bits = sum(int(c) << (6 * m) for m, c in enumerate(codes[0]))
    assert _pack_bits(codes, 6).tolist() == [list(bits.to_bytes(3, "little"))]


# ---- spaces -------------------------------------------------------------------------------------


def test_to_code_space_normalizes_items_not_queries(rng):
    cb = random_codebooks(rng, "opq", metric="cosine")
    x = (rng.standard_normal((6, 16)) * 3).astype(np.float32)
    x[2] = 0
    y = cb.to_code_space(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), [1, 1, 0, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(y, normalize_rows(x) @ cb.rotation.T, atol=1e-6)
    np.testing.assert_allclose(cb.to_code_space(x, normalize=False), x @ cb.rotation.T, rtol=1e-5, atol=1e-5)
    ip = random_codebooks(rng, "pq", metric="ip")
    np.testing.assert_array_equal(ip.to_code_space(x), x)  # ip without norm_explicit: untouched
    ip.norm_explicit = True
    np.testing.assert_allclose(ip.to_code_space(x), normalize_rows(x))


def test_dimension_mismatch(rng):
    cb = random_codebooks(rng, "pq")
    with pytest.raises(DimensionMismatchError, match=r"\(15\).*\(16\)"):
        cb.encode(np.zeros((3, 15), np.float32))


# ---- OPQ = PQ in the rotated space --------------------------------------------------------------


def test_opq_search_equals_pq_on_rotated_vectors(trained, recsys, embed):
    from vqrec.index import build_index

    opq = trained("opq", "ip")
    R = opq.rotation
    pq = Codebooks(
        kind="pq",
        metric="ip",
        d=opq.d,
        M=opq.M,
        nbits=opq.nbits,
        centroids=opq.centroids,
        norm_explicit=opq.norm_explicit,
    )
    xb_rot = recsys.xb @ R.T
    np.testing.assert_array_equal(opq.encode(recsys.xb), pq.encode(xb_rot))
    i_opq = build_index(opq, recsys.items, show_progress=False)
    i_pq = build_index(pq, embed(xb_rot), show_progress=False)
    a = i_opq.search(recsys.xq, 10)
    b = i_pq.search(recsys.xq @ R.T, 10)
    for ra, rb in zip(a, b, strict=True):
        assert ra.rows == rb.rows
        np.testing.assert_allclose(ra.scores, rb.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        opq.lut(opq.to_code_space(recsys.xq, normalize=False)), pq.lut(recsys.xq @ R.T), rtol=1e-5, atol=1e-5
    )


def test_trained_opq_rotation_is_orthogonal(trained):
    R = trained("opq", "ip").rotation.astype(np.float64)
    np.testing.assert_allclose(R @ R.T, np.eye(len(R)), atol=1e-5)


# ---- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"d": 30, "M": 4}, r"d \(30\) must be divisible by M \(4\)"),
        ({"nbits": 0}, "nbits must be in 1..8"),
        ({"nbits": 9}, "nbits must be in 1..8"),
        ({"kind": "ivf"}, "unknown quantizer kind 'ivf'"),
        ({"metric": "dot"}, "unknown metric 'dot'"),
    ],
)
def test_config_errors(kw, match):
    args = {"kind": "pq", "metric": "ip", "d": 16, "M": 4, "nbits": 4}
    args.update(kw)
    dsub = max(1, args["d"] // args["M"])
    cents = np.zeros((args["M"], 1 << min(max(args["nbits"], 1), 8), dsub), np.float32)
    with pytest.raises(ConfigError, match=match):
        Codebooks(centroids=cents, **args)


def test_centroid_shape_and_rotation_checked(rng):
    with pytest.raises(ConfigError, match=r"expected \(4, 16, 4\)"):
        Codebooks(kind="pq", metric="ip", d=16, M=4, nbits=4, centroids=np.zeros((4, 16, 5)))
    with pytest.raises(ConfigError, match="opq needs a"):
        Codebooks(kind="opq", metric="ip", d=16, M=4, nbits=4, centroids=np.zeros((4, 16, 4)))
    # rq does not need d % M == 0
    cb = Codebooks(kind="rq", metric="l2", d=30, M=4, nbits=4, centroids=np.zeros((4, 16, 30)))
    assert cb.code_size == 4


# ---- the codebook artifact ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_codebook_artifact_round_trip(trained, tmp_path, kind):
    cb = trained(kind, "cosine")
    path = str(tmp_path / "cb")
    assert cb.save(path) == path
    assert sorted(os.listdir(path)) == ["codebooks.npz", "manifest.json"]
    back = Codebooks.load(path)
    np.testing.assert_array_equal(back.centroids, cb.centroids)
    if kind == "opq":
        np.testing.assert_array_equal(back.rotation, cb.rotation)
    else:
        assert back.rotation is None
    assert back.header() == cb.header()
    assert back.config == cb.config
    assert back.report == json.loads(json.dumps(cb.report))
    x = np.random.default_rng(0).standard_normal((20, cb.d)).astype(np.float32)
    np.testing.assert_array_equal(back.encode(x), cb.encode(x))


def test_codebook_artifact_errors(rng, tmp_path):
    cb = random_codebooks(rng, "pq")
    path = str(tmp_path / "cb")
    cb.save(path)
    with pytest.raises(ArtifactError, match="already exists"):
        cb.save(path)
    cb.save(path, overwrite=True)
    with pytest.raises(ArtifactNotFound, match="nope"):
        Codebooks.load(str(tmp_path / "nope"))
    npz = tmp_path / "cb" / "codebooks.npz"
    data = bytearray(npz.read_bytes())
    data[-30] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match="codebooks.npz: sha256"):
        Codebooks.load(path)
    mpath = tmp_path / "cb" / "manifest.json"
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), "artifact": "index"}))
    with pytest.raises(ArtifactCorrupt, match="expected 'codebooks'"):
        Codebooks.load(path)


def test_codebook_artifact_header_mismatch(rng, tmp_path):
    cb = random_codebooks(rng, "pq")
    path = str(tmp_path / "cb")
    cb.save(path)
    mpath = tmp_path / "cb" / "manifest.json"
    # centroids are (4, 64, 4): the manifest now lies
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), "M": 8}))
    with pytest.raises(ArtifactCorrupt, match="do not match the manifest"):
        Codebooks.load(path)
