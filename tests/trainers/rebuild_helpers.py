"""Helpers of the rebuild tests (test_rebuild.py, test_rebuild_config.py; their fixtures are in conftest.py):
run `vqrec rebuild` as a subprocess, write a rebuild.toml, read what the service would answer.

The command is run from its own typer app (vqrec/cli/rebuild.py) under sys.executable, so a
crash (the VQREC_REBUILD_CRASH_AFTER test hook: os._exit(137), as kill -9) ends a real process.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np

from vqrec.index.artifact import load_index
from vqrec.index.store import IndexStore

NAME = "movies"
_APP = "from vqrec.cli.rebuild import app; app.callback()(lambda: None); app()"
_REPO = str(pathlib.Path(__file__).resolve().parents[2])


def rebuild(config: pathlib.Path, *, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONPATH": _REPO}
    env.pop("VQREC_REBUILD_CRASH_AFTER", None)
    if crash:
        env["VQREC_REBUILD_CRASH_AFTER"] = crash
    return subprocess.run(
        [sys.executable, "-c", _APP, "rebuild", "--config", str(config), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=_REPO,
    )


TRAIN = "[train]\nmethod = 'pq'\nM = 8\nnbits = 5\nniter = 8\neval_queries = 50\n"


def write_config(
    path: pathlib.Path, root: pathlib.Path, items: str, users: str, *, train: str = TRAIN, extra: str = "", **gate: Any
) -> pathlib.Path:
    g = {"recall_floor": 0.3, "max_drop": 0.5, "k": 10, "queries": 100, **gate}
    path.write_text(
        f'[index]\nroot = "{root}"\nname = "{NAME}"\n'
        f'[data]\nitems = "{items}"\nusers = "{users}"\n' + train + "[drift]\nmax_relative_mse_increase = 0.1\n"
        "[gate]\n" + "".join(f"{k} = {v}\n" for k, v in g.items()) + "[store]\nkeep = 5\n" + extra
    )
    return path


def config(data: dict[str, Any], root: pathlib.Path, tmp_path: pathlib.Path, items: str = "items_v2.npz", **kw: Any):
    d = data["dir"]
    return write_config(tmp_path / "rebuild.toml", root, str(d / items), str(d / "users.npz"), **kw)


def served(root: pathlib.Path, xq: np.ndarray) -> tuple[bytes, str, list[list[str]]]:
    """What the service would answer: the alias bytes, the active index_version, top-10 ids for a few queries."""
    store = IndexStore(str(root))
    index = load_index(store.path(NAME), mmap=False, verify=True)
    return (
        pathlib.Path(store.alias_path(NAME)).read_bytes(),
        index.version,
        [list(r.ids) for r in index.search(xq[:5], 10)],
    )
