"""Hot reload / rollback (service/reload.py behind service/routes/admin.py) over a versioned store; the probes."""

from __future__ import annotations

import json
import os
import pathlib
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import pq_index_factory
from vqrec.index import CompressedIndex, load_index, save_index
from vqrec.index.probes import run_probes
from vqrec.index.store import IndexStore
from vqrec.service.main import create_app
from vqrec.service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

D = 8
WAIT = 10.0  # bound on every wait: a broken swap fails the test instead of hanging it

pytestmark = pytest.mark.usefixtures("ticking_clock")


@pytest.fixture(scope="module")
def make_index() -> Callable[[int], CompressedIndex]:
    """``make_index(n)``: a PQ index over the first ``n`` items, with users (distinct n, distinct content)."""
    return pq_index_factory(seed=3, d=D, n_users=20, zero_rows=(7,))  # type: ignore[return-value]


class Env:
    def __init__(self, root: str, store: IndexStore, versions: list[str], client: TestClient) -> None:
        self.root, self.store, self.versions, self.client = root, store, versions, client

    def recommend(self) -> dict[str, Any]:
        r = self.client.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def metric(self, outcome: str) -> float:
        text = self.client.get("/metrics").text
        m = re.search(rf'vqrec_reloads_total\{{index="movies",outcome="{outcome}"\}} ([0-9.]+)', text)
        assert m is not None, text
        return float(m.group(1))


@pytest.fixture
def env(tmp_path: Any, make_index: Callable[[int], CompressedIndex]) -> Iterator[Env]:
    """movies: v0 (100 items, active), v1 (150), v2 (200) published; no keys."""
    root = str(tmp_path / "root")
    store = IndexStore(root)
    versions = [store.publish(make_index(n), "movies") for n in (100, 150, 200)]
    store.activate("movies", versions[0])
    with TestClient(create_app(Settings(index_root=root))) as c:
        yield Env(root, store, versions, c)


def _version_dir(env: Env, v: str) -> pathlib.Path:
    return pathlib.Path(env.store.version_dir("movies", v))


# ---- probes ---------------------------------------------------------------------------------------
def test_build_stores_probes_that_replay_after_load(make_index, tmp_path):
    idx = make_index(100)
    probes = idx.manifest["probes"]
    assert probes["k"] == 10 and len(probes["similar"]) == 5 and len(probes["recommend"]) == 5
    assert all(p["item_id"] != "i7" for p in probes["similar"])  # zero item skipped
    save_index(idx, str(tmp_path / "a"))
    back = load_index(str(tmp_path / "a"), mmap=False)
    assert back.manifest["probes"] == json.loads(json.dumps(probes))
    assert run_probes(back) == {"mode": "probes", "probes": 10, "passed": 10, "failures": []}
    del back.manifest["probes"]  # an artifact built before probes: sanity check only
    rep = run_probes(back)
    assert rep["mode"] == "sanity" and rep["probes"] == 3 and rep["passed"] == 3


# ---- reload ---------------------------------------------------------------------------------------
def test_reload_to_another_version_swaps_and_flips_alias(env):
    v0, v1, _ = env.versions
    assert env.recommend()["index_version"] == v0
    r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["previous_version"] == v0 and body["index_version"] == v1 == body["store_version"]
    assert body["alias_changed"] is True
    assert body["self_test"] == {"mode": "probes", "probes": 10, "passed": 10}
    assert env.recommend()["index_version"] == v1
    assert env.store.active("movies") == v1 and env.store.previous("movies") == v0
    assert env.client.get("/readyz").json()["indexes"] == {"movies": v1}
    admin = env.client.get("/v1/admin/indexes").json()["indexes"][0]
    assert admin["index_version"] == v1 and admin["path"] == str(_version_dir(env, v1))
    # no body: re-reads the alias (unchanged) and reloads the same version
    r = env.client.post("/v1/admin/indexes/movies/reload")
    assert r.status_code == 200 and r.json()["index_version"] == v1 and r.json()["alias_changed"] is False
    assert env.metric("success") == 2 and env.metric("failure") == 0


def test_reload_missing_version_is_422_and_old_keeps_serving(env, assert_error):
    v0 = env.versions[0]
    before = env.recommend()
    alias = pathlib.Path(env.store.alias_path("movies")).read_bytes()
    r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": "20990101T000000Z-nope"})
    err = assert_error(r, 422, "reload_failed", ("no version", v0))
    assert err["details"]["index_version"] == v0
    after = env.recommend()
    assert after["index_version"] == v0 and after["results"] == before["results"]
    assert pathlib.Path(env.store.alias_path("movies")).read_bytes() == alias
    assert_error(env.client.post("/v1/admin/indexes/movies/reload", json={"version": "../x"}), 422, "reload_failed")
    assert env.metric("failure") == 2 and env.metric("success") == 0


def test_reload_corrupt_candidate_is_422_naming_checksum(env, assert_error):
    v0, v1, _ = env.versions
    codes = _version_dir(env, v1) / "codes.npy"
    raw = bytearray(codes.read_bytes())
    raw[-1] ^= 0xFF
    codes.write_bytes(bytes(raw))
    alias = pathlib.Path(env.store.alias_path("movies")).read_bytes()
    r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
    assert_error(r, 422, "reload_failed", ("codes.npy", "sha256"))
    assert env.recommend()["index_version"] == v0
    assert pathlib.Path(env.store.alias_path("movies")).read_bytes() == alias


def test_reload_probe_mismatch_is_422_self_test_failed(env, make_index, assert_error):
    v0 = env.versions[0]
    bad = make_index(120)
    p = bad.manifest["probes"]["recommend"][0]
    p["ids"] = list(reversed(p["ids"]))
    p["scores"] = list(reversed(p["scores"]))
    vbad = env.store.publish(bad, "movies")
    r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": vbad})
    err = assert_error(r, 422, "reload_failed", ("self-test failed", "9/10", "'u0'"))
    assert err["details"] == {"index": "movies", "index_version": v0, "candidate_version": vbad}
    assert env.recommend()["index_version"] == v0 and env.store.active("movies") == v0


def hold(monkeypatch: pytest.MonkeyPatch, obj: Any, attr: str) -> tuple[threading.Event, threading.Event]:
    """Make ``obj.attr`` wait until released: returns (entered, release) events."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(obj, attr)

    def held(*a: Any, **kw: Any) -> Any:
        entered.set()
        assert release.wait(WAIT)
        return real(*a, **kw)

    monkeypatch.setattr(obj, attr, held)
    return entered, release


def test_concurrent_reload_is_409(env, monkeypatch, assert_error):
    v0, v1, _ = env.versions
    import vqrec.service.reload as reload

    entered, release = hold(monkeypatch, reload, "load_index")
    out: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: out.setdefault("r", env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1}))
    )
    t.start()
    try:
        assert entered.wait(WAIT)
        r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
        assert_error(r, 409, "reload_in_progress", ("'movies'",))
        assert_error(env.client.post("/v1/admin/indexes/movies/rollback"), 409, "reload_in_progress")
        assert env.recommend()["index_version"] == v0  # queries keep being answered during the load
    finally:
        release.set()
        t.join(WAIT)
    assert not t.is_alive() and out["r"].status_code == 200 and out["r"].json()["index_version"] == v1


def test_in_flight_request_finishes_on_its_version(env, monkeypatch, assert_error):
    v0, v1, _ = env.versions
    # a held query must run in the thread pool (one answered on the event loop would hold the loop: no reload
    # could start until it ended, so it cannot be overtaken by one at all)
    from vqrec.service.routes import query

    monkeypatch.setattr(query, "INLINE_MAX_SCAN", -1)
    old = env.client.app.state.registry.indexes["movies"]
    entered, release = hold(monkeypatch, old, "recommend")  # this object only: the candidate is a new one
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", env.recommend()))
    t.start()
    try:
        assert entered.wait(WAIT)
        r = env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
        assert r.status_code == 200 and r.json()["index_version"] == v1
        assert env.recommend()["index_version"] == v1  # new requests: the new version
    finally:
        release.set()
        t.join(WAIT)
    assert not t.is_alive() and out["r"]["index_version"] == v0


# ---- rollback -------------------------------------------------------------------------------------
def test_rollback_flips_back_and_serves_previous(env, assert_error):
    v0, v1, _ = env.versions
    first = env.recommend()
    assert_error(env.client.post("/v1/admin/indexes/movies/rollback"), 409, "rollback_unavailable", ("previous",))
    assert env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1}).status_code == 200
    r = env.client.post("/v1/admin/indexes/movies/rollback")
    assert r.status_code == 200, r.text
    assert r.json()["previous_version"] == v1 and r.json()["index_version"] == v0
    assert env.store.active("movies") == v0 and env.store.previous("movies") == v1
    again = env.recommend()
    assert again["index_version"] == v0 and again["results"] == first["results"]


def test_rollback_to_corrupt_previous_keeps_alias(env, assert_error):
    v0, v1, _ = env.versions
    assert env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1}).status_code == 200
    (_version_dir(env, v0) / "item_norms.npy").write_bytes(b"garbage")
    alias = pathlib.Path(env.store.alias_path("movies")).read_bytes()
    assert_error(env.client.post("/v1/admin/indexes/movies/rollback"), 422, "reload_failed", ("item_norms.npy",))
    assert pathlib.Path(env.store.alias_path("movies")).read_bytes() == alias
    assert env.recommend()["index_version"] == v1


def test_unknown_and_flat_indexes(tmp_path, make_index, assert_error):
    root = tmp_path / "flat"
    m = save_index(make_index(100), str(root / "demo"))
    with TestClient(create_app(Settings(index_root=str(root)))) as c:
        assert_error(c.post("/v1/admin/indexes/nope/reload"), 404, "unknown_index")
        r = c.post("/v1/admin/indexes/demo/reload")
        assert r.status_code == 200 and r.json()["index_version"] == m["index_version"]
        assert r.json()["store_version"] is None
        assert_error(c.post("/v1/admin/indexes/demo/rollback"), 409, "rollback_unavailable", ("flat",))
        assert_error(c.post("/v1/admin/indexes/demo/reload", json={"version": "x"}), 422, "reload_failed")
        assert_error(c.post("/v1/admin/indexes/demo/reload", json={"nope": 1}), 422, "validation_error")


def test_reload_recovers_a_failed_index_and_readyz(tmp_path, make_index):
    root = str(tmp_path / "root")
    store = IndexStore(root)
    v0 = store.publish(make_index(100), "movies")
    store.activate("movies", v0)
    good = (pathlib.Path(store.version_dir("movies", v0)) / "codes.npy").read_bytes()
    (pathlib.Path(store.version_dir("movies", v0)) / "codes.npy").write_bytes(good[:-3])
    with TestClient(create_app(Settings(index_root=root))) as c:
        assert c.get("/readyz").status_code == 503
        assert c.post("/v1/admin/indexes/movies/reload").status_code == 422
        (pathlib.Path(store.version_dir("movies", v0)) / "codes.npy").write_bytes(good)
        r = c.post("/v1/admin/indexes/movies/reload")
        assert r.status_code == 200 and r.json()["previous_version"] is None
        assert c.get("/readyz").status_code == 200


def test_reload_auth(tmp_path, make_index, assert_error):
    root = str(tmp_path / "root")
    store = IndexStore(root)
    store.activate("movies", store.publish(make_index(100), "movies"))
    settings = Settings(index_root=root, api_keys=["rk"], admin_keys=["ak"])
    with TestClient(create_app(settings)) as c:
        url = "/v1/admin/indexes/movies/reload"
        assert_error(c.post(url), 401, "unauthorized")
        assert_error(c.post(url, headers={"X-API-Key": "rk"}), 403, "forbidden")
        assert_error(c.post("/v1/admin/indexes/movies/rollback", headers={"X-API-Key": "rk"}), 403, "forbidden")
        assert c.post(url, headers={"Authorization": "Bearer ak"}).status_code == 200


def test_metrics_count_outcomes(env):
    v1 = env.versions[1]
    assert env.client.post("/v1/admin/indexes/movies/reload", json={"version": "missing"}).status_code == 422
    assert env.client.post("/v1/admin/indexes/movies/reload", json={"version": v1}).status_code == 200
    assert env.client.post("/v1/admin/indexes/movies/rollback").status_code == 200
    assert env.metric("success") == 2 and env.metric("failure") == 1
    text = env.client.get("/metrics").text
    assert 'vqrec_reload_failures_total{index="movies"} 1.0' in text
    assert os.path.isdir(env.root)


# ---- an unreadable ACTIVE alias: only its name is affected -----------------------------------------
@pytest.mark.parametrize(
    "garbage", [b"\xff\xfe", b"[1, 2]", b'{"version": "../../etc"}'], ids=["non-utf8", "json-list", "bad-version"]
)
def test_unreadable_alias_fails_only_its_name_and_is_repairable(tmp_path, make_index, assert_error, garbage):
    """At startup the other names serve and the bad one is a load failure (/readyz, 503); reload and rollback
    of it are 422 with the usual error shape and leave the alias as it is; `vqrec activate` repairs it."""
    root = str(tmp_path / "root")
    store = IndexStore(root)
    v0 = store.publish(make_index(100), "movies")
    store.activate("movies", v0)
    vb1 = store.publish(make_index(150), "bad")
    store.activate("bad", vb1)
    vb2 = store.publish(make_index(200), "bad")
    store.activate("bad", vb2)
    alias = pathlib.Path(store.alias_path("bad"))
    alias.write_bytes(garbage)
    with TestClient(create_app(Settings(index_root=root))) as c:
        err = assert_error(c.get("/readyz"), 503, "not_ready", ("'bad'", str(alias)))
        assert err["details"]["loaded"] == ["movies"] and list(err["details"]["failed"]) == ["bad"]
        r = c.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5})
        assert r.status_code == 200 and r.json()["index_version"] == v0
        assert_error(c.post("/v1/indexes/bad/recommend", json={"user_id": "u0", "k": 5}), 503, "index_not_loaded")
        assert_error(c.post("/v1/admin/indexes/bad/reload"), 422, "reload_failed", (str(alias), "vqrec activate bad"))
        assert_error(c.post("/v1/admin/indexes/bad/rollback"), 422, "reload_failed", (str(alias),))
        assert alias.read_bytes() == garbage
        assert c.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5}).status_code == 200
        # the documented repair (`vqrec activate bad VERSION`), then a reload: served
        repaired = store.activate("bad", vb1)
        assert (repaired["version"], repaired["previous"]) == (vb1, None)
        r = c.post("/v1/admin/indexes/bad/reload")
        assert r.status_code == 200, r.text
        assert r.json()["index_version"] == vb1
        assert c.get("/readyz").status_code == 200
