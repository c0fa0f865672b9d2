"""The build step (index/semantic/build.py, via attach_semantic_ids) and the index artifact: tokenize
against its parts, alignment by id, the manifest section, format 2 semantic-id files, the format-1 fixture
still loading, loud load errors naming the file.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from semantic_helpers import (  # shared semantic-id test helpers (same directory)
    SIZES,
    D,
    oracle_suffixes,
    rand,
    random_tokenizer,
    sample_x,
)
from test_artifact import npy_bytes, rewrite  # artifact-surgery helpers (same directory)

from vqrec.index import (
    ArtifactCorrupt,
    ConfigError,
    DimensionMismatchError,
    Embeddings,
    InputError,
    build_index,
    load_index,
    save_index,
)
from vqrec.index.artifact_io import json_default
from vqrec.index.build import attach_semantic_ids
from vqrec.index.semantic import Tokenizer, semantic_report, tokenize
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

FIXTURE_V1 = Path(__file__).resolve().parents[1] / "fixtures" / "index_v1"


# ---- build step ---------------------------------------------------------------------------------
def test_tokenize_matches_its_parts():
    x = sample_x(5, n=200)
    tok = random_tokenizer(10, D, (6, 5, 4), x=x)
    ids = [f"t{i}" for i in range(200)]
    sem_, rep = tokenize(tok, x, ids, kind="user", seed=3)
    codes = tok.encode(x)
    np.testing.assert_array_equal(sem_.codes, codes)
    np.testing.assert_array_equal(sem_.suffix, oracle_suffixes(codes))
    assert sem_.codes.dtype == np.uint8 and sem_.suffix.dtype == np.uint32
    assert sem_.ids == ids and sem_.kind == "user" and sem_.sizes == [6, 5, 4]
    want = semantic_report(tok.prepare(x), codes, oracle_suffixes(codes), [6, 5, 4], x_hat=tok.decode(codes), seed=3)
    assert rep == want
    assert rep["collisions_before_dedup"]["rows_in_collisions"] > 0
    assert 0 < rep["reconstruction"]["relative_mse"]
    big = random_tokenizer(11, D, (300, 2))
    assert tokenize(big, x, ids, kind="item")[0].codes.dtype == np.uint16


# ---- attach_semantic_ids + index artifact ------------------------------------------------------
SEM_D = 24  # the tokenizer reads other embeddings than the index (e.g. title embeddings)


class SemInputs(NamedTuple):
    items: Embeddings  # every index item in another row order, plus extra rows
    users: Embeddings  # every index user reversed, plus extra rows
    xi: np.ndarray  # the rows of ``items`` in index item order
    xu: np.ndarray  # the rows of ``users`` in index user order


@pytest.fixture(scope="module")
def codebooks(recsys):
    cfg = TrainConfig(method="pq", metric="ip", M=4, nbits=4, niter=8, eval_queries=20)
    return train(recsys.items, cfg, show_progress=False)


@pytest.fixture(scope="module")
def sem_inputs(recsys) -> SemInputs:
    rng = np.random.default_rng(11)
    proj = rng.standard_normal((32, SEM_D)).astype(np.float32)
    xi = (recsys.xb @ proj + 0.2 * rng.standard_normal((len(recsys.xb), SEM_D))).astype(np.float32)
    xu = (recsys.xq @ proj + 0.2 * rng.standard_normal((len(recsys.xq), SEM_D))).astype(np.float32)

    def shuffled(ids: list[str], x: np.ndarray, order: np.ndarray, extra: str) -> Embeddings:
        all_ids = [ids[i] for i in order] + [f"{extra}{j}" for j in range(37)]
        vecs = np.concatenate([x[order], rand(rng, 37, SEM_D)])
        mix = rng.permutation(len(all_ids))
        return Embeddings(ids=[all_ids[j] for j in mix], vectors=np.ascontiguousarray(vecs[mix]), source=f"{extra}.npy")

    items = shuffled(recsys.items.ids, xi, rng.permutation(len(xi)), "extra_item")
    users = shuffled(recsys.users.ids, xu, np.arange(len(xu))[::-1], "extra_user")
    return SemInputs(items, users, xi, xu)


@pytest.fixture(scope="module")
def tok(sem_inputs) -> Tokenizer:
    return random_tokenizer(12, SEM_D, SIZES, x=sem_inputs.xi)


class Built(NamedTuple):
    index: Any
    section: dict[str, Any]
    path: Path


def fresh_index(codebooks, recsys, *, users: bool = True):
    return build_index(codebooks, recsys.items, users=recsys.users if users else None, show_progress=False)


@pytest.fixture(scope="module")
def built(codebooks, recsys, sem_inputs, tok, tmp_path_factory) -> Built:
    index = fresh_index(codebooks, recsys)
    section = attach_semantic_ids(index, tok, sem_inputs.items, users=sem_inputs.users, seed=0)
    path = tmp_path_factory.mktemp("semantic") / "idx"
    save_index(index, str(path))
    return Built(index, section, path)


def test_attach_aligns_by_id(built, recsys, sem_inputs, tok):
    index = built.index
    for sem_, ids, x, kind in (
        (index.semantic_items, recsys.items.ids, sem_inputs.xi, "item"),
        (index.semantic_users, recsys.users.ids, sem_inputs.xu, "user"),
    ):
        codes = tok.encode(x)
        assert sem_.kind == kind and sem_.ids == list(ids) and sem_.sizes == SIZES
        np.testing.assert_array_equal(sem_.codes, codes)
        np.testing.assert_array_equal(sem_.suffix, oracle_suffixes(codes))  # in the index's row order
        assert sem_.suffix.max() > 0
        assert all(sem_.find(list(codes[i]), int(sem_.suffix[i])) == i for i in range(0, len(ids), 37))
    # the semantic embeddings' own row order would have given other codes (the alignment matters)
    assert (tok.encode(sem_inputs.items.vectors[: len(recsys.xb)]) != index.semantic_items.codes).any()


def test_attach_section(built, sem_inputs, tok):
    s = built.section
    # save_index leaves the manifest as written (plain JSON values, with its checksum): the attached section
    assert built.index.manifest["semantic_ids"] == s
    assert s["levels"] == 3 and s["codebook_sizes"] == SIZES
    assert s["tokenizer"] == {**tok.header(), "path": None, "fingerprint": tok.fingerprint(), "config": tok.config}
    assert s["source"] == {
        "items": {"path": "extra_item.npy", "sha256": sem_inputs.items.fingerprint()},
        "users": {"path": "extra_user.npy", "sha256": sem_inputs.users.fingerprint()},
    }
    for key, x, sem_ in (
        ("items", sem_inputs.xi, built.index.semantic_items),
        ("users", sem_inputs.xu, built.index.semantic_users),
    ):
        want = semantic_report(tok.prepare(x), tok.encode(x), sem_.suffix, SIZES, x_hat=tok.decode(tok.encode(x)))
        assert s[key] == want
    assert s["items"]["n"] == 2000 and s["users"]["n"] == 100


def test_attach_without_users(codebooks, recsys, sem_inputs, tok):
    index = fresh_index(codebooks, recsys)
    section = attach_semantic_ids(index, tok, sem_inputs.items)
    assert index.semantic_users is None and section["users"] is None and "users" not in section["source"]
    np.testing.assert_array_equal(index.semantic_items.codes, tok.encode(sem_inputs.xi))


def drop_rows(emb: Embeddings, ids: set[str]) -> Embeddings:
    keep = [i for i, s in enumerate(emb.ids) if s not in ids]
    return Embeddings(ids=[emb.ids[i] for i in keep], vectors=np.ascontiguousarray(emb.vectors[keep]), source="t.npy")


def test_attach_missing_ids(codebooks, recsys, sem_inputs, tok):
    index = fresh_index(codebooks, recsys)
    items = drop_rows(sem_inputs.items, {"i1999", "i7", "i5"})
    with pytest.raises(
        InputError, match=re.escape("3 of 2000 item ids have no row in t.npy (first: ['i5', 'i7', 'i1999'])")
    ):
        attach_semantic_ids(index, tok, items)
    many = drop_rows(sem_inputs.items, {f"i{j}" for j in range(100, 120)})
    with pytest.raises(
        InputError,
        match=re.escape("20 of 2000 item ids have no row in t.npy (first: ['i100', 'i101', 'i102', 'i103', 'i104'])"),
    ):
        attach_semantic_ids(index, tok, many)
    users = drop_rows(sem_inputs.users, {"u3"})
    with pytest.raises(InputError, match=re.escape("1 of 100 user ids have no row in t.npy (first: ['u3'])")):
        attach_semantic_ids(index, tok, sem_inputs.items, users=users)
    # a failure in the users step leaves the index untouched (items were valid): nothing half-attached
    assert index.semantic_items is None and index.semantic_users is None and "semantic_ids" not in index.manifest


def test_attach_dimension_mismatch(codebooks, recsys, sem_inputs, tok, embed):
    index = fresh_index(codebooks, recsys)
    narrow = embed(sem_inputs.xi[:, :23], "i", "narrow.npy")
    with pytest.raises(DimensionMismatchError, match=r"narrow\.npy: item dimension \(23\) .* input dimension \(24\)"):
        attach_semantic_ids(index, tok, narrow)
    wide = embed(np.zeros((100, 32), np.float32), "u", "wide.npy")
    with pytest.raises(DimensionMismatchError, match=r"wide\.npy: user dimension \(32\)"):
        attach_semantic_ids(index, tok, sem_inputs.items, users=wide)
    assert index.semantic_items is None and "semantic_ids" not in index.manifest  # checked before any work


def test_attach_users_without_index_users(codebooks, recsys, sem_inputs, tok):
    index = fresh_index(codebooks, recsys, users=False)
    with pytest.raises(ConfigError, match=r"only in an index built with users \(--users\)"):
        attach_semantic_ids(index, tok, sem_inputs.items, users=sem_inputs.users)
    assert index.semantic_items is None and "semantic_ids" not in index.manifest


def test_save_load_round_trip(built):
    back = load_index(str(built.path))
    m = back.manifest
    assert m["format_version"] == 2
    assert m["semantic_ids"] == json.loads(json.dumps(built.section, default=json_default))
    assert m["semantic_ids"]["items"]["collisions_before_dedup"]["rows_in_collisions"] > 0
    for name in (
        "item_semantic_codes.npy",
        "item_semantic_suffix.npy",
        "user_semantic_codes.npy",
        "user_semantic_suffix.npy",
    ):
        assert name in m["files"]
    for a, b in ((built.index.semantic_items, back.semantic_items), (built.index.semantic_users, back.semantic_users)):
        assert (b.ids, b.kind, b.sizes) == (a.ids, a.kind, a.sizes)
        np.testing.assert_array_equal(b.codes, a.codes)
        np.testing.assert_array_equal(b.suffix, a.suffix)
        assert b.codes.dtype == np.uint8 and b.suffix.dtype == np.uint32
        assert b.tag == a.tag
        assert b.decode_cursor(a.encode_cursor([1], 3), [1]) == 3  # cursors survive a reload
        assert b.rows_in(0, len(b)).tolist() == a.rows_in(0, len(a)).tolist()


def test_index_without_semantic_ids(codebooks, recsys, tmp_path):
    path = tmp_path / "plain"
    manifest = save_index(fresh_index(codebooks, recsys), str(path))
    assert manifest["format_version"] == 2 and "semantic_ids" not in manifest
    assert not [f for f in manifest["files"] if "semantic" in f]
    back = load_index(str(path))
    assert back.semantic_items is None and back.semantic_users is None


def test_v1_fixture_loads_without_semantic_ids():
    index = load_index(str(FIXTURE_V1))
    assert index.manifest["format_version"] == 1 and "semantic_ids" not in index.manifest
    assert index.semantic_items is None and index.semantic_users is None
    assert len(index) == 64 and index.users is not None


@pytest.fixture
def copy(built, tmp_path) -> Path:
    path = tmp_path / "idx"
    shutil.copytree(built.path, path)
    return path


def test_corrupted_semantic_codes(copy):
    f = copy / "item_semantic_codes.npy"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"item_semantic_codes\.npy: sha256 .* does not match"):
        load_index(str(copy))
    f.write_bytes(bytes(data[:-6]))
    for verify in (True, False):
        with pytest.raises(ArtifactCorrupt, match=r"item_semantic_codes\.npy: size .* \(truncated\?\)"):
            load_index(str(copy), verify=verify)


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        (
            "item_semantic_codes.npy",
            lambda c, s: c[:-1],
            r"item_semantic_codes\.npy: shape \(1999, 3\) .*expected \(2000, 3\)",
        ),
        (
            "item_semantic_codes.npy",
            lambda c, s: c[:, :2],
            r"item_semantic_codes\.npy: shape \(2000, 2\) .*expected \(2000, 3\)",
        ),
        ("item_semantic_codes.npy", lambda c, s: c.astype(np.int64), r"item_semantic_codes\.npy: dtype int64"),
        ("item_semantic_codes.npy", lambda c, s: c.astype(np.float32), r"item_semantic_codes\.npy: dtype float32"),
        (
            "item_semantic_suffix.npy",
            lambda c, s: s[:-1],
            r"item_semantic_suffix\.npy: shape \(1999,\) .*expected \(2000,\) uint32",
        ),
        (
            "item_semantic_suffix.npy",
            lambda c, s: s.astype(np.int64),
            r"item_semantic_suffix\.npy: .*dtype int64, expected \(2000,\) uint32",
        ),
        (
            "user_semantic_codes.npy",
            lambda c, s: np.zeros((99, 3), np.uint8),
            r"user_semantic_codes\.npy: shape \(99, 3\) .*expected \(100, 3\)",
        ),
        (
            "item_semantic_codes.npy",
            lambda c, s: np.where(np.arange(2000)[:, None] == 9, 4, c).astype(np.uint8),
            r"item_semantic_codes\.npy: .*outside its level's codebook",
        ),
        ("item_semantic_suffix.npy", lambda c, s: np.zeros_like(s), r"item_semantic_codes\.npy: .*not unique"),
        (
            "item_semantic_codes.npy",
            lambda c, s: None,
            r"item_semantic_codes\.npy and item_semantic_suffix\.npy come together; one is missing",
        ),
        ("item_semantic_suffix.npy", lambda c, s: None, r"come together; one is missing"),
        (
            "user_semantic_codes.npy",
            lambda c, s: None,
            r"user_semantic_codes\.npy and user_semantic_suffix\.npy come together",
        ),
        (
            "user_semantic_suffix.npy",
            lambda c, s: None,
            r"user_semantic_codes\.npy and user_semantic_suffix\.npy come together",
        ),
    ],
)
def test_semantic_files_rewritten_consistently(copy, tmp_path, name, make, match):
    codes = np.load(copy / "item_semantic_codes.npy")
    suffix = np.load(copy / "item_semantic_suffix.npy")
    arr = make(codes, suffix)
    rewrite(copy, name, None if arr is None else npy_bytes(arr, tmp_path))
    with pytest.raises(ArtifactCorrupt, match=match):
        load_index(str(copy))


def test_unreadable_semantic_file(copy):
    rewrite(copy, "user_semantic_suffix.npy", b"definitely not npy")
    with pytest.raises(ArtifactCorrupt, match=r"user_semantic_suffix\.npy: unreadable"):
        load_index(str(copy))


def test_both_semantic_files_dropped_from_the_manifest_is_a_plain_index(copy):
    rewrite(copy, "user_semantic_codes.npy", None)
    rewrite(copy, "user_semantic_suffix.npy", None)
    back = load_index(str(copy))
    assert back.semantic_users is None and back.semantic_items is not None


@pytest.mark.parametrize(
    "section",
    [..., None, {}, {"codebook_sizes": []}, {"codebook_sizes": [4, 0, 5]}, {"codebook_sizes": [4, "3", 5]}],
)
def test_semantic_section_missing_or_invalid(copy, section):
    manifest = json.loads((copy / "manifest.json").read_text())
    if section is ...:
        del manifest["semantic_ids"]
    else:
        manifest["semantic_ids"] = section
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: semantic_ids\.codebook_sizes missing or invalid"):
        load_index(str(copy))


def test_semantic_section_sizes_smaller_than_the_codes(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["semantic_ids"]["codebook_sizes"] = [4, 3, 2]  # codes of level 2 go up to 4
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"item_semantic_codes\.npy: .*outside its level's codebook"):
        load_index(str(copy))


def test_user_semantic_ids_without_users(copy):
    rewrite(copy, "user_ids.txt", None)
    rewrite(copy, "user_vectors.npy", None)
    with pytest.raises(ArtifactCorrupt, match=r"user_semantic_codes\.npy: user semantic ids without users"):
        load_index(str(copy))
