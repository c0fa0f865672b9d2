"""Alias polling (service/poller.py, VQREC_POLL_SECONDS): the service follows the store's ACTIVE alias.

Every wait is a polling loop bounded by WAIT; "nothing happens over several ticks" waits for the poller's
own tick counter, so a slow machine makes the test slower, never wrong.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_admin_reload
from pydantic import ValidationError
from test_admin_reload import WAIT, Env, _version_dir, hold

from vqrec.index import CompressedIndex
from vqrec.index.store import IndexStore
from vqrec.service import reload
from vqrec.service.main import create_app
from vqrec.service.poller import AliasPoller
from vqrec.service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

POLL = 0.1  # seconds between polls in these tests

make_index = test_admin_reload.make_index  # its module-scoped fixture: make_index(n) -> a PQ index of n items

pytestmark = pytest.mark.usefixtures("ticking_clock")


def wait_until(cond: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``cond`` until it is truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.02)


class PolledEnv(Env):
    @property
    def poller(self) -> AliasPoller:
        poller = self.client.app.state.poller
        assert isinstance(poller, AliasPoller)
        return poller

    def served(self) -> str:
        return str(self.recommend()["index_version"])

    def failures_total(self) -> float:
        text = self.client.get("/metrics").text
        m = re.search(r'vqrec_reload_failures_total\{index="movies"\} ([0-9.]+)', text)
        assert m is not None, text
        return float(m.group(1))

    def counts(self) -> tuple[float, float, float]:
        """(reloads success, reloads failure, reload_failures_total)."""
        return self.metric("success"), self.metric("failure"), self.failures_total()

    def wait_ticks(self, n: int = 3) -> None:
        """Wait until the poller has completed ``n`` more ticks (each one looked at the alias)."""
        start = self.poller.ticks
        wait_until(lambda: self.poller.ticks >= start + n, f"{n} poll ticks")

    def point_alias(self, version: str) -> None:
        """Point the alias at ``version`` without IndexStore.activate's load check (as a file sync, or
        a tool that does not verify, would): atomically, like the store does."""
        alias = {"version": version, "previous": self.store.active("movies"), "updated_at": "2026-01-01T00:00:00+00:00"}
        d = self.store.name_dir("movies")
        fd, tmp = tempfile.mkstemp(prefix=".ACTIVE.tmp-", dir=d)
        with os.fdopen(fd, "w") as f:
            json.dump(alias, f)
        os.replace(tmp, self.store.alias_path("movies"))


def _open(root: str, make_index: Callable[[int], CompressedIndex]) -> tuple[IndexStore, list[str]]:
    store = IndexStore(root)
    versions = [store.publish(make_index(n), "movies") for n in (100, 150, 200)]
    store.activate("movies", versions[0])
    return store, versions


@pytest.fixture
def polled(tmp_path: Any, make_index: Callable[[int], CompressedIndex]) -> Iterator[PolledEnv]:
    """movies: v0 (100 items, active), v1 (150), v2 (200); served with poll_seconds=POLL; no keys."""
    root = str(tmp_path / "root")
    store, versions = _open(root, make_index)
    with TestClient(create_app(Settings(index_root=root, poll_seconds=POLL))) as c:
        yield PolledEnv(root, store, versions, c)


def _corrupt_codes(env: Env, version: str) -> None:
    codes = _version_dir(env, version) / "codes.npy"
    raw = bytearray(codes.read_bytes())
    raw[-1] ^= 0xFF
    codes.write_bytes(bytes(raw))


# ---- (1) the alias moves: the service follows ------------------------------------------------------
def test_activate_is_picked_up_and_counted(polled, caplog):
    v0, v1, _ = polled.versions
    assert polled.served() == v0 and polled.counts() == (0, 0, 0)
    assert polled.client.get("/v1/admin/indexes").json()["poll_seconds"] == POLL
    with caplog.at_level(logging.INFO, logger="vqrec.service.poller"):
        polled.store.activate("movies", v1)
        wait_until(lambda: polled.served() == v1, "the new version served")
    assert polled.counts() == (1, 0, 0)
    moved = [r.getMessage() for r in caplog.records if r.name == "vqrec.service.poller" and r.levelno == logging.INFO]
    assert f"alias moved: movies {v0} -> {v1}" in moved
    # the poller never writes the alias; everything else reports the new version
    assert polled.store.active("movies") == v1 and polled.store.previous("movies") == v0
    assert polled.client.get("/readyz").json()["indexes"] == {"movies": v1}
    admin_view = polled.client.get("/v1/admin/indexes").json()["indexes"][0]
    assert admin_view["store_version"] == v1 and admin_view["path"] == str(_version_dir(polled, v1))
    # nothing more happens while the alias stays put
    polled.wait_ticks()
    assert polled.counts() == (1, 0, 0)


# ---- (2) a bad version: refused once, not retried, a later good one is picked up --------------------
@pytest.mark.parametrize("bad", ["checksum", "self_test"])
def test_bad_version_refused_once_then_good_one_followed(polled, make_index, caplog, bad):
    v0, v1, v2 = polled.versions
    before = polled.recommend()
    with caplog.at_level(logging.INFO, logger="vqrec.service.poller"):
        if bad == "checksum":  # codes altered after publish: activate would refuse it, so flip the file
            _corrupt_codes(polled, v1)
            polled.point_alias(v1)
            vbad = v1
        else:  # probes that do not replay: checksums pass (activate accepts it), the self-test fails
            idx = make_index(120)
            p = idx.manifest["probes"]["recommend"][0]
            p["ids"], p["scores"] = list(reversed(p["ids"])), list(reversed(p["scores"]))
            vbad = polled.store.publish(idx, "movies")
            polled.store.activate("movies", vbad)
        wait_until(lambda: polled.failures_total() == 1, "the failed reload counted")
        polled.wait_ticks(5)
    assert polled.counts() == (0, 1, 1)  # once, not once per tick
    after = polled.recommend()
    assert after["index_version"] == v0 and after["results"] == before["results"]
    assert polled.store.active("movies") == vbad  # the alias is left as the operator set it
    warned = [
        r.getMessage() for r in caplog.records if r.name == "vqrec.service.poller" and r.levelno == logging.WARNING
    ]
    assert len(warned) == 1, warned
    assert vbad in warned[0] and ("sha256" if bad == "checksum" else "self-test failed") in warned[0]
    # a later flip to a good version is followed
    polled.store.activate("movies", v2)
    wait_until(lambda: polled.served() == v2, "the good version served")
    assert polled.counts() == (1, 1, 1)


def test_unreadable_alias_of_one_name_does_not_stop_the_others(tmp_path, make_index, caplog):
    """A name whose ACTIVE alias turns to garbage (not UTF-8) keeps serving what it served, warned once; the
    poller goes on following the other names (this one sorts first), and follows it again once repaired."""
    root = str(tmp_path / "root")
    store, (v0, v1, _) = _open(root, make_index)
    b0 = store.publish(make_index(120), "a-bad")
    b1 = store.publish(make_index(130), "a-bad")
    store.activate("a-bad", b0)
    alias = pathlib.Path(store.alias_path("a-bad"))
    with caplog.at_level(logging.INFO, logger="vqrec.service.poller"):
        with TestClient(create_app(Settings(index_root=root, poll_seconds=POLL))) as c:
            env = PolledEnv(root, store, [v0, v1], c)

            def bad_served() -> str:
                r = c.post("/v1/indexes/a-bad/recommend", json={"user_id": "u0", "k": 5})
                assert r.status_code == 200, r.text
                return str(r.json()["index_version"])

            assert bad_served() == b0 and env.served() == v0
            alias.write_bytes(b"\xff\xfe")
            env.wait_ticks()
            store.activate("movies", v1)
            wait_until(lambda: env.served() == v1, "the good name followed past the bad one")
            env.wait_ticks()
            assert bad_served() == b0  # the bad name keeps serving its version
            assert alias.read_bytes() == b"\xff\xfe"  # the poller never writes the alias
            warned = [
                r.getMessage()
                for r in caplog.records
                if r.name == "vqrec.service.poller" and r.levelno == logging.WARNING and "a-bad" in r.getMessage()
            ]
            assert len(warned) == 1 and str(alias) in warned[0], warned
            store.activate("a-bad", b1)  # the repair: followed like any move
            wait_until(lambda: bad_served() == b1, "the repaired alias followed")
            assert env.served() == v1


# ---- (3) off by default ----------------------------------------------------------------------------
def test_poll_seconds_zero_starts_no_poller(tmp_path, make_index):
    root = str(tmp_path / "root")
    store, (v0, v1, _) = _open(root, make_index)
    with TestClient(create_app(Settings(index_root=root))) as c:
        env = PolledEnv(root, store, [v0, v1], c)
        assert c.app.state.poller is None
        assert c.get("/v1/admin/indexes").json()["poll_seconds"] == 0
        store.activate("movies", v1)
        # 10 would-be poll intervals: a poller at POLL would have moved by now
        time.sleep(10 * POLL)
        assert env.served() == v0 and env.counts() == (0, 0, 0)
        # the manual reload is still the way
        assert c.post("/v1/admin/indexes/movies/reload").json()["index_version"] == v1


# ---- (4) the setting -------------------------------------------------------------------------------
def test_setting_bounds_and_environment(tmp_path, monkeypatch):
    assert Settings(index_root=str(tmp_path)).poll_seconds == 0
    for bad in (-1, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="poll_seconds"):
            Settings(index_root=str(tmp_path), poll_seconds=bad)
    monkeypatch.setenv("VQREC_INDEX_ROOT", str(tmp_path))
    monkeypatch.setenv("VQREC_POLL_SECONDS", "2.5")
    assert Settings().poll_seconds == 2.5
    monkeypatch.setenv("VQREC_POLL_SECONDS", "-3")
    with pytest.raises(ValidationError, match="poll_seconds"):
        Settings()


# ---- (5) manual reload / rollback and the poller ---------------------------------------------------
def test_manual_reload_and_rollback_are_not_undone(polled):
    """The poller acts on alias changes: a manual reload to a non-alias version (which flips the alias
    itself) and a rollback are seen as moves to the version already served, and left alone."""
    v0, v1, v2 = polled.versions
    r = polled.client.post("/v1/admin/indexes/movies/reload", json={"version": v2})
    assert r.status_code == 200 and r.json()["alias_changed"] is True
    polled.wait_ticks()
    assert polled.served() == v2 and polled.store.active("movies") == v2
    assert polled.counts() == (1, 0, 0)  # only the manual reload
    assert polled.client.post("/v1/admin/indexes/movies/rollback").status_code == 200
    polled.wait_ticks()
    assert polled.served() == v0 and polled.store.active("movies") == v0
    assert polled.counts() == (2, 0, 0)
    # the alias moving again is still followed
    polled.store.activate("movies", v1)
    wait_until(lambda: polled.served() == v1, "the new version served")
    assert polled.counts() == (3, 0, 0)


def test_two_quick_moves_still_converge_on_the_alias(polled):
    """A manual reload moves alias and index to v1; the CLI rolls the alias back to v0 before the next tick.
    The poller compares the alias with what is served, so it reloads v0 (no 'last seen' state to fool)."""
    v0, v1, _ = polled.versions
    lock = reload.lock_for(polled.client.app, "movies")
    r = polled.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
    assert r.status_code == 200 and polled.served() == v1
    assert lock.acquire(timeout=WAIT)  # hold the poller off while the alias moves back
    try:
        polled.store.rollback("movies")
        assert polled.store.active("movies") == v0
    finally:
        lock.release()
    wait_until(lambda: polled.served() == v0, "the alias' version served again")
    assert polled.counts() == (2, 0, 0)


def _refused_then_repaired(env: PolledEnv, version: str) -> None:
    """Point the alias at ``version`` with a corrupt codes file, wait for the poller to refuse it, then
    repair the file in place (the alias stays on ``version``)."""
    codes = _version_dir(env, version) / "codes.npy"
    good = codes.read_bytes()
    _corrupt_codes(env, version)
    env.point_alias(version)
    wait_until(lambda: env.failures_total() == 1, "the failed reload counted")
    codes.write_bytes(good)


def test_a_refused_version_is_tried_again_once_the_alias_came_back_to_it(polled):
    v0, v1, v2 = polled.versions
    _refused_then_repaired(polled, v1)
    polled.store.activate("movies", v2)  # the alias moves on ...
    wait_until(lambda: polled.served() == v2, "v2 served")
    polled.store.activate("movies", v1)  # ... and back to the repaired version: tried again
    wait_until(lambda: polled.served() == v1, "the repaired v1 served")
    assert polled.counts() == (2, 1, 1)


def test_failed_version_is_retried_by_manual_reload_only(polled):
    """A version the poller refused stays refused by the poller; POST reload retries it on demand."""
    v0, v1, _ = polled.versions
    _refused_then_repaired(polled, v1)  # the alias did not move since: the poller does not retry
    polled.wait_ticks()
    assert polled.served() == v0 and polled.counts() == (0, 1, 1)
    r = polled.client.post("/v1/admin/indexes/movies/reload")
    assert r.status_code == 200 and r.json()["index_version"] == v1
    polled.wait_ticks()
    assert polled.served() == v1 and polled.counts() == (1, 1, 1)


def test_tick_skipped_while_manual_reload_holds_the_lock(polled):
    v0, v1, _ = polled.versions
    lock = reload.lock_for(polled.client.app, "movies")
    assert lock.acquire(timeout=WAIT)
    try:
        polled.store.activate("movies", v1)
        polled.wait_ticks()
        assert polled.served() == v0 and polled.counts() == (0, 0, 0)
    finally:
        lock.release()
    wait_until(lambda: polled.served() == v1, "picked up once the lock is free")
    assert polled.counts() == (1, 0, 0)


def test_poll_load_runs_off_the_event_loop_and_holds_the_lock(polled, monkeypatch, assert_error):
    v0, v1, _ = polled.versions
    entered, release = hold(monkeypatch, reload, "load_index")
    polled.store.activate("movies", v1)
    try:
        assert entered.wait(WAIT)
        t0 = time.monotonic()
        assert polled.served() == v0  # queries answered while the poller loads
        assert polled.client.get("/healthz").status_code == 200
        assert time.monotonic() - t0 < WAIT / 2
        r = polled.client.post("/v1/admin/indexes/movies/reload", json={"version": v1})
        assert_error(r, 409, "reload_in_progress")
    finally:
        release.set()
    wait_until(lambda: polled.served() == v1, "the slow load swapped in")
    assert polled.counts() == (1, 0, 0)


def test_index_failed_at_startup_recovers_when_alias_moves(tmp_path, make_index):
    root = str(tmp_path / "root")
    store, (v0, v1, _) = _open(root, make_index)
    codes = pathlib.Path(store.version_dir("movies", v0)) / "codes.npy"
    codes.write_bytes(codes.read_bytes()[:-3])
    with TestClient(create_app(Settings(index_root=root, poll_seconds=POLL))) as c:
        env = PolledEnv(root, store, [v0, v1], c)
        assert c.get("/readyz").status_code == 503
        env.wait_ticks()  # the version that failed at startup is not retried every tick
        assert c.get("/readyz").status_code == 503 and env.counts() == (0, 0, 0)
        store.activate("movies", v1)
        wait_until(lambda: c.get("/readyz").status_code == 200, "/readyz 200 after the alias moved")
        assert env.served() == v1 and env.counts() == (1, 0, 0)


def test_shutdown_stops_the_poller_promptly(tmp_path, make_index):
    root = str(tmp_path / "root")
    _open(root, make_index)
    app = create_app(Settings(index_root=root, poll_seconds=30))
    with TestClient(app):
        poller = app.state.poller
        assert isinstance(poller, AliasPoller) and poller.running
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5  # woken from its 30 s sleep, not waited out
    assert not poller.running
