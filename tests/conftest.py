"""Shared test data: small, seeded, recommender-like embeddings; and faiss on one thread.

    recsys_arrays(n, d, nq) -> (xb (n, d) float32, xq (nq, d) float32, zero_rows (n_zero,) int64)

Items are clustered unit directions times log-normal norms (item norms vary with popularity, as in
trained MF / two-tower models), with a few all-zero rows (ALS gives those to items without
interactions); queries are noisy cluster centres.
"""

from __future__ import annotations

import os

# faiss's OpenMP threads spin-wait by default; on a 2-core box shared with the test's own threads that
# made training 5-10x slower (bench/ measured it). Set before faiss (libgomp) is first loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib
import datetime
import hashlib
import signal
import socket
import subprocess
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from typing import NamedTuple

import faiss
import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from vqrec.index import Embeddings

SEED = 1234


def pq_index_factory(
    *, seed: int, n_items: int = 300, d: int = 8, n_users: int = 0, zero_rows: tuple[int, ...] = ()
) -> Callable[[int], object]:
    """``make(n)``: a small PQ (M=2, 4 bits, ip) index over the first ``n`` of ``n_items`` random items, with
    ``n_users`` random users when > 0; the codebooks are trained once. Distinct n give distinct content (and
    index_version): what store, reload and publish tests need."""
    from vqrec.index import build_index
    from vqrec.trainers.config import TrainConfig
    from vqrec.trainers.quantizers import train

    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, d)).astype(np.float32)
    items[list(zero_rows)] = 0.0
    ids = [f"i{i}" for i in range(n_items)]
    users = None
    if n_users:
        uvec = rng.standard_normal((n_users, d)).astype(np.float32)
        users = Embeddings(ids=[f"u{i}" for i in range(n_users)], vectors=uvec, source="users")
    cb = train(
        Embeddings(ids=ids, vectors=items, source="items"),
        TrainConfig(method="pq", M=2, nbits=4, metric="ip", niter=5, eval_queries=10),
        show_progress=False,
    )
    return lambda n: build_index(
        cb, Embeddings(ids=ids[:n], vectors=items[:n], source="items"), users=users, show_progress=False
    )


def recsys_arrays(
    n: int = 2000, d: int = 32, nq: int = 100, *, n_topics: int = 20, n_zero: int = 5, seed: int = SEED
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
    """(xb, xq, zero_rows): clustered unit directions x log-normal norms, noisy-centre queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_topics, d))
    xb = centres[rng.integers(0, n_topics, n)] + 0.6 * rng.standard_normal((n, d))
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xb *= rng.lognormal(0.0, 0.5, n)[:, None]
    zero_rows = np.sort(rng.choice(n, n_zero, replace=False)).astype(np.int64)
    xb[zero_rows] = 0.0
    xq = centres[rng.integers(0, n_topics, nq)] + 0.8 * rng.standard_normal((nq, d))
    return xb.astype(np.float32), xq.astype(np.float32), zero_rows


def as_embeddings(x: np.ndarray, prefix: str = "i", source: str = "synthetic") -> Embeddings:
    """Embeddings with ids ``prefix0 .. prefix{n-1}`` (no file behind them)."""
    return Embeddings(
        ids=[f"{prefix}{i}" for i in range(len(x))], vectors=np.ascontiguousarray(x, np.float32), source=source
    )


class Recsys(NamedTuple):
    xb: NDArray[np.float32]  # (2000, 32) items
    xq: NDArray[np.float32]  # (100, 32) queries (users)
    zero_rows: NDArray[np.int64]  # rows of xb that are all zeros
    items: Embeddings  # ids i0..i1999
    users: Embeddings  # ids u0..u99


@pytest.fixture(scope="session", autouse=True)
def _faiss_single_thread() -> Iterator[None]:
    """faiss on one OpenMP thread: test data is tiny, and OpenMP spin-waiting makes 2-thread k-means
    5-10x slower whenever the cores are shared (CI runners, parallel jobs)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``save_index``'s clock moves one minute per call, so versions saved in a test order by created_at."""
    t = [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)]

    def now(tz: object = None) -> datetime.datetime:
        t[0] += datetime.timedelta(minutes=1)
        return t[0]

    monkeypatch.setattr(
        "vqrec.index.artifact.datetime",
        types.SimpleNamespace(UTC=datetime.UTC, datetime=types.SimpleNamespace(now=now)),
    )


@pytest.fixture(scope="session")
def tree_digest() -> Callable[[str], dict[str, str]]:
    """``tree_digest(root)``: relative path -> sha256 of every file under ``root`` (to assert nothing changed)."""

    def digest(root: str) -> dict[str, str]:
        out = {}
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
        return out

    return digest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def embed():  # type: ignore[no-untyped-def]
    """``embed(x, prefix="i", source="synthetic") -> Embeddings`` (tests cannot import conftest)."""
    return as_embeddings


@pytest.fixture(scope="session")
def recsys() -> Recsys:
    """The default synthetic set: 2000 items, d=32, 100 queries, 5 all-zero items (read-only)."""
    xb, xq, zero_rows = recsys_arrays()
    for a in (xb, xq, zero_rows):
        a.setflags(write=False)
    return Recsys(xb, xq, zero_rows, as_embeddings(xb, "i", "items.npy"), as_embeddings(xq, "u", "users.npy"))


# ---- servers on loopback -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(
    argv: list[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Iterator[str]:
    """Start ``argv`` (a server that listens on 127.0.0.1:``port``), wait (bounded) for ``/readyz`` 200,
    yield its base URL, and always stop it (its whole process group)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"{argv} exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{argv} not ready after {timeout}s")
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture(scope="session")
def server() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with server(argv, port, env=..., cwd=..., timeout=...) as base_url:`` (see _server)."""
    return _server
