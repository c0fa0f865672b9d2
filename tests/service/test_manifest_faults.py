"""A tampered manifest.json (or re-signed non-finite data) through the service: the reload of such a version is
a 422 and the old version keeps serving; an index root holding one serves the rest (the bad name is a 503);
and whatever a manifest holds, GET /v1/indexes/{name}, GET /v1/indexes, /metrics and /readyz never answer 500.

A manifest written from now on carries ``manifest_sha256`` (docs/artifacts.md); those of artifacts written
before do not, so most cases here drop it: then the schema check (index/manifest.py) is the only guard.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pathlib
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from vqrec.index import ArtifactError, CompressedIndex, Embeddings, build_index, load_index, save_index
from vqrec.index.probes import run_probes
from vqrec.index.store import IndexStore
from vqrec.service.main import create_app
from vqrec.service.settings import Settings
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

FIELD = "manifest_sha256"
ZERO_PAIR = f'"{FIELD}": "{"0" * 64}"'.encode()

pytestmark = pytest.mark.usefixtures("ticking_clock")


# ---- helpers ------------------------------------------------------------------------------------
def read_m(d: pathlib.Path) -> dict[str, Any]:
    return dict(json.loads((d / "manifest.json").read_text()))


def write_m(d: pathlib.Path, m: dict[str, Any], *, checksum: str) -> None:
    """checksum: "drop" (an artifact from before the checksum), "stale" (edited by hand), "resign" (recomputed
    as docs/artifacts.md says: sha256 of the bytes with the value written as 64 zeros)."""
    stale = m.get(FIELD, "f" * 64)  # the value written with the artifact (any value, for an old one)
    m = {k: v for k, v in m.items() if k != FIELD}
    if checksum == "drop":
        (d / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
        return
    if checksum == "stale":
        (d / "manifest.json").write_text(json.dumps({**m, FIELD: stale}, indent=2) + "\n")
        return
    raw = (json.dumps({**m, FIELD: "0" * 64}, indent=2) + "\n").encode()
    real = f'"{FIELD}": "{hashlib.sha256(raw).hexdigest()}"'.encode()
    (d / "manifest.json").write_bytes(raw.replace(ZERO_PAIR, real))


def put_npy(d: pathlib.Path, name: str, arr: np.ndarray, *, checksum: str) -> None:
    """Replace one array and re-sign its sha256 and size in the manifest."""
    buf = io.BytesIO()
    np.save(buf, arr)
    data = buf.getvalue()
    (d / name).write_bytes(data)
    m = read_m(d)
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_m(d, m, checksum=checksum)


def with_nan(d: pathlib.Path, name: str) -> np.ndarray:
    arr = np.load(d / name)
    arr[len(arr) // 2] = np.nan
    return arr


def _metric_to_l2(m: dict[str, Any]) -> None:
    m["metric"] = m["method"]["metric"] = m["similar_metric"] = "l2"


# (id, tamper(version dir), words the 422 names)
TAMPERS: list[tuple[str, Callable[[pathlib.Path], None], tuple[str, ...]]] = [
    (
        "evaluation-not-an-object",
        lambda d: write_m(d, {**read_m(d), "evaluation": "x"}, checksum="drop"),
        ("manifest.json", "evaluation: expected an object"),
    ),
    (
        "evaluation-section-not-an-object",
        lambda d: write_m(d, {**read_m(d), "evaluation": {"user_to_item": "x"}}, checksum="drop"),
        ("manifest.json", "evaluation.user_to_item"),
    ),
    (
        "bytes-not-a-number",
        lambda d: write_m(d, {**read_m(d), "bytes": {"code_bytes_per_item": "4"}}, checksum="drop"),
        ("manifest.json", "bytes.code_bytes_per_item"),
    ),
    (
        "probes-k-not-an-int",
        lambda d: write_m(d, {**read_m(d), "probes": {**read_m(d)["probes"], "k": "ten"}}, checksum="drop"),
        ("manifest.json", "probes.k"),
    ),
    (
        "metric-changed-checksum-stale",
        lambda d: (lambda m: (_metric_to_l2(m), write_m(d, m, checksum="stale")))(read_m(d)),
        ("manifest.json", "does not match its checksum"),
    ),
    (
        "lut_path-changed-checksum-stale",
        lambda d: write_m(d, {**read_m(d), "lut_path": "pairs"}, checksum="stale"),
        ("manifest.json", "checksum"),
    ),
    (
        "nan-item-vectors-re-signed",
        lambda d: put_npy(d, "item_vectors.npy", with_nan(d, "item_vectors.npy"), checksum="resign"),
        ("item_vectors.npy", "NaN"),
    ),
    (
        "nan-item-norms-re-signed",
        lambda d: put_npy(d, "item_norms.npy", with_nan(d, "item_norms.npy"), checksum="resign"),
        ("item_norms.npy", "NaN"),
    ),
    (
        "nan-user-vectors-no-checksum",
        lambda d: put_npy(d, "user_vectors.npy", with_nan(d, "user_vectors.npy"), checksum="drop"),
        ("user_vectors.npy", "NaN"),
    ),
    (
        "item-vectors-int8-re-signed",
        lambda d: put_npy(d, "item_vectors.npy", np.load(d / "item_vectors.npy").astype(np.int8), checksum="resign"),
        ("item_vectors.npy", "dtype int8"),
    ),
]


@pytest.fixture(scope="module")
def make_index() -> Callable[[int], CompressedIndex]:
    """``make_index(n)``: PQ (M=2, 4 bits, ip) over the first n of 300 items, 20 users, float32 item vectors."""
    rng = np.random.default_rng(11)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    ids = [f"i{i}" for i in range(300)]
    users = Embeddings(ids=[f"u{i}" for i in range(20)], vectors=rng.standard_normal((20, 8)).astype(np.float32))
    cfg = TrainConfig(method="pq", M=2, nbits=4, metric="ip", niter=5, eval_queries=10)
    cb = train(Embeddings(ids=ids, vectors=items, source="items"), cfg, show_progress=False)

    def make(n: int) -> CompressedIndex:
        emb = Embeddings(ids=ids[:n], vectors=items[:n], source="items")
        return build_index(cb, emb, users=users, item_vectors="float32", show_progress=False)

    return make


EVALUATION = {
    "nq": 20,
    "user_to_item": {"recall@10": 0.8, "recall@100": 1.0},
    "user_to_item_rerank": {"candidates": 100, "recall@10": 1.0},
    "item_to_item": {"metric": "cosine", "nq": 20, "recall@10": 0.7},
}


class Env:
    def __init__(self, store: IndexStore, versions: list[str], client: TestClient) -> None:
        self.store, self.versions, self.client = store, versions, client

    def vdir(self, v: str) -> pathlib.Path:
        return pathlib.Path(self.store.version_dir("movies", v))

    def no_500(self) -> None:
        for url in ("/v1/indexes/movies", "/v1/indexes", "/metrics", "/readyz", "/v1/admin/indexes"):
            r = self.client.get(url)
            assert r.status_code < 500, (url, r.status_code, r.text)


@pytest.fixture
def env(tmp_path: pathlib.Path, make_index: Callable[[int], CompressedIndex]) -> Iterator[Env]:
    """movies: v0 (100 items, active) and v1 (150) in a store; no keys; 500s answered, not raised."""
    store = IndexStore(str(tmp_path / "root"))
    versions = [store.publish(make_index(n), "movies", evaluation=EVALUATION) for n in (100, 150)]
    store.activate("movies", versions[0])
    with TestClient(create_app(Settings(index_root=store.root)), raise_server_exceptions=False) as c:
        yield Env(store, versions, c)


# ---- reload of a tampered version ---------------------------------------------------------------
@pytest.mark.parametrize(("tamper", "words"), [t[1:] for t in TAMPERS], ids=[t[0] for t in TAMPERS])
def test_reload_of_a_tampered_version_is_422_and_the_old_keeps_serving(env, assert_error, tamper, words):
    v0, v1 = env.versions
    before = env.client.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5, "rerank": 20})
    assert before.status_code == 200, before.text
    alias = pathlib.Path(env.store.alias_path("movies")).read_bytes()
    tamper(env.vdir(v1))
    r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
    err = assert_error(r, 422, "reload_failed", words)
    assert err["details"]["index_version"] == v0
    after = env.client.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5, "rerank": 20})
    assert after.status_code == 200 and after.json()["results"] == before.json()["results"]
    assert after.json()["index_version"] == v0
    detail = env.client.get("/v1/indexes/movies")
    assert detail.status_code == 200 and detail.json()["index_version"] == v0
    assert detail.json()["evaluation"] == EVALUATION
    assert pathlib.Path(env.store.alias_path("movies")).read_bytes() == alias
    env.no_500()


def test_reload_of_an_untampered_version_passes_with_rerank_probes(env):
    v1 = env.versions[1]
    r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
    assert r.status_code == 200, r.text
    st = r.json()["self_test"]
    n = sum(len(v) for k, v in read_m(env.vdir(v1))["probes"].items() if k != "k")
    assert st == {"mode": "probes", "probes": n + 1, "passed": n + 1}  # + the item_vectors check
    assert len(read_m(env.vdir(v1))["probes"]["rerank"]) == 6
    env.no_500()


# ---- startup with a tampered artifact -----------------------------------------------------------
@pytest.mark.parametrize(("tamper", "words"), [t[1:] for t in TAMPERS], ids=[t[0] for t in TAMPERS])
def test_startup_with_a_tampered_artifact_serves_the_rest(tmp_path, make_index, assert_error, tamper, words):
    root = tmp_path / "root"
    save_index(make_index(120), str(root / "good"), evaluation=EVALUATION)
    shutil.copytree(root / "good", root / "bad")
    tamper(root / "bad")
    with TestClient(create_app(Settings(index_root=str(root))), raise_server_exceptions=False) as c:
        assert_error(c.get("/v1/indexes/bad"), 503, "index_not_loaded", words)
        body = c.get("/v1/indexes").json()
        assert [x["name"] for x in body["indexes"]] == ["good"]
        assert [x["name"] for x in body["unavailable"]] == ["bad"]
        assert c.get("/v1/indexes/good").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/readyz").status_code == 503


# ---- whatever the manifest holds: no 500 --------------------------------------------------------
WEIRD: list[Any] = [None, "x", "", -1, 0, 7, 1.5, -2.5, True, False, [], {}, [1, "a"], {"a": 1}, math.nan, math.inf]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "files":  # a changed files table is refused by the size / sha256 checks
                yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:2]):
            yield from _paths(v, (*prefix, i))


def _mutate(m: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    m = json.loads(json.dumps(m))
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return m


def test_no_manifest_makes_the_index_routes_500(tmp_path, make_index):
    """Seeded mutations of every field of a manifest without a checksum (the schema its only guard): the load
    raises an ArtifactError or the index serves, and then the metadata routes and the self-test never fail."""
    root = tmp_path / "root"
    save_index(make_index(120), str(root / "demo"), evaluation=EVALUATION)
    d = root / "demo"
    original = read_m(d)
    write_m(d, original, checksum="drop")
    paths = [p for p in _paths(original) if p and p[0] not in ("artifact", "format_version")]
    rnd = random.Random(7)
    cases = [(p, rnd.choice(WEIRD), rnd.random() < 0.2) for p in paths for _ in range(2)]
    loaded = refused = 0
    with TestClient(create_app(Settings(index_root=str(root))), raise_server_exceptions=False) as c:
        for path, value, delete in cases:
            write_m(d, _mutate(original, path, value, delete), checksum="drop")
            try:
                index = load_index(str(d), mmap=False)
            except ArtifactError:
                refused += 1
            else:
                loaded += 1
                run_probes(index)  # never raises (its failures are a 422, not a 500)
            r = c.post("/v1/admin/indexes/demo/reload")
            assert r.status_code in (200, 422), (path, value, delete, r.status_code, r.text)
            for url in ("/v1/indexes/demo", "/v1/indexes", "/metrics", "/readyz"):
                got = c.get(url)
                assert got.status_code < 500, (path, value, delete, url, got.text)
        write_m(d, original, checksum="drop")
        assert c.post("/v1/admin/indexes/demo/reload").status_code == 200
    assert loaded and refused  # both sides were exercised
