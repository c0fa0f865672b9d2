"""The index manifest: validated against its schema at load (naming the field), covered by its own
checksum (``manifest_sha256``), every float array of the artifact finite, and the self-test probes
re-ranking (index/manifest.py, index/artifact.py, index/artifact_io.py, index/probes.py).

The checksum is written as in docs/artifacts.md: the sha256 of manifest.json's exact bytes with the
value of its ``manifest_sha256`` field replaced by 64 zeros. ``resign`` below is an independent
implementation of it (what a tool that rewrites a manifest and re-signs it would do), so a test can build a
tampered artifact whose every checksum is consistent and see the deeper check refuse it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vqrec.index import ArtifactCorrupt, FormatVersionError, IndexStore, load_index, save_index
from vqrec.index.probes import run_probes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "index_v1"
FIELD = "manifest_sha256"
ZEROS = "0" * 64

# ---- helpers ------------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "manifest.json").read_text()))


def checksum_of(raw: bytes) -> str:
    """The documented checksum of a manifest's bytes (the field's value zeroed)."""
    value = json.loads(raw)[FIELD]
    pair = f'"{FIELD}": "{value}"'.encode()
    assert raw.count(pair) == 1
    return hashlib.sha256(raw.replace(pair, f'"{FIELD}": "{ZEROS}"'.encode())).hexdigest()


def resign(path: Path) -> None:
    """Recompute manifest_sha256 over the manifest as it is now (no-op for a manifest without one)."""
    mpath = path / "manifest.json"
    raw = mpath.read_bytes()
    m = json.loads(raw)
    if FIELD not in m:
        return
    pair = f'"{FIELD}": "{m[FIELD]}"'.encode()
    zero_pair = f'"{FIELD}": "{ZEROS}"'.encode()
    zeroed = raw.replace(pair, zero_pair)
    mpath.write_bytes(zeroed.replace(zero_pair, f'"{FIELD}": "{hashlib.sha256(zeroed).hexdigest()}"'.encode()))


def write_manifest(path: Path, m: dict[str, Any], *, sign: bool) -> None:
    """Write ``m`` as manifest.json: re-signed (``sign``), or without the checksum field (an artifact written
    before manifests had one: then the schema is its only guard)."""
    if not sign:
        m = {k: v for k, v in m.items() if k != FIELD}
    elif FIELD in m:
        m = {**{k: v for k, v in m.items() if k != FIELD}, FIELD: ZEROS}
    (path / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    if sign:
        resign(path)


def edit(path: Path, change: Callable[[dict[str, Any]], None], *, sign: bool = False) -> None:
    m = read_manifest(path)
    change(m)
    write_manifest(path, m, sign=sign)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def put_file(path: Path, name: str, data: bytes) -> None:
    """Replace one file and re-sign everything: its sha256 and size in the manifest, and the manifest's own
    checksum (a consistently re-signed artifact: only a check of the content itself can refuse it)."""
    (path / name).write_bytes(data)
    m = read_manifest(path)
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(path, m, sign=True)


@pytest.fixture
def saved(built, tmp_path) -> Path:
    """pq/ip (norm-explicit: item_scale.npy), pair tables, float32 users and item vectors."""
    path = tmp_path / "idx"
    save_index(copy.copy(built("pq", "ip", item_vectors="float32")), str(path), evaluation=EVAL)
    return path


EVAL = {
    "nq": 20,
    "user_to_item": {"recall@10": 0.5, "recall@100": 0.9},
    "user_to_item_rerank": {"candidates": 100, "recall@10": 0.9, "recall@100": 1.0},
    "item_to_item": {"metric": "cosine", "nq": 20, "recall@10": float("nan")},  # eval writes NaN: no valid query
}


# ---- 2. the manifest checksum -------------------------------------------------------------------


def test_save_writes_the_manifest_checksum(saved):
    raw = (saved / "manifest.json").read_bytes()
    m = json.loads(raw)
    assert list(m)[-1] == FIELD and len(m[FIELD]) == 64
    assert m[FIELD] == checksum_of(raw)
    back = load_index(str(saved))
    assert back.manifest[FIELD] == m[FIELD]
    # saving a loaded index again writes a fresh checksum over the new manifest, not the old one
    again = save_index(back, str(saved.parent / "again"))
    assert again[FIELD] == checksum_of((saved.parent / "again" / "manifest.json").read_bytes())
    load_index(str(saved.parent / "again"))


def test_a_manifest_without_a_checksum_still_loads(saved):
    edit(saved, lambda m: None, sign=False)  # a format-2 artifact written before the checksum existed
    assert FIELD not in load_index(str(saved)).manifest
    assert FIELD not in load_index(str(FIXTURE)).manifest  # format 1


def _metric_to_l2(m: dict[str, Any]) -> None:
    m["metric"] = m["method"]["metric"] = "l2"
    m["similar_metric"] = "l2"


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        _metric_to_l2,  # every score changes, silently, at startup
        _set("lut_path", value="decode"),
        _set("created_at", value="2020-01-01T00:00:00+00:00"),
        _set("evaluation", "user_to_item", "recall@10", value=0.99),
        _set("trainer_config", "niter", value=99),
        _set("index_version", value="20200101T000000Z-0000000000"),
        _set("probes", "k", value=5),
    ],
    ids=["metric", "lut_path", "created_at", "evaluation", "trainer_config", "index_version", "probes"],
)
@pytest.mark.parametrize("verify", [True, False])
def test_a_field_changed_by_hand_fails_the_checksum(saved, change, verify):
    mpath = saved / "manifest.json"
    m = json.loads(mpath.read_text())
    assert FIELD in m, "save_index writes manifest_sha256"
    change(m)
    mpath.write_text(json.dumps(m, indent=2) + "\n")  # the stale checksum stays
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: does not match its checksum"):
        load_index(str(saved), verify=verify)  # cheap: verified even without the data checksums


def test_any_byte_of_the_manifest_is_covered(saved):
    mpath = saved / "manifest.json"
    raw = mpath.read_bytes()
    assert FIELD.encode() in raw
    mpath.write_bytes(raw.replace(b'"artifact": "index",', b'"artifact": "index", ', 1))  # one more space
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: does not match its checksum"):
        load_index(str(saved))
    mpath.write_bytes(raw)
    load_index(str(saved))


def test_norm_explicit_flipped_is_refused(saved):
    m = read_manifest(saved)
    assert m["method"]["norm_explicit"] is True and "item_scale.npy" in m["files"]
    m["method"]["norm_explicit"] = False  # would drop every item's norm from its ip score
    (saved / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: .*(checksum|norm_explicit)"):
        load_index(str(saved))
    write_manifest(saved, m, sign=False)  # and without the checksum: the files contradict it
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: method\.norm_explicit is false but item_scale\.npy"):
        load_index(str(saved))


@pytest.mark.parametrize("value", ["abc", 5, None, "G" * 64, "A" * 64])
def test_a_malformed_checksum_field_is_refused(saved, value):
    m = read_manifest(saved)
    m[FIELD] = value
    (saved / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: manifest_sha256"):
        load_index(str(saved))


def test_publish_keeps_the_checksum(built, tmp_path, saved):
    store = IndexStore(str(tmp_path / "store"))
    v = store.publish_dir(str(saved), "movies")  # copies the files the manifest lists, and the manifest
    copied = Path(store.version_dir("movies", v))
    assert (copied / "manifest.json").read_bytes() == (saved / "manifest.json").read_bytes()
    load_index(str(copied))
    v2 = store.publish(copy.copy(built("pq", "ip")), "shows")
    raw = (Path(store.version_dir("shows", v2)) / "manifest.json").read_bytes()
    assert json.loads(raw)[FIELD] == checksum_of(raw)
    mpath = copied / "manifest.json"
    mpath.write_text(mpath.read_text().replace('"lut_path": "pairs"', '"lut_path": "decode"'))
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: does not match its checksum"):
        load_index(str(copied), verify=False)


# ---- 1. the schema ------------------------------------------------------------------------------


def _del(*keys: str) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        d = m
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return change


def _files_entry(value: Any) -> Callable[[dict[str, Any]], None]:
    return _set("files", "codes.npy", value=value)


SCHEMA_FAULTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("evaluation-str", _set("evaluation", value="x"), r"evaluation: expected an object"),
    ("evaluation-null", _set("evaluation", value=None), r"evaluation: expected an object"),
    ("evaluation-section", _set("evaluation", "user_to_item", value="x"), r"evaluation\.user_to_item: expected"),
    ("evaluation-recall", _set("evaluation", "item_to_item", "recall@10", value="0.9"), r"evaluation\.item_to_item"),
    ("train_report", _set("train_report", value=[1]), r"train_report: expected an object"),
    ("trainer_config", _set("trainer_config", value="pq"), r"trainer_config: expected an object"),
    ("source", _set("source", value=3), r"source: expected an object"),
    ("created_at", _set("created_at", value=5), r"created_at: expected a string"),
    ("index_version-int", _set("index_version", value=5), r"index_version: expected a non-empty string"),
    ("index_version-empty", _set("index_version", value=""), r"index_version: expected a non-empty string"),
    ("index_version-missing", _del("index_version"), r"index_version: missing"),
    ("method-str", _set("method", value="pq"), r"method: expected an object"),
    ("method-missing", _del("method"), r"method: missing"),
    ("kind", _set("method", "kind", value="ivf"), r"method\.kind: 'ivf' is not one of"),
    ("method.metric", _set("method", "metric", value="dot"), r"method\.metric: 'dot' is not one of"),
    ("metric", _set("metric", value="l2"), r"metric: 'l2' does not match method\.metric 'ip'"),
    ("metric-unknown", _set("metric", value="dot"), r"metric: 'dot' is not one of"),
    ("similar_metric", _set("similar_metric", value="ip"), r"similar_metric: 'ip', expected 'cosine'"),
    ("nbits-9", _set("method", "nbits", value=9), r"method\.nbits: 9 is not in 1\.\.8"),
    ("nbits-0", _set("method", "nbits", value=0), r"method\.nbits: 0 is not in 1\.\.8"),
    ("nbits-str", _set("method", "nbits", value="6"), r"method\.nbits: expected an integer"),
    ("nbits-float", _set("method", "nbits", value=6.0), r"method\.nbits: expected an integer"),
    ("nbits-bool", _set("method", "nbits", value=True), r"method\.nbits: expected an integer"),
    ("ksub", _set("method", "ksub", value=32), r"method\.ksub: 32, expected 2\*\*nbits = 64"),
    ("M-zero", _set("method", "M", value=0), r"method\.M: 0 is not >= 1"),
    ("d-not-divisible", _set("method", "M", value=5), r"method\.d: 32 is not divisible by method\.M \(5\)"),
    ("d-top", _set("d", value=31), r"d: 31 does not match method\.d 32"),
    ("beam_size", _set("method", "beam_size", value=0), r"method\.beam_size: 0 is not >= 1"),
    ("norm_explicit-str", _set("method", "norm_explicit", value="yes"), r"method\.norm_explicit: expected true"),
    ("code_size", _set("method", "code_size", value=4), r"method\.code_size: 4, expected M = 8"),
    ("n_items-str", _set("n_items", value="2000"), r"n_items: expected an integer"),
    ("n_items-neg", _set("n_items", value=-1), r"n_items: -1 is not >= 1"),
    ("n_items-missing", _del("n_items"), r"n_items: missing"),
    ("n_users", _set("n_users", value=99), r"n_users: 99, but user_ids\.txt holds 100 ids"),
    ("n_users-str", _set("n_users", value="100"), r"n_users: expected an integer"),
    ("lut_path", _set("lut_path", value="fast"), r"lut_path: 'fast' is not one of"),
    ("bytes-str", _set("bytes", value="x"), r"bytes: expected an object"),
    ("bytes-code", _set("bytes", "code_bytes_per_item", value="8"), r"bytes\.code_bytes_per_item: expected a"),
    ("bytes-nan", _set("bytes", "index_bytes_per_item", value=float("nan")), r"bytes\.index_bytes_per_item"),
    ("bytes-inf", _set("bytes", "code_bytes_per_item", value=float("inf")), r"bytes\.code_bytes_per_item"),
    ("files-entry", _files_entry("deadbeef"), r"files\.codes\.npy: expected an object"),
    ("files-sha", _files_entry({"sha256": 5, "bytes": 10}), r"files\.codes\.npy\.sha256"),
    ("files-bytes", _files_entry({"sha256": "0" * 64, "bytes": "10"}), r"files\.codes\.npy\.bytes"),
    ("files-name", _set("files", "../codes.npy", value={"sha256": "0" * 64, "bytes": 1}), r"files: '\.\./codes"),
    ("probes-str", _set("probes", value="x"), r"probes: expected an object"),
    ("probes-k", _set("probes", "k", value="ten"), r"probes\.k: expected an integer"),
    ("probes-list", _set("probes", "similar", value={"a": 1}), r"probes\.similar: expected a list"),
    ("probes-entry", _set("probes", "recommend", value=["u0"]), r"probes\.recommend\[0\]: expected an object"),
    ("probes-ids", _set("probes", "similar", 0, "ids", value=[1, 2]), r"probes\.similar\[0\]\.ids"),
    ("semantic_ids", _set("semantic_ids", value=[1]), r"semantic_ids: expected an object"),
    ("semantic-tokenizer", _set("semantic_ids", value={"tokenizer": "x"}), r"semantic_ids\.tokenizer: expected"),
]


@pytest.mark.parametrize(("change", "match"), [f[1:] for f in SCHEMA_FAULTS], ids=[f[0] for f in SCHEMA_FAULTS])
@pytest.mark.parametrize("verify", [True, False])
def test_schema_fault_is_refused_naming_the_field(saved, change, match, verify):
    """Without a checksum (an artifact written before it) the schema is the guard: every field load_index
    and the service read is checked, and the error names manifest.json and the field."""
    edit(saved, change, sign=False)
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: .*" + match):
        load_index(str(saved), verify=verify)


@pytest.mark.parametrize(("change", "match"), [f[1:] for f in SCHEMA_FAULTS[:8]], ids=[f[0] for f in SCHEMA_FAULTS[:8]])
def test_schema_fault_re_signed_is_refused_too(saved, change, match):
    edit(saved, change, sign=True)  # the checksum matches: the schema still refuses
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: .*" + match):
        load_index(str(saved))


def test_save_refuses_to_publish_a_manifest_load_would_refuse(built, tmp_path):
    with pytest.raises(ArtifactCorrupt, match=r"manifest\.json: evaluation: expected an object"):
        save_index(copy.copy(built("pq", "ip")), str(tmp_path / "idx"), evaluation="x")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # nothing published, no temporary left


def test_format_version_true_is_not_format_1(saved):
    edit(saved, _set("format_version", value=True))  # True == 1 in Python: it passed as format 1
    with pytest.raises(FormatVersionError, match=r"manifest\.json: format_version True is not one"):
        load_index(str(saved))


@pytest.mark.parametrize(
    "change",
    [
        _del("evaluation"),
        _set("evaluation", value={}),
        _del("train_report"),
        _del("trainer_config"),
        _del("source"),
        _del("created_at"),
        _set("created_at", value=None),
        _del("probes"),
        _del("lut_path"),
        _del("similar_metric"),
        _del("metric"),
        _del("d"),
        _del("bytes"),
        _del("method", "ksub"),
        _del("method", "code_size"),
        _del("method", "beam_size"),
        _set("evaluation", "user_to_item", value=None),
        _set("extra_field_from_a_newer_build", value={"anything": [1, "x", None]}),
        _set("semantic_ids", value=None),
    ],
)
def test_optional_fields_may_be_absent(saved, change):
    edit(saved, change, sign=True)
    load_index(str(saved))


# ---- 3. non-finite arrays -----------------------------------------------------------------------


def _nan_at(arr: np.ndarray, where: tuple[int, ...] = (-1,), value: float = np.nan) -> np.ndarray:
    out = np.array(arr, copy=True)
    out[where] = value
    return out


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("item_norms.npy", np.nan),
        ("item_norms.npy", np.inf),
        ("item_scale.npy", np.nan),
        ("item_scale.npy", -np.inf),
        ("pair_tables.npy", np.nan),
        ("user_vectors.npy", np.inf),
        ("item_vectors.npy", np.nan),
    ],
)
def test_non_finite_array_re_signed_is_refused(saved, name, value):
    arr = np.load(saved / name)
    put_file(saved, name, npy_bytes(_nan_at(arr, (-1,) if arr.ndim == 1 else (-1, 0), value)))
    for verify in (True, False):
        with pytest.raises(ArtifactCorrupt, match=name.replace(".", r"\.") + r": .*(NaN|inf)"):
            load_index(str(saved), verify=verify)


def test_non_finite_centroids_re_signed_are_refused(saved):
    with np.load(saved / "codebooks.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["centroids"] = _nan_at(arrays["centroids"], (0, 0, 0))
    put_file(saved, "codebooks.npz", npz_bytes(arrays))
    with pytest.raises(ArtifactCorrupt, match=r"codebooks\.npz: centroids .*(NaN|inf)"):
        load_index(str(saved))


@pytest.mark.parametrize(
    ("method", "metric", "user_storage", "item_vectors", "name", "key"),
    [
        ("opq", "cosine", "codes", "none", "codebooks.npz", "rotation"),
        ("rq", "ip", "codes", "none", "user_scale.npy", None),
        ("rq", "l2", "float16", "float16", "user_vectors.npy", None),
        ("rq", "l2", "float16", "float16", "item_vectors.npy", None),
    ],
)
def test_non_finite_in_other_layouts(built, tmp_path, method, metric, user_storage, item_vectors, name, key):
    path = tmp_path / "idx"
    save_index(copy.copy(built(method, metric, user_storage=user_storage, item_vectors=item_vectors)), str(path))
    if key is not None:
        with np.load(path / name) as z:
            arrays = {k: z[k] for k in z.files}
        arrays[key] = _nan_at(arrays[key], (0, 0))
        put_file(path, name, npz_bytes(arrays))
    else:
        arr = np.load(path / name)
        put_file(path, name, npy_bytes(_nan_at(arr, (3,) if arr.ndim == 1 else (3, 1))))
    with pytest.raises(ArtifactCorrupt, match=name.replace(".", r"\.") + r": .*(NaN|inf)"):
        load_index(str(path))


@pytest.mark.parametrize("name", ["item_norms.npy", "item_scale.npy"])
def test_negative_norms_are_refused(saved, name):
    put_file(saved, name, npy_bytes(_nan_at(np.load(saved / name), (7,), -1.0)))
    with pytest.raises(ArtifactCorrupt, match=name.replace(".", r"\.") + r": .*negative"):
        load_index(str(saved))


@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.int32])
def test_item_vectors_of_another_dtype_are_refused(saved, dtype):
    arr = np.load(saved / "item_vectors.npy")
    put_file(saved, "item_vectors.npy", npy_bytes(arr.astype(dtype)))
    with pytest.raises(ArtifactCorrupt, match=r"item_vectors\.npy: dtype"):
        load_index(str(saved))


def test_item_vectors_must_have_the_dtype_the_manifest_records(saved):
    """int8 copies are legal, but not in place of the float32 vectors the build wrote (the missing per-dimension
    scale of a real int8 build is tested in test_partition.py)."""
    arr = np.load(saved / "item_vectors.npy")
    put_file(saved, "item_vectors.npy", npy_bytes(arr.astype(np.int8)))
    with pytest.raises(ArtifactCorrupt, match=r"item_vectors\.npy: dtype int8, the manifest says float32"):
        load_index(str(saved))


# ---- 4. the self-test probes re-rank ------------------------------------------------------------


@pytest.fixture
def with_vectors(saved) -> Any:
    return load_index(str(saved), mmap=False)


def test_probes_record_and_replay_rerank(built, with_vectors):
    probes = with_vectors.manifest["probes"]
    rr = probes["rerank"]
    assert len(rr) >= 3 and all(p["rerank"] >= probes["k"] for p in rr)
    assert {p["query"] for p in rr} >= {"similar", "recommend"}
    n = sum(len(probes[k]) for k in ("similar", "recommend", "search")) + len(rr) + 1  # + the item_vectors check
    assert run_probes(with_vectors) == {"mode": "probes", "probes": n, "passed": n, "failures": []}
    # no item vectors: no rerank probes
    assert built("pq", "ip").manifest["probes"].get("rerank", []) == []


def _nan_row(iv: np.ndarray, index: Any) -> np.ndarray:
    out = np.array(iv, copy=True)
    out[len(out) // 2] = np.nan  # one row, likely no probe's candidate
    return out


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda iv, index: _nan_row(iv, index), "item_vectors"),
        (lambda iv, index: np.full_like(iv, np.nan), "rerank"),
        (lambda iv, index: iv.astype(np.int8), "item_vectors"),
        (lambda iv, index: iv.astype(np.float64), "item_vectors"),
        (lambda iv, index: np.ascontiguousarray(iv[:, :-1]), "item_vectors"),
        (lambda iv, index: iv[:-1], "item_vectors"),
        (lambda iv, index: iv * 2, "rerank"),  # right dtype and shape, wrong content: the replay notices
        (lambda iv, index: iv[::-1].copy(), "rerank"),
    ],
    ids=["nan-row", "all-nan", "int8", "float64", "shape-d", "shape-n", "scaled", "rows-swapped"],
)
def test_bad_item_vectors_fail_the_self_test(with_vectors, make, why):
    with_vectors.item_vectors = make(with_vectors.item_vectors, with_vectors)
    rep = run_probes(with_vectors)
    assert rep["failures"], rep
    assert any(why in f for f in rep["failures"]), rep["failures"]


def test_probes_written_before_rerank_probes_still_pass(with_vectors):
    del with_vectors.manifest["probes"]["rerank"]  # an artifact built before: no rerank probes
    rep = run_probes(with_vectors)
    assert rep["mode"] == "probes" and rep["failures"] == [] and rep["passed"] == rep["probes"] > 0
    del with_vectors.manifest["probes"]  # built before probes at all: the sanity check
    rep = run_probes(with_vectors)
    assert rep["mode"] == "sanity" and rep["failures"] == []


def test_v1_fixture_still_passes_its_self_test():
    rep = run_probes(load_index(str(FIXTURE)))
    assert rep["mode"] == "sanity" and rep["failures"] == [] and rep["passed"] == 3


def test_vector_probes_rerank_without_users(built, recsys, tmp_path):
    from vqrec.index import build_index

    index = build_index(
        built("rq", "l2").codebooks, recsys.items, item_vectors="float16", show_progress=False
    )  # no users: the probes query by vector
    rr = index.manifest["probes"]["rerank"]
    assert {p["query"] for p in rr} == {"similar", "search"}
    save_index(index, str(tmp_path / "a"))
    back = load_index(str(tmp_path / "a"), mmap=False)
    assert run_probes(back)["failures"] == []
    back.item_vectors = (np.asarray(back.item_vectors, np.float32) * 3).astype(np.float16)
    assert any("rerank" in f for f in run_probes(back)["failures"])


def test_bad_probe_entries_do_not_crash_the_self_test(with_vectors):
    """run_probes never raises on what a manifest holds (the reload route would 500)."""
    with_vectors.manifest["probes"]["rerank"] = [{"query": "nope", "ids": [], "scores": []}, 5]
    with_vectors.manifest["probes"]["similar"] = [7, {"item_id": "nope-not-an-item", "ids": [], "scores": []}]
    rep = run_probes(with_vectors)
    assert len(rep["failures"]) == 4
