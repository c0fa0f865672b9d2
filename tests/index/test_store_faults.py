"""The store (index/store.py) facing garbage and interruptions: an alias file that is not an alias, a
``vqrec publish`` killed with SIGKILL (its staging left behind, or its version published and not activated),
and a rerun of the same publish.

Checked against the disk: the alias bytes, what versions/ holds, the error and the file it names.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import pq_index_factory
from tests.index.store_kill import kill_publish, stagings
from vqrec.index import CompressedIndex, save_index
from vqrec.index.errors import ArtifactCorrupt, ArtifactNotFound, ConfigError, StoreError
from vqrec.index.store import IndexStore

pytestmark = pytest.mark.usefixtures("ticking_clock")

WAIT = 20.0


@pytest.fixture(scope="module")
def make_index() -> Callable[[int], CompressedIndex]:
    return pq_index_factory(seed=11, d=8, n_users=10)  # type: ignore[return-value]


@pytest.fixture
def store(tmp_path: Any) -> IndexStore:
    return IndexStore(str(tmp_path / "root"))


@pytest.fixture
def two(store: IndexStore, make_index: Callable[[int], CompressedIndex]) -> tuple[str, str]:
    """movies: v1 (100 items), v2 (120 items, active, previous v1)."""
    v1 = store.publish(make_index(100), "movies")
    v2 = store.publish(make_index(120), "movies")
    store.activate("movies", v1)
    store.activate("movies", v2)
    return v1, v2


def _alias(store: IndexStore) -> pathlib.Path:
    return pathlib.Path(store.alias_path("movies"))


def _write_garbage(store: IndexStore, kind: str) -> Callable[[], Any]:
    """Replace the alias by garbage of ``kind``; returns a function that reads back what is there now."""
    p = _alias(store)
    p.unlink()
    if kind == "directory":
        p.mkdir()
        (p / "note").write_text("not an alias")
        return lambda: sorted(os.listdir(p)) if p.is_dir() else None
    if kind == "dangling-symlink":
        p.symlink_to(p.parent / "nowhere.json")
        return lambda: os.readlink(p) if p.is_symlink() else None
    data = GARBAGE[kind]
    p.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return lambda: p.read_bytes() if p.is_file() else None


GARBAGE: dict[str, Any] = {
    "non-utf8": b"\xff\xfe",
    "non-utf8-inside-json": b'{"version": "\xff"}',
    "empty": b"",
    "not-json": b"{not json",
    "json-list": [1, 2],
    "json-string": "20260101T000000Z-abc",
    "json-null": None,
    "deeply-nested": b"[" * 100_000,
    "no-version": {"previous": None},
    "version-number": {"version": 3},
    "version-empty": {"version": ""},
    "version-path": {"version": "../../etc"},
    "version-with-space": {"version": "a b"},
    "previous-number": {"version": "vX", "previous": 5},
    "previous-path": {"version": "vX", "previous": "../x"},
    "updated-at-number": {"version": "vX", "previous": None, "updated_at": 17},
}
KINDS = [*GARBAGE, "directory", "dangling-symlink"]


# ---- an alias that is garbage: ArtifactCorrupt naming the file, and repairable ----------------------
@pytest.mark.parametrize("kind", KINDS)
def test_garbage_alias_is_artifact_corrupt_naming_the_file(store, two, kind):
    v1, v2 = two
    on_disk = _write_garbage(store, kind)
    before = on_disk()
    path = store.alias_path("movies")
    for read in (store.read_alias, store.active, store.previous):
        with pytest.raises(ArtifactCorrupt) as e:
            read("movies")
        assert path in str(e.value) and "vqrec activate movies" in str(e.value), str(e.value)
    # the listing still works, with no version marked active
    infos = store.versions("movies")
    assert sorted(i.version for i in infos) == sorted([v1, v2]) and not any(i.active or i.previous for i in infos)
    # what needs the alias refuses, naming it, and changes nothing
    for write in (lambda: store.rollback("movies"), lambda: store.prune("movies", 1)):
        with pytest.raises(ArtifactCorrupt, match="ACTIVE"):
            write()
    assert on_disk() == before and sorted(os.listdir(store.versions_dir("movies"))) == sorted([v1, v2])
    # activating a version that does not load leaves the garbage as it was
    with pytest.raises(ArtifactNotFound, match="no version 'nope'"):
        store.activate("movies", "nope")
    assert on_disk() == before
    # the repair: activate writes a good alias (the previous version is unknown)
    alias = store.activate("movies", v1)
    assert (alias["version"], alias["previous"]) == (v1, None)
    assert json.loads(_alias(store).read_bytes()) == alias and _alias(store).is_file()
    assert store.active("movies") == v1
    if kind == "directory":  # moved aside, not deleted: nothing the operator put there is lost
        aside = [n for n in os.listdir(store.name_dir("movies")) if n.startswith(".ACTIVE.unreadable-")]
        assert len(aside) == 1
        assert (pathlib.Path(store.name_dir("movies")) / aside[0] / "note").read_text() == "not an alias"


def test_fifo_alias_does_not_block(store, two):
    """A FIFO named ACTIVE: reading it must not wait for a writer that never comes."""
    v1, _ = two
    p = _alias(store)
    p.unlink()
    os.mkfifo(p)
    out: list[Any] = []

    def read() -> None:
        try:
            store.active("movies")
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(WAIT)
    if t.is_alive():  # unblock the reader before failing
        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(WAIT)
        pytest.fail("reading a FIFO alias blocked")
    assert len(out) == 1 and isinstance(out[0], ArtifactCorrupt) and str(p) in str(out[0]), out
    assert "not a regular file" in str(out[0])
    assert store.activate("movies", v1)["version"] == v1 and p.is_file()


def test_oversized_alias_is_refused_without_reading_it_all(store, two):
    _alias(store).write_bytes(b" " * (2 << 20) + b'{"version": "x"}')
    with pytest.raises(ArtifactCorrupt, match="larger than"):
        store.active("movies")


# ---- leftovers of a killed publish ----------------------------------------------------------------
def _built(make_index: Callable[[int], CompressedIndex], tmp_path: Any, n: int) -> tuple[str, str]:
    out = str(tmp_path / f"built{n}")
    return out, save_index(make_index(n), out)["index_version"]


@pytest.mark.parametrize("cleaner", ["publish", "publish_dir", "activate", "rollback", "prune", "clean_stagings"])
def test_staging_of_a_killed_publish_is_cleaned_by_the_next_writer(store, two, make_index, tmp_path, cleaner):
    v1, v2 = two
    src, v3 = _built(make_index, tmp_path, 140)
    rc = kill_publish([f"--index={src}", "--name=movies", f"--index-root={store.root}"], "mid-copy")
    assert rc == -9
    vdir = store.versions_dir("movies")
    assert len(stagings(vdir)) == 1 and store.active("movies") == v2
    {
        "publish": lambda: store.publish(make_index(150), "movies"),
        "publish_dir": lambda: store.publish_dir(src, "movies"),
        "activate": lambda: store.activate("movies", v1),
        "rollback": lambda: store.rollback("movies"),
        "prune": lambda: store.prune("movies", 5),
        "clean_stagings": lambda: store.clean_stagings("movies"),
    }[cleaner]()
    assert stagings(vdir) == [] and not [n for n in os.listdir(vdir) if n.startswith(".")]


def test_a_live_publish_keeps_its_staging(store, two, tmp_path, make_index):
    """A publish that is still running holds the name's lock: its staging is not a leftover."""
    src, _ = _built(make_index, tmp_path, 140)
    vdir = store.versions_dir("movies")
    result: list[Any] = []
    holding = threading.Event()
    release = threading.Event()
    real_copy = shutil.copyfile

    def slow_copy(s: str, d: str, *a: Any, **k: Any) -> Any:
        out = real_copy(s, d, *a, **k)
        holding.set()
        assert release.wait(WAIT)
        return out

    def publish() -> None:
        try:
            result.append(store.publish_dir(src, "movies"))
        except BaseException as e:  # pragma: no cover - reported below
            result.append(e)

    mp = pytest.MonkeyPatch()
    mp.setattr(shutil, "copyfile", slow_copy)
    try:
        t = threading.Thread(target=publish)
        t.start()
        assert holding.wait(WAIT)
        assert len(stagings(vdir)) == 1
        cleaner = threading.Thread(target=lambda: IndexStore(store.root).clean_stagings("movies"))
        cleaner.start()
        cleaner.join(0.5)
        assert cleaner.is_alive() and len(stagings(vdir)) == 1  # waits for the lock, touches nothing
    finally:
        mp.undo()
        release.set()
    t.join(WAIT)
    cleaner.join(WAIT)
    assert not cleaner.is_alive() and isinstance(result[0], str), result
    assert stagings(vdir) == [] and store.path("movies", result[0])


# ---- publishing again: identical content is not an error; other content is -------------------------
def test_republishing_identical_content_is_already_published(store, two, tmp_path, tree_digest):
    v1, v2 = two
    src = store.version_dir("movies", v1)
    copy = str(tmp_path / "copy")
    shutil.copytree(src, copy)
    before = tree_digest(store.root)
    assert store.publish_dir_status(copy, "movies") == (v1, False)
    assert store.publish_dir(copy, "movies") == v1
    assert tree_digest(store.root) == before


def test_same_version_id_with_other_content_is_an_error_naming_both(store, two, tmp_path, make_index, tree_digest):
    v1, _ = two
    src, _ = _built(make_index, tmp_path, 140)
    m = json.loads(pathlib.Path(src, "manifest.json").read_text())
    m["index_version"] = v1  # another build that claims an existing version id
    pathlib.Path(src, "manifest.json").write_text(json.dumps(m))
    before = tree_digest(store.root)
    with pytest.raises(StoreError) as e:
        store.publish_dir(src, "movies")
    msg = str(e.value)
    assert f"already has version '{v1}'" in msg and "different content" in msg and "codes.npy" in msg
    assert store.version_dir("movies", v1) in msg and src in msg
    assert tree_digest(store.root) == before


def test_same_version_id_whose_stored_copy_is_damaged_is_an_error(store, two, tmp_path, tree_digest):
    v1, _ = two
    copy = str(tmp_path / "copy")
    shutil.copytree(store.version_dir("movies", v1), copy)
    codes = pathlib.Path(store.version_dir("movies", v1), "codes.npy")
    codes.write_bytes(codes.read_bytes()[:-4])
    before = tree_digest(store.root)
    with pytest.raises(StoreError, match=rf"already has version '{v1}'.*does not verify.*codes.npy"):
        store.publish_dir(copy, "movies")
    assert tree_digest(store.root) == before


def test_a_huge_version_or_name_is_echoed_truncated(tmp_path) -> None:
    """An id a caller sends is cut in the message (CLI and HTTP alike): 100 characters and its length."""
    store = IndexStore(str(tmp_path))
    for call in (lambda: store.activate("movies", "v" * 1_000_000), lambda: store.versions("n/" * 500_000)):
        with pytest.raises(ConfigError) as e:
            call()
        assert len(str(e.value)) < 400 and "(1000000 chars)" in str(e.value)
