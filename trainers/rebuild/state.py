"""The rebuild's work directory and lock: ``{root}/{name}/.rebuild/state.json`` (the completed steps and
the fingerprint of the inputs), the crash points of the test hook, ``{root}/{name}/.rebuild.lock`` and the
cleanup of interrupted store stagings."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from vqrec.index.errors import RebuildError

from .codes import EXIT_BUSY
from .config import RebuildConfig

logger = logging.getLogger(__name__)

CRASH_ENV = "VQREC_REBUILD_CRASH_AFTER"
WORK_DIR = ".rebuild"
STATE = "state.json"
STEPS = ("train", "build", "publish", "activate")
LOCK = ".rebuild.lock"


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(work: str) -> dict[str, Any] | None:
    """The recorded state of the work directory, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(work, STATE), encoding="utf-8") as f:
            state = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("steps"), dict) else None


def write_state(work: str, state: dict[str, Any]) -> None:
    write_json(os.path.join(work, STATE), state)


def record_step(work: str, state: dict[str, Any], step: str, info: dict[str, Any]) -> None:
    """Record ``step`` as completed (with ``info``), then the crash point of that name."""
    state["steps"][step] = info
    write_state(work, state)
    crash_hook(step)


def crash_hook(step: str) -> None:
    """The test hook: ``VQREC_REBUILD_CRASH_AFTER=<step>`` ends the process here with 137, as kill -9."""
    if os.environ.get(CRASH_ENV) == step:
        logger.warning("%s=%s: exiting with 137 (test hook)", CRASH_ENV, step)
        os._exit(137)


def fingerprint(cfg: RebuildConfig, items: Any, users: Any) -> str:
    """The inputs a recorded state belongs to: embeddings, trainer config, drift threshold."""
    h = hashlib.sha256()
    h.update(items.fingerprint().encode())
    h.update((users.fingerprint() if users is not None else "-").encode())
    h.update(json.dumps(cfg.train, sort_keys=True).encode())
    h.update(repr(cfg.max_relative_mse_increase).encode())
    return h.hexdigest()


@contextlib.contextmanager
def rebuild_lock(root: str, name: str) -> Iterator[None]:
    """Hold ``{root}/{name}/.rebuild.lock`` (flock, released by the kernel when the process dies, kill -9
    included) or raise RebuildError(EXIT_BUSY) naming the pid that holds it."""
    from vqrec.index.store import IndexStore

    d = IndexStore(root).name_dir(name)  # validates the name: the lock never lands outside the root
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise RebuildError(
                f"another rebuild of {name!r} is running (pid {holder}; lock {path}); nothing done.", EXIT_BUSY
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
