"""The versioned index store (index/store.py) and the service discovering its layout (service/registry.py).

Checked against what is on disk: version directories, the ACTIVE alias bytes, what the service answers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import pq_index_factory
from vqrec.index import CompressedIndex, load_index, save_index
from vqrec.index.discovery import discover
from vqrec.index.errors import ArtifactCorrupt, ArtifactNotFound, ConfigError, StoreError, VqrecError
from vqrec.index.fastscan import fastscan_available
from vqrec.index.store import IndexStore
from vqrec.service.main import create_app
from vqrec.service.registry import load_registry
from vqrec.service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

D = 8


# save_index stamps created_at to the second: every save is one (fake) minute after the last
pytestmark = pytest.mark.usefixtures("ticking_clock")


@pytest.fixture(scope="module")
def make_index() -> Callable[[int], CompressedIndex]:
    """``make_index(n)``: a fresh PQ index over the first ``n`` items (distinct n, distinct content)."""
    return pq_index_factory(seed=7, d=D, n_users=20)  # type: ignore[return-value]


@pytest.fixture
def store(tmp_path: Any) -> IndexStore:
    return IndexStore(str(tmp_path / "root"))


def _alias_bytes(store: IndexStore, name: str) -> bytes | None:
    p = store.alias_path(name)
    return pathlib.Path(p).read_bytes() if os.path.exists(p) else None


# ---- publish -----------------------------------------------------------------------------------
def test_publish_writes_immutable_version_and_leaves_alias(store, make_index):
    idx = make_index(100)
    v = store.publish(idx, "movies")
    vdir = os.path.join(store.root, "movies", "versions", v)
    assert os.path.isfile(os.path.join(vdir, "manifest.json"))
    assert load_index(vdir).version == v == idx.version
    assert idx.path == vdir
    assert store.active("movies") is None and _alias_bytes(store, "movies") is None
    assert sorted(os.listdir(os.path.join(store.root, "movies", "versions"))) == [v]  # no staging left over
    with pytest.raises(ArtifactNotFound, match="no active version"):
        store.path("movies")
    assert store.path("movies", v) == vdir


def test_publish_with_evaluation_and_listing(store, make_index):
    ev = {"user_to_item": {"recall@10": 0.9}, "item_to_item": {"metric": "cosine", "recall@10": 0.8}}
    v1 = store.publish(make_index(100), "movies", evaluation=ev)
    v2 = store.publish(make_index(120), "movies")
    os.makedirs(os.path.join(store.root, "movies", "versions", ".publish-junk"))  # hidden: skipped
    store.activate("movies", v1)
    infos = store.versions("movies")
    assert [i.version for i in infos] == [v2, v1]  # newest first
    assert infos[1].evaluation == {"user_to_item_recall@10": 0.9, "item_to_item_recall@10": 0.8}
    assert infos[1].active and not infos[0].active and infos[1].n_items == 100 and infos[0].n_items == 120
    assert infos[1].method == "pq M=2 nbits=4" and infos[0].evaluation == {}
    assert store.names() == ["movies"]
    with pytest.raises(ArtifactNotFound, match="'books'"):
        store.versions("books")


def test_publish_dir_keeps_version_and_refuses_clashes_and_corrupt(store, make_index, tmp_path, tree_digest):
    src = str(tmp_path / "built")
    m = save_index(make_index(100), src)
    v = store.publish_dir(src, "movies")
    assert v == m["index_version"]
    before = tree_digest(store.root)
    assert store.publish_dir_status(src, "movies") == (v, False)  # the same content again: already published
    assert tree_digest(store.root) == before
    other = str(tmp_path / "other")
    om = save_index(make_index(105), other)
    pathlib.Path(other, "manifest.json").write_text(json.dumps({**om, "index_version": v}))
    with pytest.raises(StoreError, match=f"already has version '{v}'.*different content"):
        store.publish_dir(other, "movies")
    assert tree_digest(store.root) == before
    bad = str(tmp_path / "bad")
    save_index(make_index(110), bad)
    codes = os.path.join(bad, "codes.npy")
    pathlib.Path(codes).write_bytes(pathlib.Path(codes).read_bytes() + b"x")
    before = tree_digest(store.root)
    with pytest.raises(ArtifactCorrupt, match="codes.npy"):
        store.publish_dir(bad, "movies")
    assert tree_digest(store.root) == before  # nothing published, no staging left
    with pytest.raises(ArtifactNotFound):
        store.publish_dir(str(tmp_path / "missing"), "movies")
    with pytest.raises(ConfigError, match="invalid index name"):
        store.publish_dir(src, "../escape")


# ---- activate / rollback -------------------------------------------------------------------------
def test_activate_and_rollback(store, make_index):
    v1 = store.publish(make_index(100), "movies")
    v2 = store.publish(make_index(110), "movies")
    a = store.activate("movies", v1)
    assert a["version"] == v1 and a["previous"] is None
    a = store.activate("movies", v2)
    assert a == json.loads(_alias_bytes(store, "movies"))
    assert (a["version"], a["previous"]) == (v2, v1)
    assert store.path("movies") == os.path.join(store.root, "movies", "versions", v2)
    infos = {i.version: i for i in store.versions("movies")}
    assert infos[v2].active and infos[v1].previous
    b = store.rollback("movies")
    assert (b["version"], b["previous"]) == (v1, v2) and store.active("movies") == v1
    assert store.activate("movies", v1) == b  # activating the active version changes nothing
    assert store.rollback("movies")["version"] == v2  # rollback toggles
    assert [n for n in os.listdir(os.path.join(store.root, "movies")) if n.startswith(".ACTIVE")] == []


def test_failed_activate_leaves_alias_byte_identical(store, make_index):
    v1 = store.publish(make_index(100), "movies")
    v2 = store.publish(make_index(110), "movies")
    store.activate("movies", v1)
    before = _alias_bytes(store, "movies")
    with pytest.raises(ArtifactNotFound, match="no version 'nope'"):
        store.activate("movies", "nope")
    with pytest.raises(ConfigError, match="invalid version"):
        store.activate("movies", "../x")
    codes = os.path.join(store.root, "movies", "versions", v2, "codes.npy")
    pathlib.Path(codes).write_bytes(pathlib.Path(codes).read_bytes()[:-10])
    with pytest.raises(StoreError, match=rf"'{v2}' does not load.*codes.npy"):
        store.activate("movies", v2)
    # a version directory renamed by hand (manifest version differs) is refused too
    os.rename(os.path.join(store.root, "movies", "versions", v2), os.path.join(store.root, "movies", "versions", "v9"))
    shutil.copytree(
        os.path.join(store.root, "movies", "versions", v1), os.path.join(store.root, "movies", "versions", "v8")
    )
    with pytest.raises(StoreError, match="does not match the directory name 'v8'"):
        store.activate("movies", "v8")
    assert _alias_bytes(store, "movies") == before


def test_rollback_errors(store, make_index):
    v1 = store.publish(make_index(100), "movies")
    with pytest.raises(StoreError, match="no alias"):
        store.rollback("movies")
    store.activate("movies", v1)
    before = _alias_bytes(store, "movies")
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("movies")
    assert _alias_bytes(store, "movies") == before


def test_corrupt_alias_is_reported_and_repairable(store, make_index):
    v1 = store.publish(make_index(100), "movies")
    os.makedirs(os.path.dirname(store.alias_path("movies")), exist_ok=True)
    pathlib.Path(store.alias_path("movies")).write_text("{not json")
    with pytest.raises(ArtifactCorrupt, match="ACTIVE: alias is not valid JSON"):
        store.active("movies")
    assert store.activate("movies", v1)["version"] == v1


def test_alias_is_always_whole_while_flipping(store, make_index):
    v1 = store.publish(make_index(100), "movies")
    v2 = store.publish(make_index(110), "movies")
    store.activate("movies", v1)
    done = threading.Event()
    errors: list[BaseException] = []

    def flip() -> None:
        try:
            for _ in range(30):
                store.rollback("movies") if store.previous("movies") else store.activate("movies", v2)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=flip)
    t.start()
    seen = set()
    reads = 0
    while not done.is_set() or reads == 0:
        with open(store.alias_path("movies"), "rb") as f:
            alias = json.loads(f.read())  # never half a file
        seen.add(alias["version"])
        assert store.active("movies") in (v1, v2)
        reads += 1
    t.join(timeout=60)
    assert not errors, errors
    assert seen <= {v1, v2} and reads > 0


# ---- prune ---------------------------------------------------------------------------------------
def test_prune_keeps_newest_and_active_and_previous(store, make_index):
    vs = [store.publish(make_index(100 + 10 * i), "movies") for i in range(5)]  # vs[0] oldest
    store.activate("movies", vs[0])
    store.activate("movies", vs[1])  # active vs[1], previous vs[0]
    deleted = store.prune("movies", 2)
    assert deleted == [vs[2]]  # newest two (vs[4], vs[3]) kept, active + previous kept
    assert sorted(os.listdir(os.path.join(store.root, "movies", "versions"))) == sorted([vs[0], vs[1], vs[3], vs[4]])
    assert store.prune("movies", 2) == []
    assert store.prune("movies", 1) == [vs[3]]
    with pytest.raises(ConfigError, match="keep"):
        store.prune("movies", 0)
    assert store.active("movies") == vs[1] and store.rollback("movies")["version"] == vs[0]


def test_discard_refuses_active(store, make_index):
    v1 = store.publish(make_index(100), "movies")
    v2 = store.publish(make_index(110), "movies")
    store.activate("movies", v1)
    with pytest.raises(StoreError, match="active or previous"):
        store.discard("movies", v1)
    store.discard("movies", v2)
    assert [i.version for i in store.versions("movies")] == [v1]


def test_errors_are_vqrec_errors():
    assert issubclass(StoreError, VqrecError)


# ---- discovery and the service -------------------------------------------------------------------
@pytest.fixture
def mixed_root(tmp_path, make_index) -> Iterator[tuple[str, dict[str, str]]]:
    """root/movies (store: v1, v2, v2 active), root/legacy (an artifact, old layout),
    root/broken (store: alias to a missing version), root/staged (store: versions, no alias)."""
    root = str(tmp_path / "mixed")
    store = IndexStore(root)
    v1 = store.publish(make_index(100), "movies")
    v2 = store.publish(make_index(110), "movies")
    store.activate("movies", v1)
    store.activate("movies", v2)
    legacy = save_index(make_index(130), os.path.join(root, "legacy"))["index_version"]
    vb = store.publish(make_index(140), "broken")
    store.activate("broken", vb)
    shutil.rmtree(os.path.join(root, "broken", "versions", vb))
    store.publish(make_index(150), "staged")
    yield root, {"v1": v1, "v2": v2, "legacy": legacy, "broken": vb}


def test_discovery_understands_both_layouts(mixed_root):
    root, v = mixed_root
    paths, problem = discover(root)
    assert problem is None and sorted(paths) == ["broken", "legacy", "movies"]
    assert paths["movies"] == os.path.join(root, "movies", "versions", v["v2"])
    assert paths["legacy"] == os.path.join(root, "legacy")
    reg = load_registry(root)
    assert sorted(reg.indexes) == ["legacy", "movies"]
    assert reg.versions == {"movies": v["v2"]} and reg.indexes["movies"].version == v["v2"]
    assert v["broken"] in reg.failed["broken"] and "does not exist" in reg.failed["broken"]
    # the store name directory itself as the root: the one index, its active version
    one = load_registry(os.path.join(root, "movies"))
    assert list(one.indexes) == ["movies"] and one.versions == {"movies": v["v2"]}
    # asked for by name
    named = load_registry(root, ["movies", "nothere"])
    assert list(named.indexes) == ["movies"] and "nothere" in named.failed


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs /proc/self/maps to see what is mapped")
@pytest.mark.parametrize("mode", ["auto", "always", "never"])
def test_registry_maps_store_versions(mixed_root, tmp_path, mode):
    """VQREC_MMAP: auto maps the store's versions (written once, read-only) so worker processes share their pages,
    and reads a flat artifact into memory (it may be rewritten in place); always / never: every index. Mapped or
    not, they answer the same."""
    src, v = mixed_root
    root = str(tmp_path / mode)  # paths of this mode's own: /proc/self/maps shows what this load mapped
    shutil.copytree(src, root)
    reg = load_registry(root, ["movies", "legacy"], mmap=mode)
    maps = pathlib.Path("/proc/self/maps").read_text()
    files = {"item_ids.txt", "item_norms.npy"} | ({"codes_fs4.npy"} if fastscan_available() else set())
    for name, path in (("movies", os.path.join(root, "movies", "versions", v["v2"])), ("legacy", f"{root}/legacy")):
        mapped = {f for f in files if os.path.join(path, f) in maps}
        want = mode == "always" or (mode == "auto" and name == "movies")
        assert mapped == (files if want else set()), (name, mapped)
        q = [[(-1.0) ** j * (j + 1) / D for j in range(D)]]
        assert reg.indexes[name].search(q, 5) == load_index(path, mmap=False).search(q, 5)
    version_files = pathlib.Path(root, "movies", "versions", v["v2"]).iterdir()
    assert all(p.stat().st_mode & 0o222 == 0 for p in version_files)  # a version's files are read-only


def test_service_answers_from_active_version(mixed_root):
    root, v = mixed_root
    with TestClient(create_app(Settings(index_root=root))) as c:
        r = c.post("/v1/indexes/movies/recommend", json={"user_id": "u1", "k": 5})
        assert r.status_code == 200, r.text
        assert r.json()["index_version"] == v["v2"]
        assert all(int(x["id"][1:]) < 110 for x in r.json()["results"])
        r = c.post("/v1/indexes/legacy/similar", json={"item_id": "i3", "k": 3})
        assert r.status_code == 200 and r.json()["index_version"] == v["legacy"]
        r = c.post("/v1/indexes/broken/recommend", json={"user_id": "u1", "k": 5})
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_not_loaded"
        assert "'broken'" in r.json()["error"]["message"]
        assert c.get("/readyz").status_code == 503
        assert c.post("/v1/indexes/staged/recommend", json={"user_id": "u1"}).status_code == 404
    IndexStore(root).rollback("movies")
    with TestClient(create_app(Settings(index_root=root))) as c:
        r = c.post("/v1/indexes/movies/recommend", json={"user_id": "u1", "k": 5})
        assert r.json()["index_version"] == v["v1"]
