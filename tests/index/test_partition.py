"""Partitioned indexes: rows stored per list, queries probing the nprobe best lists.

Oracles: with every list probed, a partitioned index answers exactly as the same codes scanned flat (ids and
scores, every metric, every query kind); with fewer lists, recall against exact search rises with nprobe.
"""

from __future__ import annotations

import hashlib
import json
import os

import faiss
import numpy as np
import pytest

from tests.conftest import as_embeddings, recsys_arrays
from vqrec.index import (
    ArtifactCorrupt,
    ConfigError,
    Embeddings,
    InputError,
    NonFiniteError,
    build_index,
    load_index,
    save_index,
)
from vqrec.index.artifact_io import write_manifest
from vqrec.index.partition import auto_nlist
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

NLIST = 12


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    xb, xq, zero = recsys_arrays(n=3000, d=16, nq=40)
    return as_embeddings(xb), as_embeddings(xq[:30], "u"), xq, zero


def _pair(data, method: str, metric: str, nbits: int, **kw):  # type: ignore[no-untyped-def]
    items, users, _, _ = data
    cb = train(items, TrainConfig(method=method, metric=metric, M=8, nbits=nbits, niter=8, eval_queries=10,
                                  beam_size=2), show_progress=False)  # fmt: skip
    flat = build_index(cb, items, users=users, nlist=0, show_progress=False, **kw)
    part = build_index(cb, items, users=users, nlist=NLIST, nprobe=NLIST, show_progress=False, **kw)
    return flat, part


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    for ra, rb in zip(a, b, strict=True):
        assert ra.ids == rb.ids
        assert np.allclose(ra.scores, rb.scores, rtol=1e-5, atol=1e-6)


CASES = [("pq", "ip", 8), ("pq", "ip", 4), ("opq", "cosine", 4), ("pq", "l2", 4), ("rq", "ip", 4), ("rq", "l2", 6)]


@pytest.mark.parametrize(("method", "metric", "nbits"), CASES)
def test_every_list_probed_answers_as_flat(data, method: str, metric: str, nbits: int) -> None:  # type: ignore[no-untyped-def]
    flat, part = _pair(data, method, metric, nbits, item_vectors="float32", user_storage="codes")
    assert part.partition is not None and part.nlist == NLIST and flat.partition is None
    assert part.scan_kind == ("fastscan4" if nbits == 4 else "lists")
    _, users, xq, zero = data
    some = [flat.item_ids[i] for i in (0, 5, 17, int(zero[0]))]
    excl = [["i1", "i2", "i3"]] * 4
    _same(flat.search(xq, 10), part.search(xq, 10))
    _same(flat.search(xq, 10, score="l2"), part.search(xq, 10, score="l2"))
    _same(flat.similar(some, 7, exclude=excl), part.similar(some, 7, exclude=excl))
    _same(flat.recommend(users.ids[:6], 10), part.recommend(users.ids[:6], 10))
    _same(flat.search(xq[:4], 5, rerank=50), part.search(xq[:4], 5, rerank=50))
    _same(flat.similar_to_vector(xq[:3], 9), part.similar_to_vector(xq[:3], 9))
    # every per-item array follows the rows: an item keeps its norms, zero flag and vector
    for iid in ("i0", "i999", f"i{int(zero[1])}"):
        fi, pi = flat.item_info(iid), part.item_info(iid)
        assert (fi["codes"], fi["norm"], fi["zero_vector"]) == (pi["codes"], pi["norm"], pi["zero_vector"])
        assert np.array_equal(flat.item_vectors[flat.row_of(iid)], part.item_vectors[part.row_of(iid)])


@pytest.mark.parametrize(("method", "metric", "nbits"), [("pq", "ip", 4), ("pq", "ip", 8), ("pq", "l2", 8)])
def test_recall_rises_with_nprobe_to_the_flat_recall(data, method: str, metric: str, nbits: int) -> None:  # type: ignore[no-untyped-def]
    items, _, xq, _ = data
    flat, part = _pair(data, method, metric, nbits)
    exact = faiss.IndexFlatIP(16) if metric == "ip" else faiss.IndexFlatL2(16)
    exact.add(items.vectors)
    _, gt = exact.search(xq, 10)
    truth = [{f"i{j}" for j in row} for row in gt]

    def recall(res) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([len(set(r.ids) & t) / 10 for r, t in zip(res, truth, strict=True)]))

    curve = [recall(part.search(xq, 10, nprobe=p)) for p in (1, 3, 6, NLIST)]
    assert curve == sorted(curve) and curve[0] < curve[-1]
    assert curve[-1] == pytest.approx(recall(flat.search(xq, 10)))
    assert curve[1] >= 0.5 * curve[-1]  # a quarter of the lists already finds most of it


@pytest.mark.parametrize(("method", "metric", "nbits"), CASES)
def test_one_query_latency_path_equals_the_batch_path(data, method: str, metric: str, nbits: int) -> None:  # type: ignore[no-untyped-def]
    """One float32 query row takes search's latency path (ids written by the kernel); the same query in a batch
    takes the general path: same ids, scores and rows, at every nprobe, with and without a re-rank."""
    _, part = _pair(data, method, metric, nbits, item_vectors="float32")
    xq = data[2][:12]
    for nprobe in (1, 3, NLIST):
        for rerank in (0, 25):
            batch = part.search(xq, 10, nprobe=nprobe, rerank=rerank)
            for q in range(len(xq)):
                one = part.search(xq[q : q + 1], 10, nprobe=nprobe, rerank=rerank)[0]
                assert (one.ids, one.rows) == (batch[q].ids, batch[q].rows), (nprobe, rerank, q)
                assert one.ids == [part.item_ids[r] for r in one.rows]
                np.testing.assert_allclose(one.scores, batch[q].scores, rtol=1e-6, atol=1e-6)


def test_latency_path_ids_and_fallbacks(data) -> None:  # type: ignore[no-untyped-def]
    """Ids of any length and script come back whole from the kernel; inputs the latency path does not take (1-D,
    float64, numpy ints, bad values) get the general path's answer or its error."""
    items, _, xq, _ = data
    ids = [("é" * (j % 5)) + f"-漢字-{j}" + ("x" * (j % 97)) for j in range(len(items.ids))]
    named = Embeddings(ids=ids, vectors=items.vectors, source="t")
    cb = train(named, TrainConfig(method="pq", metric="ip", M=8, nbits=4, niter=8, eval_queries=10),
               show_progress=False)  # fmt: skip
    part = build_index(cb, named, nlist=NLIST, nprobe=4, show_progress=False)
    want = part.search(xq[:20], 1000, nprobe=NLIST)  # k = 1000: the kernel's id buffer at its largest
    for q in range(20):
        got = part.search(xq[q : q + 1], 1000, nprobe=NLIST)[0]
        assert got.ids == want[q].ids == [part.item_ids[r] for r in got.rows] and len(got.ids) == 1000
    # an answer whose ids do not fit the kernel's buffer (one id of 300 kB): taken from the id list instead
    top = ids.index(part.search(xq[:1], 1)[0].ids[0])  # the item the query finds first keeps its vector
    long_ids = [("L" * 300_000 if j == top else s) for j, s in enumerate(ids)]
    big = build_index(cb, Embeddings(ids=long_ids, vectors=items.vectors, source="t"), nlist=NLIST, nprobe=NLIST,
                      show_progress=False)  # fmt: skip
    got = big.search(xq[:1], 1000)[0]
    assert "L" * 300_000 in got.ids and got.ids == big.search(xq[:2], 1000)[0].ids
    one = part.search(xq[:1], 10)[0]
    for other in (xq[0], xq[:1].astype(np.float64), xq[:1].tolist()):
        assert part.search(other, 10)[0].ids == one.ids
    assert part.search(xq[:1], np.int64(10))[0].ids == one.ids
    assert part.search(xq[:1], 10, nprobe=np.int32(4))[0].ids == one.ids
    bad = xq[:1].copy()
    bad[0, 2] = np.inf
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        part.search(bad, 10)
    with pytest.raises(NonFiniteError, match="overflows float32"):
        part.search(np.full((1, 16), 3e19, np.float32), 10)
    with pytest.raises(InputError, match="k must be between 1 and 1000"):
        part.search(xq[:1], 0)
    with pytest.raises(InputError, match="rerank needs item vectors"):
        part.search(xq[:1], 10, rerank=5)
    with pytest.raises(InputError, match="nprobe must be an integer >= 1"):
        part.search(xq[:1], 10, nprobe=0)


def test_save_load_keeps_the_partition(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, part = _pair(data, "pq", "ip", 4)
    path = str(tmp_path / "p")
    manifest = save_index(part, path)
    assert manifest["partition"]["nlist"] == NLIST and manifest["partition"]["nprobe"] == NLIST
    back = load_index(path)
    assert back.nlist == NLIST and back.nprobe == NLIST
    assert np.array_equal(back.partition.list_rows, part.partition.list_rows)
    xq = data[2]
    for p in (1, 4, NLIST):
        _same(part.search(xq, 10, nprobe=p), back.search(xq, 10, nprobe=p))


def _rewrite(path: str, name: str, arr: np.ndarray) -> None:
    np.save(os.path.join(path, name), arr)
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    with open(os.path.join(path, name), "rb") as f:
        raw = f.read()
    m["files"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    write_manifest(path, m)


def test_corrupt_partition_is_refused_by_name(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, part = _pair(data, "pq", "ip", 8)
    path = str(tmp_path / "p")
    save_index(part, path)
    rows = np.load(os.path.join(path, "partition_lists.npy"))
    bad = rows.copy()
    bad[-1] -= 1
    _rewrite(path, "partition_lists.npy", bad)
    with pytest.raises(ArtifactCorrupt, match=r"partition_lists\.npy: list offsets must rise from 0 to n_items"):
        load_index(path)
    _rewrite(path, "partition_lists.npy", rows)
    load_index(path)
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    m["partition"]["nprobe"] = NLIST + 1
    write_manifest(path, m)
    with pytest.raises(ArtifactCorrupt, match=r"partition\.nprobe"):
        load_index(path)
    m["partition"]["nprobe"] = 2
    m["partition"]["kind"] = "cube"
    write_manifest(path, m)
    with pytest.raises(ArtifactCorrupt, match=r"partition\.kind"):
        load_index(path)


def test_nprobe_and_nlist_errors(data) -> None:  # type: ignore[no-untyped-def]
    flat, part = _pair(data, "pq", "ip", 4)
    xq = data[2][:1]
    for bad in (0, -3, "2", True, 1.5):
        with pytest.raises(InputError, match="nprobe must be an integer >= 1"):
            part.search(xq, 10, nprobe=bad)  # type: ignore[arg-type]
    assert part.search(xq, 10, nprobe=10_000)[0].ids == part.search(xq, 10, nprobe=NLIST)[0].ids  # capped
    assert flat.search(xq, 10, nprobe=5)[0].ids == flat.search(xq, 10)[0].ids  # one list: nothing to choose
    items = data[0]
    cb = flat.codebooks
    with pytest.raises(ConfigError, match=r"nlist \(5000\) must not exceed the number of items \(3000\)"):
        build_index(cb, items, nlist=5000, show_progress=False)
    with pytest.raises(ConfigError, match="nprobe applies to a partitioned index"):
        build_index(cb, items, nlist=0, nprobe=3, show_progress=False)
    with pytest.raises(ConfigError, match=r"nprobe must be between 1 and nlist \(4\)"):
        build_index(cb, items, nlist=4, nprobe=9, show_progress=False)


def test_auto_nlist() -> None:
    assert auto_nlist(99_999) == 0
    assert auto_nlist(1_000_000) == 2000
    assert auto_nlist(100_000) == 632


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_int8_item_vectors_rerank(data, tmp_path, metric: str) -> None:  # type: ignore[no-untyped-def]
    """int8 copies (d bytes per item): the re-rank reads v * scale; partitioned (kernel re-rank) and flat (numpy
    re-rank) agree, and the order is the exact order of the dequantized vectors."""
    flat, part = _pair(data, "pq", metric, 4, item_vectors="int8")
    items, _, xq, _ = data
    assert part.item_vectors.dtype == np.int8 and part.item_vectors_scale.shape == (16,)
    deq = part.item_vectors.astype(np.float32) * part.item_vectors_scale
    assert (
        np.abs(deq - items.vectors[[int(i[1:]) for i in part.item_ids]]).max()
        <= part.item_vectors_scale.max() / 2 + 1e-6
    )
    _same(flat.search(xq, 10, rerank=80), part.search(xq, 10, rerank=80))
    _same(flat.similar(["i3", "i8"], 6, rerank=50), part.similar(["i3", "i8"], 6, rerank=50))
    path = str(tmp_path / "i8")
    save_index(part, path)
    back = load_index(path)
    assert back.item_vectors.dtype == np.int8
    _same(part.search(xq, 10, rerank=80), back.search(xq, 10, rerank=80))
    os.remove(os.path.join(path, "item_vectors_scale.npy"))
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    del m["files"]["item_vectors_scale.npy"]
    write_manifest(path, m)
    with pytest.raises(ArtifactCorrupt, match=r"item_vectors_scale\.npy: missing \(int8 item vectors\)"):
        load_index(path)


@pytest.mark.parametrize("kind", ["sphere", "euclid"])
def test_assignment_is_the_nearest_centroid(kind: str) -> None:
    """The build's assignment (int8 shortlist, exact keys on float16 centroids) puts each row in its nearest list by
    exact search (faiss, float32) but for near-ties; every kernel path and the numpy fallback agree."""
    from vqrec.index import fastscan as fs
    from vqrec.index.codebooks import normalize_rows
    from vqrec.index.partition import assign

    rng = np.random.default_rng(5)
    nlist, d = 300, 32
    centroids = (rng.standard_normal((nlist, d)) * rng.uniform(0.5, 2, (nlist, 1))).astype(np.float32)
    if kind == "sphere":
        centroids = normalize_rows(centroids)
    y = (centroids[rng.integers(0, nlist, 4000)] + 0.4 * rng.standard_normal((4000, d))).astype(np.float32)
    got = assign(y, centroids, kind)  # type: ignore[arg-type]
    exact = faiss.IndexFlatIP(d) if kind == "sphere" else faiss.IndexFlatL2(d)
    exact.add(centroids)
    _, want = exact.search(normalize_rows(y) if kind == "sphere" else y, 1)
    assert np.mean(got == want[:, 0]) >= 0.995
    pts = normalize_rows(y[:200]) if kind == "sphere" else y[:200]
    w = None if kind == "sphere" else np.full(nlist, 2, np.float32)
    b = None if kind == "sphere" else -(centroids.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    table = fs.coarse_table(centroids)
    for impl in fs.kernel_paths() or ["scalar"]:
        assert np.array_equal(fs.coarse_assign(pts, table, w, b, impl=impl, threads=2), got[:200])
    assert [int(fs.probe_ref(p, table, w, b, 1)[0]) for p in pts] == got[:200].tolist()
