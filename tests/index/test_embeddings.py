"""load_embeddings: the one way data enters vqrec. Every failure names the file and the row/id."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vqrec.index import InputError, NonFiniteError, load_embeddings, save_embeddings


def write_npy(
    tmp_path: Path, x: np.ndarray, ids: list[str] | None = None, name: str = "items.npy", ids_name: str = "item_ids.txt"
) -> tuple[str, str]:
    path = tmp_path / name
    np.save(path, x)
    ids_path = tmp_path / ids_name
    if ids is None:
        ids = [f"id{i}" for i in range(len(x))] if x.ndim >= 1 else []
    ids_path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return str(path), str(ids_path)


def vectors(rng: np.random.Generator, n: int = 6, d: int = 4, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal((n, d)).astype(dtype)


# ---- accepted inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4"])
def test_npy_with_explicit_ids(tmp_path, rng, dtype):
    x = vectors(rng, dtype=dtype)
    path, ids_path = write_npy(tmp_path, x, ids_name="names.txt")
    emb = load_embeddings(path, ids_path)
    assert emb.vectors.dtype == np.float32 and emb.vectors.flags.c_contiguous
    np.testing.assert_array_equal(emb.vectors, x.astype(np.float32))
    assert emb.ids == [f"id{i}" for i in range(6)] and (emb.n, emb.d) == (6, 4)
    assert emb.source == path and emb.row_of("id3") == 3


def test_npy_ids_auto_detected(tmp_path, rng):
    x = vectors(rng)
    path, _ = write_npy(tmp_path, x, ids=list("abcdef"))  # items.npy -> item_ids.txt
    assert load_embeddings(path).ids == list("abcdef")
    path2, _ = write_npy(tmp_path, x, ids=list("uvwxyz"), name="emb.npy", ids_name="emb_ids.txt")
    assert load_embeddings(path2).ids == list("uvwxyz")
    # items_ids.txt is tried before item_ids.txt
    (tmp_path / "items_ids.txt").write_text("".join(f"{c}\n" for c in "ABCDEF"))
    assert load_embeddings(path).ids == list("ABCDEF")


def test_npz(tmp_path, rng):
    x = vectors(rng, dtype=np.float64)
    np.savez(tmp_path / "e.npz", ids=np.array([10, 11, 12, 13, 14, 15]), vectors=x)
    emb = load_embeddings(str(tmp_path / "e.npz"))
    assert emb.ids == ["10", "11", "12", "13", "14", "15"]
    np.testing.assert_array_equal(emb.vectors, x.astype(np.float32))


@pytest.mark.parametrize("name", ["items.npy", "items.npz"])
def test_save_embeddings_round_trip(tmp_path, rng, name):
    x = vectors(rng)
    ids = ["a", "b", "ç", "d d", "e", "f"]
    save_embeddings(str(tmp_path / name), ids, x)
    emb = load_embeddings(str(tmp_path / name))
    assert emb.ids == ids
    np.testing.assert_array_equal(emb.vectors, x)


def test_all_zero_rows_are_accepted(tmp_path, rng):
    x = vectors(rng)
    x[[1, 4]] = 0
    emb = load_embeddings(*write_npy(tmp_path, x))
    assert (~emb.vectors.any(axis=1)).nonzero()[0].tolist() == [1, 4]


def test_crlf_ids(tmp_path, rng):
    path, ids_path = write_npy(tmp_path, vectors(rng, n=2))
    Path(ids_path).write_bytes(b"a\r\nb\r\n")
    assert load_embeddings(path, ids_path).ids == ["a", "b"]


def test_fingerprint_tracks_vectors_and_ids(tmp_path, rng):
    x = vectors(rng)
    a = load_embeddings(*write_npy(tmp_path, x))
    assert a.fingerprint() == load_embeddings(*write_npy(tmp_path, x)).fingerprint()
    y = x.copy()
    y[2, 1] += 1
    assert a.fingerprint() != load_embeddings(*write_npy(tmp_path, y)).fingerprint()
    assert a.fingerprint() != load_embeddings(*write_npy(tmp_path, x, ids=list("abcdef"))).fingerprint()


# ---- failures -----------------------------------------------------------------------------------


def expect(exc, *parts: str):
    return pytest.raises(exc, match=".*".join(re.escape(p) for p in parts))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_row(tmp_path, rng, bad):
    x = vectors(rng, n=8)
    x[5, 2] = bad
    x[7, 0] = bad
    path, ids_path = write_npy(tmp_path, x)
    with expect(NonFiniteError, path, "row 5", "'id5'", "NaN or inf", "2 bad rows"):
        load_embeddings(path, ids_path)


def test_float64_overflowing_float32(tmp_path, rng):
    x = vectors(rng, dtype=np.float64)
    x[3, 1] = 1e39
    path, ids_path = write_npy(tmp_path, x)
    with expect(NonFiniteError, path, "row 3", "'id3'", "overflows float32"):
        load_embeddings(path, ids_path)


@pytest.mark.parametrize(("shape", "rank"), [((6,), 1), ((6, 2, 2), 3)])
def test_wrong_rank(tmp_path, rng, shape, rank):
    path, ids_path = write_npy(tmp_path, rng.standard_normal(shape).astype(np.float32))
    with expect(InputError, path, f"expected a 2-D array (n, d), got shape {shape} (rank {rank})"):
        load_embeddings(path, ids_path)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64])
def test_non_float_dtype(tmp_path, dtype):
    path, ids_path = write_npy(tmp_path, np.ones((6, 4), dtype))
    with expect(InputError, path, "expected float16, float32 or float64", str(np.dtype(dtype))):
        load_embeddings(path, ids_path)


def test_ids_vectors_length_mismatch(tmp_path, rng):
    path, ids_path = write_npy(tmp_path, vectors(rng), ids=["a", "b", "c"])
    with expect(InputError, ids_path, "3 ids for 6 vectors", path):
        load_embeddings(path, ids_path)
    np.savez(tmp_path / "e.npz", ids=np.array(["a", "b"]), vectors=vectors(rng))
    with expect(InputError, str(tmp_path / "e.npz"), "2 ids for 6 vectors"):
        load_embeddings(str(tmp_path / "e.npz"))


def test_duplicate_ids_name_both_rows(tmp_path, rng):
    path, ids_path = write_npy(tmp_path, vectors(rng), ids=["a", "b", "c", "d", "b", "e"])
    with expect(InputError, ids_path, "duplicate id 'b' at rows 1 and 4"):
        load_embeddings(path, ids_path)


@pytest.mark.parametrize("bad", ["", " c", "c "])
def test_empty_or_padded_id(tmp_path, rng, bad):
    path, ids_path = write_npy(tmp_path, vectors(rng), ids=["a", "b", bad, "d", "e", "f"])
    with expect(InputError, ids_path, "id at row 2 is empty or has surrounding whitespace"):
        load_embeddings(path, ids_path)


def test_empty_array(tmp_path):
    path, ids_path = write_npy(tmp_path, np.zeros((0, 4), np.float32), ids=[])
    with expect(InputError, path, "no vectors (the array has 0 rows)"):
        load_embeddings(path, ids_path)


def test_zero_dimension(tmp_path):
    path, ids_path = write_npy(tmp_path, np.zeros((3, 0), np.float32))
    with expect(InputError, path, "dimension 0"):
        load_embeddings(path, ids_path)


def test_missing_files(tmp_path, rng):
    with expect(InputError, "embeddings file not found", str(tmp_path / "nope.npy")):
        load_embeddings(str(tmp_path / "nope.npy"))
    path = str(tmp_path / "vecs.npy")
    np.save(path, vectors(rng))
    with expect(InputError, path, "no ids file given", "vecs_ids.txt"):
        load_embeddings(path)
    with expect(InputError, "ids file not found", str(tmp_path / "missing.txt")):
        load_embeddings(path, str(tmp_path / "missing.txt"))


def test_ids_not_utf8(tmp_path, rng):
    path, ids_path = write_npy(tmp_path, vectors(rng, n=2))
    Path(ids_path).write_bytes(b"ok\n\xff\xfe\n")
    with expect(InputError, ids_path, "not UTF-8"):
        load_embeddings(path, ids_path)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text("1,2,3\n")
    with expect(InputError, str(p), "unsupported embeddings format '.csv'"):
        load_embeddings(str(p))


def test_npz_missing_keys(tmp_path, rng):
    np.savez(tmp_path / "e.npz", vectors=vectors(rng))
    with expect(InputError, str(tmp_path / "e.npz"), "missing ['ids']"):
        load_embeddings(str(tmp_path / "e.npz"))
    np.savez(tmp_path / "f.npz", ids=np.arange(3), emb=vectors(rng))
    with expect(InputError, str(tmp_path / "f.npz"), "missing ['vectors']"):
        load_embeddings(str(tmp_path / "f.npz"))


def test_unreadable_npy(tmp_path):
    p = tmp_path / "items.npy"
    p.write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "item_ids.txt").write_text("a\n")
    with expect(InputError, str(p), "cannot read embeddings"):
        load_embeddings(str(p))


def test_pickled_object_array_is_refused(tmp_path):
    p = tmp_path / "items.npy"
    np.save(p, np.array([[1.0, 2.0], [3.0, None]], dtype=object), allow_pickle=True)
    (tmp_path / "item_ids.txt").write_text("a\nb\n")
    with expect(InputError, str(p)):
        load_embeddings(str(p))
