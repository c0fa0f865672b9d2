"""Index names at runtime: an empty root is ready (a first deployment), a name published later is served
without a restart (on an admin reload, or by the poller within its interval), a name broken in place answers
503 and shows in /readyz until repaired, a removed name answers 404 and is listed as removed.

The poller runs with a long interval and its ``tick()`` is called by the test (deterministic), except in the
test of the interval itself, whose wait is bounded.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pq_index_factory
from vqrec.index import CompressedIndex, save_index
from vqrec.index.store import IndexStore
from vqrec.service.main import create_app
from vqrec.service.poller import AliasPoller
from vqrec.service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

WAIT = 10.0
pytestmark = pytest.mark.usefixtures("ticking_clock")


@pytest.fixture(scope="module")
def make_index() -> Callable[[int], CompressedIndex]:
    return pq_index_factory(seed=11, d=8, n_users=10)  # type: ignore[return-value]


def similar(c: TestClient, name: str) -> Any:
    return c.post(f"/v1/indexes/{name}/similar", json={"item_id": "i1", "k": 3})


def tick(c: TestClient) -> None:
    poller = c.app.state.poller
    assert isinstance(poller, AliasPoller)
    poller.tick()


@pytest.fixture
def served(tmp_path: Path, make_index: Callable[[int], CompressedIndex]) -> Iterator[tuple[Path, TestClient]]:
    """A root with a flat index ``flat`` and a store name ``movies``; the poller on, ticked by hand."""
    root = tmp_path / "root"
    save_index(make_index(60), str(root / "flat"))
    store = IndexStore(str(root))
    store.activate("movies", store.publish(make_index(80), "movies"))
    with TestClient(create_app(Settings(index_root=str(root), poll_seconds=3600))) as c:
        assert similar(c, "flat").status_code == 200 and similar(c, "movies").status_code == 200
        yield root, c


def test_an_empty_root_is_ready_and_serves_a_name_published_later(tmp_path, make_index, assert_error):
    root = tmp_path / "root"
    root.mkdir()
    with TestClient(create_app(Settings(index_root=str(root)))) as c:
        assert c.get("/readyz").json() == {"status": "ready", "indexes": {}, "removed": {}}
        assert_error(similar(c, "movies"), 404, "unknown_index", ("'movies'",))
        store = IndexStore(str(root))
        version = store.publish(make_index(70), "movies")
        store.activate("movies", version)  # what `vqrec rebuild` does, then it notifies:
        r = c.post("/v1/admin/indexes/movies/reload")
        assert r.status_code == 200, r.text
        assert r.json()["index_version"] == version
        assert similar(c, "movies").json()["index_version"] == version
        assert c.get("/readyz").json()["indexes"] == {"movies": version}
        # a flat artifact too, and a name that does not exist (or is not a plain name) stays 404
        save_index(make_index(50), str(root / "flat"))
        assert c.post("/v1/admin/indexes/flat/reload").status_code == 200
        assert_error(c.post("/v1/admin/indexes/nope/reload"), 404, "unknown_index", ("'nope'",))
        assert_error(c.post("/v1/admin/indexes/.hidden/reload"), 404, "unknown_index")


def test_the_poller_serves_a_new_name_within_its_interval(tmp_path, make_index):
    root = tmp_path / "root"
    root.mkdir()
    with TestClient(create_app(Settings(index_root=str(root), poll_seconds=0.1))) as c:
        store = IndexStore(str(root))
        version = store.publish(make_index(70), "movies")
        store.activate("movies", version)
        deadline = time.monotonic() + WAIT
        while similar(c, "movies").status_code != 200:
            assert time.monotonic() < deadline, "not served within the bound"
            time.sleep(0.05)
        assert similar(c, "movies").json()["index_version"] == version


@pytest.mark.parametrize(("name", "victim"), [("flat", "manifest.json"), ("movies", "ACTIVE")])
def test_a_name_broken_in_place_is_503_until_repaired(served, assert_error, caplog, name, victim):
    root, c = served
    path = root / name / victim
    saved = path.read_bytes()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="vqrec.service.poller"):
        tick(c)
        tick(c)
    warned = [r.getMessage() for r in caplog.records if r.name == "vqrec.service.poller"]
    assert len(warned) == 1 and f"'{name}'" in warned[0] and victim in warned[0], warned
    assert_error(similar(c, name), 503, "index_not_loaded", (f"'{name}'", victim))
    err = assert_error(c.get("/readyz"), 503, "not_ready", (f"'{name}'", victim))
    assert name in err["details"]["failed"]
    other = "movies" if name == "flat" else "flat"
    assert similar(c, other).status_code == 200  # the other name is untouched
    path.write_bytes(saved)
    tick(c)
    assert similar(c, name).status_code == 200
    assert c.get("/readyz").status_code == 200


@pytest.mark.parametrize("name", ["flat", "movies"])
def test_a_removed_name_is_404_and_listed_as_removed(served, assert_error, make_index, name):
    root, c = served
    shutil.rmtree(root / name)
    tick(c)
    assert_error(similar(c, name), 404, "unknown_index", (f"'{name}'",))
    ready = c.get("/readyz").json()
    assert ready["status"] == "ready" and name not in ready["indexes"] and name in ready["removed"]
    save_index(make_index(40), str(root / name))  # published again (flat this time)
    tick(c)
    assert similar(c, name).status_code == 200
    assert name not in c.get("/readyz").json()["removed"]


def test_a_request_in_flight_keeps_the_index_it_holds(served):
    root, c = served
    held = c.app.state.registry.indexes["flat"]
    shutil.rmtree(root / "flat")
    tick(c)
    assert "flat" not in c.app.state.registry.indexes
    assert len(held.similar(["i1"], k=3)[0].ids) == 3  # the object a request holds still answers


def test_a_fixed_list_of_names_neither_grows_nor_shrinks(tmp_path, make_index, assert_error):
    root = tmp_path / "root"
    save_index(make_index(60), str(root / "a"))
    with TestClient(create_app(Settings(index_root=str(root), indexes=["a"], poll_seconds=3600))) as c:
        save_index(make_index(50), str(root / "b"))
        tick(c)
        assert_error(c.post("/v1/admin/indexes/b/reload"), 404, "unknown_index", ("'b'",))
        assert_error(similar(c, "b"), 404, "unknown_index")


def test_index_data_without_a_manifest_is_a_failed_index_at_startup(tmp_path, make_index, assert_error):
    root = tmp_path / "root"
    save_index(make_index(60), str(root / "good"))
    save_index(make_index(50), str(root / "partial"))
    os.remove(root / "partial" / "manifest.json")
    with TestClient(create_app(Settings(index_root=str(root)))) as c:
        assert_error(c.get("/readyz"), 503, "not_ready", ("'partial'", "manifest.json"))
        assert_error(similar(c, "partial"), 503, "index_not_loaded", ("'partial'",))
        assert similar(c, "good").status_code == 200


def test_an_alias_that_is_not_a_file_is_a_failed_index_at_startup(tmp_path, make_index, assert_error):
    root = tmp_path / "root"
    save_index(make_index(60), str(root / "good"))
    store = IndexStore(str(root))
    store.publish(make_index(50), "movies")
    (root / "movies" / "ACTIVE").mkdir()  # not skipped as "no alias": reported
    with TestClient(create_app(Settings(index_root=str(root)))) as c:
        assert_error(c.get("/readyz"), 503, "not_ready", ("'movies'", "ACTIVE"))
        assert_error(similar(c, "movies"), 503, "index_not_loaded", ("'movies'",))
        assert similar(c, "good").status_code == 200
