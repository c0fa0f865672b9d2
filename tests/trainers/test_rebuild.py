"""`vqrec rebuild` (trainers/rebuild/) end to end, as a subprocess: publish, gate, kill -9 at each step, drift;
the notify retries and the rebuild lock. Config and input errors: test_rebuild_config.py.

The command is run from its own typer app (vqrec/cli/rebuild.py) under sys.executable, so a
crash (the VQREC_REBUILD_CRASH_AFTER test hook: os._exit(137), as kill -9) ends a real process.
Helpers: rebuild_helpers.py; fixtures (data, store_root): conftest.py.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import pq_index_factory
from tests.index.store_kill import kill_publish, stagings
from tests.trainers.rebuild_helpers import NAME, config, rebuild, served
from vqrec.index.artifact import load_index, save_index
from vqrec.index.errors import RebuildError
from vqrec.index.store import IndexStore
from vqrec.trainers.rebuild import EXIT_NOTIFY, RebuildConfig, notify, rebuild_lock


def test_rebuild_publishes_and_activates(data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path):
    store = IndexStore(str(store_root))
    v1 = store.active(NAME)
    r = rebuild(config(data, store_root, tmp_path))
    assert r.returncode == 0, r.stderr
    v2 = store.active(NAME)
    assert v2 != v1 and store.previous(NAME) == v1
    assert f"published and activated {v2}" in r.stdout and "recall@10" in r.stdout
    assert not (store_root / NAME / ".rebuild").exists()
    assert [v.version for v in store.versions(NAME)] == [v2, v1]
    # the same inputs again: nothing to do
    r = rebuild(config(data, store_root, tmp_path))
    assert r.returncode == 0 and "already up to date" in r.stdout
    assert store.active(NAME) == v2


def test_gate_refuses_and_leaves_the_alias(data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path):
    before = served(store_root, data["xq"])
    r = rebuild(config(data, store_root, tmp_path, recall_floor=0.99))
    assert r.returncode == 4, r.stderr
    assert "gate refused" in r.stderr and "below the floor 0.99" in r.stderr and "max_drop 0.5" in r.stderr
    assert "active recall 0." in r.stderr
    assert served(store_root, data["xq"]) == before
    assert len(IndexStore(str(store_root)).versions(NAME)) == 1


@pytest.mark.parametrize("step", ["train", "mid-build", "build", "mid-publish", "publish"])
def test_kill_at_each_step_changes_nothing_served(
    data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path, step: str
):
    before = served(store_root, data["xq"])
    cfg = config(data, store_root, tmp_path)
    r = rebuild(cfg, crash=step)
    assert r.returncode == 137, (r.returncode, r.stderr)
    assert served(store_root, data["xq"]) == before
    store = IndexStore(str(store_root))
    n_versions = len(store.versions(NAME))
    assert n_versions == (2 if step == "publish" else 1)
    # where the process died: what the work directory and the store's staging hold
    state = json.loads((store_root / NAME / ".rebuild" / "state.json").read_text())
    recorded = {"train": {"train"}, "mid-build": {"train"}, "build": {"train", "build"}}
    assert set(state["steps"]) == recorded.get(step, {"train", "build", *(["publish"] if step == "publish" else [])})
    assert (store_root / NAME / ".rebuild" / "index").exists() == (step not in ("train", "mid-build"))
    staging = [p for p in os.listdir(store.versions_dir(NAME)) if p.startswith(".publish-")]
    assert len(staging) == (1 if step == "mid-publish" else 0)
    r = rebuild(cfg)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert store.active(NAME) != before[1] and store.previous(NAME) == before[1]
    assert len(store.versions(NAME)) == 2
    assert not [p for p in os.listdir(store.versions_dir(NAME)) if p.startswith(".")]


def test_up_to_date_rebuild_cleans_the_staging_of_a_killed_publish(
    data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path
):
    """A `vqrec publish` killed with SIGKILL mid-copy leaves versions/.publish-*; a rebuild that finds the
    active version already built from its inputs (exit 0 early) still removes it, and changes nothing else."""
    before = served(store_root, data["xq"])
    src = str(tmp_path / "other")
    save_index(pq_index_factory(seed=5)(50), src)  # type: ignore[arg-type]
    argv = ["--index", src, "--name", NAME, "--index-root", str(store_root)]
    assert kill_publish(argv, "mid-copy") == -9
    store = IndexStore(str(store_root))
    assert len(stagings(store.versions_dir(NAME))) == 1
    r = rebuild(config(data, store_root, tmp_path, items="items_v1.npz"))
    assert r.returncode == 0, r.stderr
    assert "already up to date" in r.stdout
    assert stagings(store.versions_dir(NAME)) == []
    assert served(store_root, data["xq"]) == before and len(store.versions(NAME)) == 1


def test_other_inputs_discard_an_unfinished_rebuild(
    data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path
):
    store = IndexStore(str(store_root))
    v1 = store.active(NAME)
    assert rebuild(config(data, store_root, tmp_path), crash="publish").returncode == 137
    orphan = [v.version for v in store.versions(NAME) if v.version != v1]
    r = rebuild(config(data, store_root, tmp_path, items="items_v3.npz", max_drop=1.0, recall_floor=0.0))
    assert r.returncode == 0, r.stderr
    assert "discarding an unfinished rebuild" in r.stderr
    assert orphan[0] not in {v.version for v in store.versions(NAME)}
    assert store.previous(NAME) == v1


def test_drift_decides_reuse_or_retrain(data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path):
    store = IndexStore(str(store_root))
    r = rebuild(config(data, store_root, tmp_path))
    assert r.returncode == 0, r.stderr
    assert "codebooks" in r.stdout and "reuse (drift" in r.stdout and "relative MSE" in r.stdout
    m = load_index(store.path(NAME)).manifest
    assert m["rebuild"]["codebooks"]["decision"] == "reuse"
    r = rebuild(config(data, store_root, tmp_path, items="items_v3.npz", max_drop=1.0, recall_floor=0.0))
    assert r.returncode == 0, r.stderr
    assert "retrain (drift" in r.stdout
    assert load_index(store.path(NAME)).manifest["rebuild"]["codebooks"]["decision"] == "retrain"


def test_gate_refuses_a_drop_larger_than_max_drop(
    data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path
):
    """Floor passed, but recall fell from the active version by more than max_drop: refused, exit 4."""
    before = served(store_root, data["xq"])
    active_recall = load_index(IndexStore(str(store_root)).path(NAME)).manifest["evaluation"]["user_to_item"]
    coarse = "[train]\nmethod = 'pq'\nM = 2\nnbits = 2\nniter = 8\neval_queries = 50\n"  # far fewer bits
    r = rebuild(config(data, store_root, tmp_path, train=coarse, recall_floor=0.0, max_drop=0.02))
    assert r.returncode == 4, r.stderr
    assert "gate refused" in r.stderr and "below the floor" not in r.stderr
    assert f"from the active version {before[1]}'s {active_recall['recall@10']}" in r.stderr
    assert "more than max_drop 0.02" in r.stderr and "the alias still points at" in r.stderr
    assert served(store_root, data["xq"]) == before
    assert len(IndexStore(str(store_root)).versions(NAME)) == 1


def test_notify_failure_exits_6_with_the_version_active(
    data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path, free_port: Callable[[], int]
):
    """Nothing listens on the notify url: exit 6, and the new version is published and active all the same."""
    store = IndexStore(str(store_root))
    v1 = store.active(NAME)
    url = f"http://127.0.0.1:{free_port()}"
    r = rebuild(config(data, store_root, tmp_path, extra=f'[notify]\nurl = "{url}"\n'))
    assert r.returncode == 6, r.stderr
    v2 = store.active(NAME)
    assert v2 != v1 and store.previous(NAME) == v1
    assert f"notify failed: {url}/v1/admin/indexes/{NAME}/reload" in r.stderr
    assert f"(version {v2} is published and active)" in r.stderr


def test_a_second_rebuild_of_the_same_name_exits_7(
    data: dict[str, Any], store_root: pathlib.Path, tmp_path: pathlib.Path
):
    before = served(store_root, data["xq"])
    with rebuild_lock(str(store_root), NAME):  # as a running rebuild holds it
        r = rebuild(config(data, store_root, tmp_path))
        # the lock is taken before anything is read: even bad inputs get 7, at once
        r_missing = rebuild(config(data, store_root, tmp_path, items="missing.npz"))
    assert r_missing.returncode == 7, r_missing.stderr
    assert r.returncode == 7, r.stderr
    assert f"another rebuild of '{NAME}' is running (pid {os.getpid()}" in r.stderr and "nothing done" in r.stderr
    assert served(store_root, data["xq"]) == before
    assert not (store_root / NAME / ".rebuild").exists()
    r = rebuild(config(data, store_root, tmp_path))  # released: the next run goes through
    assert r.returncode == 0, r.stderr


class _Reload(http.server.BaseHTTPRequestHandler):
    """Answers POST .../reload with the statuses queued on the server, then 200."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        status = self.server.statuses.pop(0) if self.server.statuses else 200  # type: ignore[attr-defined]
        body = b'{"error": {"code": "reload_in_progress", "message": "busy"}}' if status == 409 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def reload_server() -> Any:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Reload)
    srv.seen, srv.statuses = [], []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_notify_retries_while_a_reload_is_running(reload_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """409 (the service's poller, or another admin, is reloading) is retried; the third answer is 200."""
    monkeypatch.setenv("VQREC_ADMIN_KEY", "adm")
    reload_server.statuses[:] = [409, 409]
    cfg = RebuildConfig(root="r", name="movies", items="i", notify_url=f"http://127.0.0.1:{reload_server.server_port}")
    assert notify(cfg, "v2", first_wait=0.05).endswith("HTTP 200")
    assert reload_server.seen == [("/v1/admin/indexes/movies/reload", "Bearer adm")] * 3
    # busy for longer than allowed: exit 6 naming the 409; any other status is not retried
    reload_server.seen.clear()
    reload_server.statuses[:] = [409] * 50
    with pytest.raises(RebuildError, match="HTTP 409") as e:
        notify(cfg, "v2", busy_for=0.3, first_wait=0.05)
    assert e.value.exit_code == EXIT_NOTIFY and 2 <= len(reload_server.seen) <= 6
    reload_server.seen.clear()
    reload_server.statuses[:] = [422]
    with pytest.raises(RebuildError, match="HTTP 422"):
        notify(cfg, "v2", first_wait=0.05)
    assert len(reload_server.seen) == 1
