"""HTTP test fixtures: one small PQ index trained once per session, saved under an index root.

svc_data     600 items (ids "0".."599", rows 5, 17, 300 all zeros) and 50 users ("u0".."u49"), d=16
index_root   root/demo   PQ M=4 nbits=6 ip, users as float32, item vectors float32 (rerank works)
             root/plain  same codebooks, no users, no item vectors
client       TestClient over create_app(Settings(index_root=root)), lifespan run (session scope)
root_hashes  sha256 of every file under the root, taken before any request
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pytest
from numpy.typing import NDArray

from vqrec.index import CompressedIndex, Embeddings, build_index, save_index
from vqrec.service.main import create_app
from vqrec.service.settings import Settings
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

with warnings.catch_warnings():
    # starlette 1.x asks for httpx2 in its test client; only httpx is installed (see the report)
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

ZERO_ROWS = (5, 17, 300)
N_ITEMS, N_USERS, D = 600, 50, 16


class SvcData(NamedTuple):
    items: NDArray[np.float32]  # (600, 16), rows ZERO_ROWS all zeros
    users: NDArray[np.float32]  # (50, 16)
    item_ids: list[str]
    user_ids: list[str]
    index: CompressedIndex  # the in-memory "demo" index (the oracle for the HTTP answers)
    plain: CompressedIndex  # the same codes without users or item vectors
    zero_rows: tuple[int, ...] = ZERO_ROWS


def tree_hashes(root: str) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def check_error(r: Any, status: int, code: str, words: tuple[str, ...] = ()) -> dict[str, Any]:
    """The response is ``status`` with the one error shape, ``code``, and every word in the message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "details"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    for w in words:
        assert w in err["message"], (w, err["message"])
    return dict(err)


# helpers as fixtures: tests/service has no __init__.py, so test modules cannot import this file
@pytest.fixture(scope="session")
def assert_error() -> Callable[..., dict[str, Any]]:
    return check_error


@pytest.fixture(scope="session")
def make_client() -> Callable[..., TestClient]:
    def make(settings: Settings, **kwargs: Any) -> TestClient:
        return TestClient(create_app(settings), **kwargs)

    return make


@pytest.fixture
def assert_disk_unchanged(index_root: str, root_hashes: dict[str, str]) -> Callable[[], None]:
    def check() -> None:
        assert tree_hashes(index_root) == root_hashes

    return check


@pytest.fixture(scope="session")
def svc_data() -> SvcData:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((N_ITEMS, D)).astype(np.float32)
    items[list(ZERO_ROWS)] = 0.0
    users = rng.standard_normal((N_USERS, D)).astype(np.float32)
    item_ids = [str(i) for i in range(N_ITEMS)]
    user_ids = [f"u{i}" for i in range(N_USERS)]
    items_emb = Embeddings(ids=item_ids, vectors=items, source="items")
    users_emb = Embeddings(ids=user_ids, vectors=users, source="users")
    cfg = TrainConfig(method="pq", M=4, nbits=6, metric="ip", niter=10, eval_queries=20)
    cb = train(items_emb, cfg, show_progress=False)
    index = build_index(cb, items_emb, users=users_emb, item_vectors="float32", show_progress=False)
    plain = build_index(cb, items_emb, show_progress=False)
    return SvcData(items, users, item_ids, user_ids, index, plain)


@pytest.fixture(scope="session")
def index_root(svc_data: SvcData, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("indexes") / "root"
    save_index(svc_data.index, str(root / "demo"))
    save_index(svc_data.plain, str(root / "plain"))
    return str(root)


@pytest.fixture(scope="session")
def root_hashes(index_root: str) -> dict[str, str]:
    return tree_hashes(index_root)


@pytest.fixture(scope="session")
def client(index_root: str, root_hashes: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(index_root=index_root))) as c:
        yield c


@pytest.fixture(scope="session")
def broken_root(index_root: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """root/good (a copy of demo) next to root/broken (the same, with codes.npy truncated)."""
    root = tmp_path_factory.mktemp("broken") / "root"
    shutil.copytree(os.path.join(index_root, "demo"), root / "good")
    shutil.copytree(os.path.join(index_root, "demo"), root / "broken")
    codes = root / "broken" / "codes.npy"
    codes.write_bytes(codes.read_bytes()[:-100])
    return str(root)
