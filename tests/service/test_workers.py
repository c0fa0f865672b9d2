"""``vqrec serve --workers N``: N server processes on one port, each serving every index; a reload (an alias
flip) reaches every worker through the alias poller, which is on with more than one worker."""

from __future__ import annotations

import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import test_admin_reload

from vqrec.index.fastscan import fastscan_available
from vqrec.index.store import IndexStore
from vqrec.service.main import settings_env
from vqrec.service.settings import Settings

make_index = test_admin_reload.make_index


def _children(pid: int) -> list[int]:
    out = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def _workers(pid: int) -> set[int]:
    """The server's worker processes: uvicorn's supervisor children that run python (not its resource tracker)."""
    found = set()
    for c in _children(pid):
        try:
            cmd = pathlib.Path(f"/proc/{c}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing.resource_tracker" not in cmd:
            found.add(c)
    return found


def test_settings_env_round_trips_every_setting():
    s = Settings(
        index_root="/x",
        indexes=["a", "b"],
        api_keys=["k1"],
        admin_keys=["adm"],
        poll_seconds=2.5,
        workers=3,
        metrics_public=False,
    )
    env = settings_env(s)
    old = dict(os.environ)
    try:
        os.environ.update(env)
        back = Settings()  # type: ignore[call-arg]
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert back.model_dump(exclude={"api_keys", "admin_keys"}) == s.model_dump(exclude={"api_keys", "admin_keys"})
    assert [k.get_secret_value() for k in back.api_keys] == ["k1"]
    assert [k.get_secret_value() for k in back.admin_keys] == ["adm"]


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").is_dir(), reason="needs /proc to count the worker processes")
def test_two_workers_serve_and_follow_an_alias_flip(
    tmp_path: Any, make_index: Callable[[int], Any], server: Any, free_port: Callable[[], int]
) -> None:
    root = tmp_path / "root"
    store = IndexStore(str(root))
    v0, v1 = (store.publish(make_index(n), "movies") for n in (100, 150))
    store.activate("movies", v0)
    port = free_port()
    argv = [sys.executable, "-m", "vqrec", "serve", "--index-root", str(root), "--port", str(port), "--workers", "2"]
    env = {"VQREC_POLL_SECONDS": "0.2", "VQREC_PROGRESS": "0"}
    with server(argv, port, env=env, timeout=120) as base:
        with httpx.Client(base_url=base, timeout=10) as c:
            served = set()
            for _ in range(40):  # bounded: every answer is v0's, from whichever worker took it
                r = c.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5})
                assert r.status_code == 200, r.text
                served.add(r.json()["index_version"])
            assert served == {v0}
            assert c.get("/readyz").status_code == 200
            store.activate("movies", v1)
            deadline = time.monotonic() + 30
            while True:  # bounded: until 40 answers in a row come from v1 (both workers polled the alias)
                got = [
                    c.post("/v1/indexes/movies/recommend", json={"user_id": "u0", "k": 5}).json()["index_version"]
                    for _ in range(40)
                ]
                if set(got) == {v1}:
                    break
                assert time.monotonic() < deadline, f"workers still serve {set(got)} 30 s after the flip"
                time.sleep(0.3)
        # the supervisor is the process the fixture started: two workers under it
        pids = [int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()]
        mine = [p for p in pids if _cmdline(p).endswith(f"--port\0{port}\0--workers\x002\0")]
        assert len(mine) >= 1
        workers = _workers(min(mine))
        assert len(workers) == 2
        # each worker maps the active version's files (VQREC_MMAP=auto): their pages are shared, not copied
        vdir = store.version_dir("movies", v1)
        shared = ["item_ids.txt", "item_norms.npy", "item_scale.npy"]
        if fastscan_available():
            shared.append("codes_fs4.npy")
        for w in workers:
            maps = pathlib.Path(f"/proc/{w}/maps").read_text()
            assert [f for f in shared if os.path.join(vdir, f) not in maps] == [], w


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""
