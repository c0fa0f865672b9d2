"""The index artifact: save/load round trip, loud and specific load errors, atomic publish, and the
checked-in v1 fixture (the format-compatibility oracle).

The fixture tests/fixtures/index_v1/ (12 KB) was written once with:

    import numpy as np
    from vqrec.index import Embeddings, build_index, save_index
    from vqrec.trainers.config import TrainConfig
    from vqrec.trainers.quantizers import train

    rng = np.random.default_rng(1234)
    xb = rng.standard_normal((64, 8)).astype(np.float32)
    xb[[5, 40]] = 0
    xu = rng.standard_normal((8, 8)).astype(np.float32)
    items = Embeddings(ids=[f"item{i}" for i in range(64)], vectors=xb, source="fixture")
    users = Embeddings(ids=[f"user{i}" for i in range(8)], vectors=xu, source="fixture")
    cfg = TrainConfig(method="pq", metric="ip", M=2, nbits=4, niter=10, eval_queries=8)
    cb = train(items, cfg, show_progress=False)
    save_index(build_index(cb, items, users=users, show_progress=False), "tests/fixtures/index_v1")

Never regenerate it to make a test pass: a change that breaks it breaks every index already on disk
(bump INDEX_FORMAT_VERSION and add a new fixture instead).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from vqrec.index import (
    INDEX_FORMAT_VERSION,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    FormatVersionError,
    build_index,
    load_index,
    save_index,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "index_v1"


# ---- helpers ------------------------------------------------------------------------------------


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def rewrite(path: Path, name: str, data: bytes | None) -> None:
    """Replace (or with None delete) one file and keep the manifest's size and sha256 consistent (and the
    manifest's own checksum, when it has one: the artifact stays consistently signed)."""
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    if data is None:
        (path / name).unlink()
        del manifest["files"][name]
    else:
        (path / name).write_bytes(data)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    mpath.write_text(json.dumps(manifest))
    resign(path)


def resign(path: Path) -> None:
    """Recompute manifest.json's ``manifest_sha256`` as docs/artifacts.md defines it (the sha256 of the file's
    bytes with the value written as 64 zeros); nothing for a manifest without one."""
    mpath = path / "manifest.json"
    raw = mpath.read_bytes()
    value = json.loads(raw).get("manifest_sha256")
    if value is None:
        return
    zero = b'"manifest_sha256": "' + b"0" * 64 + b'"'
    raw = raw.replace(f'"manifest_sha256": "{value}"'.encode(), zero)
    mpath.write_bytes(raw.replace(zero, f'"manifest_sha256": "{hashlib.sha256(raw).hexdigest()}"'.encode()))


def npy_bytes(arr: np.ndarray, tmp: Path) -> bytes:
    p = tmp / "scratch.npy"
    np.save(p, arr)
    data = p.read_bytes()
    p.unlink()
    return data


def results(index, xq) -> list[tuple[list[str], list[float]]]:
    out = [(r.ids, r.scores) for r in index.search(xq, 10)]
    out += [(r.ids, r.scores) for r in index.similar(index.item_ids[:20], 10)]
    if index.users is not None:
        out += [(r.ids, r.scores) for r in index.recommend(index.users.ids[:20], 10)]
    return out


@pytest.fixture
def saved(built, tmp_path) -> Path:
    """A fresh copy of a small saved index (pq/ip, float32 users, float32 item vectors)."""
    path = tmp_path / "idx"
    save_index(built("pq", "ip", item_vectors="float32"), str(path))
    return path


# ---- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "metric", "user_storage", "item_vectors"),
    [
        ("pq", "ip", "float32", "float32"),
        ("opq", "cosine", "codes", "none"),
        ("rq", "l2", "float16", "float16"),
        ("rq", "ip", "codes", "none"),
    ],
)
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(built, recsys, tmp_path, method, metric, user_storage, item_vectors, mmap):
    index = built(method, metric, user_storage=user_storage, item_vectors=item_vectors)
    path = tmp_path / "idx"
    manifest = save_index(index, str(path), evaluation={"recall@10": 0.5})
    back = load_index(str(path), mmap=mmap)
    assert results(back, recsys.xq) == results(index, recsys.xq)
    np.testing.assert_array_equal(back.codes, index.codes)
    np.testing.assert_array_equal(back.recon_norms, index.recon_norms)
    np.testing.assert_array_equal(back.zero_items, index.zero_items)
    np.testing.assert_array_equal(back.codebooks.centroids, index.codebooks.centroids)
    assert back.item_ids == index.item_ids and back.users.ids == index.users.ids
    assert (back.scan_kind, back.nlist, back.nprobe) == (index.scan_kind, index.nlist, index.nprobe)
    assert back.users.storage == user_storage
    if item_vectors != "none":
        np.testing.assert_array_equal(back.item_vectors, index.item_vectors)
        assert back.search(recsys.xq, 10, rerank=50) == index.search(recsys.xq, 10, rerank=50)
    assert back.manifest == manifest == json.loads((path / "manifest.json").read_text())
    assert back.version == manifest["index_version"] and back.path == str(path)
    assert manifest["evaluation"] == {"recall@10": 0.5}


def _mapped(path: Path) -> set[str]:
    """Files of ``path`` this process maps (from /proc/self/maps)."""
    text = Path("/proc/self/maps").read_text()
    return {p.name for p in path.iterdir() if str(p) in text}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps to see what is mapped")
def test_packed_layout_is_saved_and_searched_in_place(built, recsys, tmp_path, monkeypatch):
    """4-bit codes: codes_fs4.npy holds the layout the scan reads. A mapped load searches that file in place (its
    pages, and the ids' and per-item arrays', are shared with every process mapping them); a load into memory
    reads it instead of packing; an artifact without it (older vqrec) packs at load. All answer the same."""
    from vqrec.index import fastscan

    index = built("pq", "ip", item_vectors="int8", nbits=4)
    path = tmp_path / "idx"
    manifest = save_index(index, str(path))
    assert "codes_fs4.npy" in manifest["files"]
    np.testing.assert_array_equal(np.load(path / "codes_fs4.npy"), index.packed_layout())
    sizes = {f: m["bytes"] for f, m in manifest["files"].items()}  # what a load searches, per item: not codes.npy
    per_item = sum(
        sizes[f] for f in ("codes_fs4.npy", "item_norms.npy", "item_zero.npy", "item_scale.npy", "item_ids.txt")
    )
    assert manifest["bytes"]["index_bytes_per_item"] == pytest.approx(per_item / len(index), abs=1e-3)
    want = results(index, recsys.xq) + [(r.ids, r.scores) for r in index.search(recsys.xq, 10, rerank=40)]
    mapped = load_index(str(path), mmap=True)
    if fastscan.fastscan_available():
        assert mapped.scan_kind == "fastscan4"
        held = _mapped(path)
        assert {"codes_fs4.npy", "item_ids.txt", "item_norms.npy", "item_scale.npy", "item_vectors.npy"} <= held
    with monkeypatch.context() as m:  # a load with the file reads it: nothing is packed
        m.setattr(fastscan, "pack", lambda *a: pytest.fail("packed at load although codes_fs4.npy is there"))
        in_memory = load_index(str(path), mmap=False)
        assert len(load_index(str(path), mmap=True)) == len(index)
    shutil.copytree(path, tmp_path / "old")
    rewrite(tmp_path / "old", "codes_fs4.npy", None)
    old = load_index(str(tmp_path / "old"))
    for back in (mapped, in_memory, old):
        got = results(back, recsys.xq) + [(r.ids, r.scores) for r in back.search(recsys.xq, 10, rerank=40)]
        assert got == want
        np.testing.assert_array_equal(np.asarray(back.codes), np.asarray(index.codes))


def test_packed_layout_only_for_codes_that_fit_it(built, tmp_path):
    save_index(built("pq", "ip"), str(tmp_path / "six"))  # 6-bit codes
    assert not (tmp_path / "six" / "codes_fs4.npy").exists()


def test_packed_layout_must_hold_the_codes(built, tmp_path):
    """A codes_fs4.npy that differs from codes.npy is refused, naming the row. With checksums every row is compared;
    without, the first and last row of each list and 1,024 spread rows (the documented trade-off: a row outside
    those loads unchecked)."""
    from vqrec.index import fastscan

    if not fastscan.fastscan_available():
        pytest.skip("the 4-bit kernel is not built: codes_fs4.npy is not read")
    index = built("pq", "ip", nbits=4)
    path = tmp_path / "idx"
    save_index(index, str(path))
    n = len(index)
    rows = index.partition.list_rows if index.partition is not None else np.array([0, n])
    sampled = {*rows[:-1].tolist(), *(rows[1:] - 1).tolist(), *np.linspace(0, n - 1, min(n, 1024)).astype(int).tolist()}
    unsampled = next(r for r in range(n) if r not in sampled)
    codes = np.asarray(index.codes)

    def packed_with(row: int) -> np.ndarray:
        bad = codes.copy()
        bad[row, 0] = (bad[row, 0] + 1) % 16
        return fastscan.pack(bad, rows)

    rewrite(path, "codes_fs4.npy", npy_bytes(packed_with(unsampled), tmp_path))
    with pytest.raises(ArtifactCorrupt, match=rf"codes_fs4\.npy: row {unsampled} differs from codes\.npy"):
        load_index(str(path), verify=True)
    assert len(load_index(str(path), verify=False)) == n  # not sampled: loads
    first = int(rows[-2])  # the last list's first row: always compared
    rewrite(path, "codes_fs4.npy", npy_bytes(packed_with(first), tmp_path))
    for verify in (True, False):
        with pytest.raises(ArtifactCorrupt, match=rf"codes_fs4\.npy: row {first} differs from codes\.npy"):
            load_index(str(path), verify=verify)
    rewrite(path, "codes_fs4.npy", npy_bytes(packed_with(first)[:-1], tmp_path))
    for verify in (True, False):
        with pytest.raises(ArtifactCorrupt, match=r"codes_fs4\.npy: shape"):
            load_index(str(path), verify=verify)


def test_manifest_fields(built, tmp_path):
    index = built("pq", "ip", item_vectors="float32")
    path = tmp_path / "idx"
    manifest = save_index(index, str(path))
    assert manifest["artifact"] == "index"
    assert manifest["format_version"] == INDEX_FORMAT_VERSION == 2
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{10}", manifest["index_version"])
    assert manifest["n_items"] == 2000 and manifest["d"] == 32 and manifest["n_users"] == 100
    assert manifest["metric"] == "ip" and manifest["similar_metric"] == "cosine"
    assert manifest["method"] == index.codebooks.header()
    assert manifest["method"]["kind"] == "pq" and manifest["method"]["M"] == 8 and manifest["method"]["nbits"] == 6
    assert manifest["trainer_config"]["method"] == "pq"
    assert "mse" in manifest["train_report"]
    # every file on disk but the manifest is listed, with its true sha256 and size
    on_disk = sorted(p.name for p in path.iterdir() if p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    partition_files = {"partition_centroids.npy", "partition_lists.npy"} if index.partition is not None else set()
    assert {
        "codebooks.npz",
        "codes.npy",
        "item_ids.txt",
        "item_norms.npy",
        "item_zero.npy",
        "item_scale.npy",
        "pair_tables.npy",
        "user_ids.txt",
        "user_vectors.npy",
        "item_vectors.npy",
        *partition_files,
    } == set(on_disk)
    for name, meta in manifest["files"].items():
        data = (path / name).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    b = manifest["bytes"]
    sizes = {name: meta["bytes"] for name, meta in manifest["files"].items()}
    assert b["total"] == sum(sizes.values())
    assert b["code_bytes_per_item"] == 8 and b["float32_bytes_per_item"] == 128 and b["compression_ratio"] == 16
    assert b["pair_tables"] == sizes["pair_tables.npy"] and b["item_vectors"] == sizes["item_vectors.npy"]
    assert b["users"] == sizes["user_vectors.npy"]
    per_item = sum(sizes[f] for f in ("codes.npy", "item_norms.npy", "item_zero.npy", "item_scale.npy", "item_ids.txt"))
    assert b["index_bytes_per_item"] == pytest.approx(per_item / 2000, abs=1e-3)
    # line i is the id of row i: the input order when flat, list by list when partitioned
    lines = (path / "item_ids.txt").read_text().split("\n")
    assert lines == [*index.item_ids, ""]
    if index.partition is None:
        assert lines[:3] == ["i0", "i1", "i2"]


# ---- loading errors: the specific class, naming the file ----------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactNotFound, match="nowhere"):
        load_index(str(tmp_path / "nowhere"))


def test_missing_manifest(saved):
    (saved / "manifest.json").unlink()
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: missing"):
        load_index(str(saved))


def test_manifest_not_json(saved):
    (saved / "manifest.json").write_text('{"artifact": "index", ')
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: not valid JSON"):
        load_index(str(saved))
    (saved / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ArtifactCorrupt, match="expected a JSON object"):
        load_index(str(saved))


def test_wrong_format_version(saved):
    mpath = saved / "manifest.json"
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), "format_version": 99}))
    with pytest.raises(FormatVersionError, match=r"manifest\.json: format_version 99 .*reads \[1, 2\]"):
        load_index(str(saved))


def test_not_an_index_artifact(built, tmp_path):
    built("pq", "ip").codebooks.save(str(tmp_path / "cb"))
    with pytest.raises(ArtifactCorrupt, match="'codebooks' artifact, expected 'index'"):
        load_index(str(tmp_path / "cb"))


def test_truncated_codes(saved):
    data = (saved / "codes.npy").read_bytes()
    (saved / "codes.npy").write_bytes(data[: len(data) // 2])
    for verify in (True, False):  # the size check runs even without checksums
        with pytest.raises(ArtifactCorrupt, match=r"codes\.npy: size .* \(truncated\?\)"):
            load_index(str(saved), verify=verify)


def test_flipped_byte_fails_the_checksum(saved):
    data = bytearray((saved / "item_norms.npy").read_bytes())
    data[-5] ^= 0x10
    (saved / "item_norms.npy").write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"item_norms\.npy: sha256 .* does not match"):
        load_index(str(saved))
    load_index(str(saved), verify=False)  # checksums are what catches a same-size corruption


def test_missing_file_listed_in_manifest(saved):
    (saved / "item_zero.npy").unlink()
    with pytest.raises(ArtifactCorrupt, match=r"item_zero\.npy: missing \(listed in the manifest\)"):
        load_index(str(saved))


@pytest.mark.parametrize("name", ["codes.npy", "item_norms.npy", "item_zero.npy", "item_ids.txt", "codebooks.npz"])
def test_required_file_missing_from_the_manifest(saved, name):
    rewrite(saved, name, None)
    with pytest.raises(ArtifactCorrupt, match=name.replace(".", r"\.")):
        load_index(str(saved))


def test_norm_explicit_index_without_item_scale(saved):
    rewrite(saved, "item_scale.npy", None)
    with pytest.raises(ArtifactCorrupt, match=r"item_scale\.npy: missing \(norm-explicit"):
        load_index(str(saved))


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        ("codes.npy", lambda: np.zeros((1999, 8), np.uint8), r"codes\.npy: shape \(1999, 8\).*expected \(2000, 8\)"),
        ("codes.npy", lambda: np.zeros((2000, 8), np.int64), r"codes\.npy: .*dtype int64, expected .* uint8"),
        (
            "item_norms.npy",
            lambda: np.ones(2000, np.float64),
            r"item_norms\.npy: .*float64, expected \(2000,\) float32",
        ),
        ("item_zero.npy", lambda: np.zeros(2001, bool), r"item_zero\.npy: shape \(2001,\)"),
        ("item_scale.npy", lambda: np.ones((2000, 1), np.float32), r"item_scale\.npy: shape \(2000, 1\)"),
        ("pair_tables.npy", lambda: np.zeros((8, 64, 63), np.float32), r"pair_tables\.npy: shape \(8, 64, 63\)"),
        ("user_vectors.npy", lambda: np.zeros((100, 31), np.float32), r"user_vectors\.npy: shape \(100, 31\)"),
        ("user_vectors.npy", lambda: np.zeros((100, 32), np.int32), r"user_vectors\.npy: dtype int32"),
        ("item_vectors.npy", lambda: np.zeros((2000, 16), np.float32), r"item_vectors\.npy: shape \(2000, 16\)"),
    ],
)
def test_wrong_array_with_consistent_checksum(saved, tmp_path, name, make, match):
    rewrite(saved, name, npy_bytes(make(), tmp_path))
    with pytest.raises(ArtifactCorrupt, match=match):
        load_index(str(saved))


def test_unreadable_npy_with_consistent_checksum(saved):
    rewrite(saved, "item_norms.npy", b"not an npy file at all")
    with pytest.raises(ArtifactCorrupt, match=r"item_norms\.npy: unreadable"):
        load_index(str(saved))


def test_ids_count_mismatch(saved):
    text = (saved / "item_ids.txt").read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[-1]  # the last row's id (i1999 when flat)
    rewrite(saved, "item_ids.txt", text[: text.rindex(last)].encode())
    with pytest.raises(ArtifactCorrupt, match=r"item_ids\.txt: 1999 ids, manifest says n_items=2000"):
        load_index(str(saved))


def test_code_out_of_range_for_nbits(tmp_path):
    path = tmp_path / "idx"
    shutil.copytree(FIXTURE, path)
    codes = np.load(path / "codes.npy")
    codes[7, 1] = 16  # nbits=4: ksub=16
    rewrite(path, "codes.npy", npy_bytes(codes, tmp_path))
    with pytest.raises(ArtifactCorrupt, match=r"codes\.npy: a code is >= ksub \(16\)"):
        load_index(str(path))


def test_codebooks_not_matching_the_manifest(saved):
    mpath = saved / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["method"]["M"] = 4
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match=r"codebooks\.npz: does not match the manifest"):
        load_index(str(saved))


# ---- publishing ---------------------------------------------------------------------------------


def test_save_refuses_an_existing_path(built, saved):
    before = snapshot(saved)
    with pytest.raises(ArtifactError, match="already exists"):
        save_index(built("rq", "l2"), str(saved))
    assert snapshot(saved) == before
    assert leftovers(saved.parent, saved.name) == []
    save_index(built("rq", "l2"), str(saved), overwrite=True)
    assert load_index(str(saved)).codebooks.kind == "rq"
    assert leftovers(saved.parent, saved.name) == []


@pytest.mark.parametrize("existing", [False, True])
def test_failure_during_save_leaves_nothing_behind(built, tmp_path, monkeypatch, existing):
    path = tmp_path / "idx"
    before = None
    if existing:
        save_index(built("pq", "ip"), str(path))
        before = snapshot(path)
    real_save = np.save
    calls = []

    def flaky_save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        save_index(built("rq", "l2"), str(path), overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 3
    assert leftovers(tmp_path, "idx") == []
    if existing:
        assert snapshot(path) == before
        load_index(str(path))
    else:
        assert not path.exists()


def test_failed_publish_keeps_the_old_artifact(built, tmp_path, monkeypatch):
    path = tmp_path / "idx"
    save_index(built("pq", "ip"), str(path))
    before = snapshot(path)
    real_rename = os.rename

    def rename(src, dst):
        if os.path.basename(str(src)).startswith(".idx.tmp-"):
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        save_index(built("rq", "l2"), str(path), overwrite=True)
    monkeypatch.undo()
    assert path.exists() and snapshot(path) == before


def test_published_directory_honours_the_umask(built, tmp_path):
    old = os.umask(0o022)
    try:
        save_index(built("pq", "ip"), str(tmp_path / "idx"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o755


# ---- the checked-in v1 fixture ------------------------------------------------------------------


def test_v1_fixture_still_loads_and_answers():
    assert sum(p.stat().st_size for p in FIXTURE.iterdir()) < 50_000
    index = load_index(str(FIXTURE))
    m = index.manifest
    assert m["format_version"] == 1 and m["index_version"] == "20261123T010807Z-5872ebcedf"
    assert (m["n_items"], m["d"], m["n_users"]) == (64, 8, 8)
    assert m["method"] == {
        "kind": "pq",
        "metric": "ip",
        "d": 8,
        "M": 2,
        "nbits": 4,
        "ksub": 16,
        "beam_size": 1,
        "norm_explicit": True,
        "code_size": 2,
    }
    assert len(index) == 64 and index.codes[:4].tolist() == [[9, 7], [15, 14], [6, 4], [10, 15]]
    assert index.zero_items.nonzero()[0].tolist() == [5, 40]

    q = np.array([1, -1, 0.5, 0, 2, -0.5, 1, 0], np.float32)
    r = index.search(q, 5)[0]
    assert r.ids == ["item46", "item22", "item12", "item8", "item36"]
    np.testing.assert_allclose(r.scores, [6.0724, 5.80541, 4.91425, 4.63846, 4.32985], atol=1e-4)
    r = index.recommend(["user3"], 5)[0]
    assert r.ids == ["item10", "item15", "item54", "item34", "item25"]
    np.testing.assert_allclose(r.scores, [6.67704, 5.97334, 5.72873, 5.19222, 4.87115], atol=1e-4)
    r = index.similar(["item0"], 5)[0]
    assert r.ids == ["item18", "item17", "item10", "item54", "item25"]  # item10/item54 tie: lower row first
    np.testing.assert_allclose(r.scores, [0.76727, 0.74417, 0.6357, 0.6357, 0.50226], atol=1e-4)
    assert index.similar(["item5"], 5)[0].ids == []  # a zero item


def test_v1_fixture_rebuilds_identically(tmp_path):
    """Re-encoding the fixture's items with its own codebooks reproduces its codes (encode is stable)."""
    index = load_index(str(FIXTURE))
    rng = np.random.default_rng(1234)
    xb = rng.standard_normal((64, 8)).astype(np.float32)
    xb[[5, 40]] = 0
    from vqrec.index import Embeddings

    again = build_index(index.codebooks, Embeddings(ids=index.item_ids, vectors=xb), show_progress=False)
    np.testing.assert_array_equal(again.codes, index.codes)
    np.testing.assert_allclose(again.recon_norms, index.recon_norms, rtol=1e-6)
    np.testing.assert_allclose(again.item_scale, index.item_scale, rtol=1e-6)
