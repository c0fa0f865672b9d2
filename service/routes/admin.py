"""Admin routes (``/v1/admin/...``, admin key): the index list, hot reload and rollback.

    GET  /v1/admin/indexes                   every configured index: path, versions, load time, or why it failed
    POST /v1/admin/indexes/{name}/reload     body optional: {"version": "..."} (store layout)
    POST /v1/admin/indexes/{name}/rollback   the alias's previous version

A reload loads the target into memory (``mmap=False``) with every checksum verified, replays the
manifest's self-test probes (index/probes.py; a sanity check for artifacts built without them), and only
then swaps: ``registry.indexes[name] = candidate`` (one dict item assignment). Requests already past the
``get_index`` dependency hold the old CompressedIndex object and finish on it; later ones get the new one.
With the store layout the target is the body's ``version`` or the alias's current one (re-read); a version
other than the alias's is then activated (``IndexStore.activate``: the alias flips only after the candidate
passed, so a failed reload never touches it and a restart serves what was swapped in). A flat artifact is
re-read from its directory (``version``, if sent, must be its index_version).

One reload per name at a time (a non-blocking lock: 409 ``reload_in_progress``). Any failure of the
candidate is 422 ``reload_failed``, the old version keeps serving, and ``details`` carries the
``index_version`` still served. The alias poller (service/poller.py, ``VQREC_POLL_SECONDS``) reloads through
the same ``reload_locked`` under the same per-name lock (``lock_for``), with ``activate=False``: it follows
the alias and never writes it. Rollback of a flat index, or of an alias with no previous version, is 409
``rollback_unavailable``. Outcomes are counted in ``vqrec_reloads_total{index,outcome}`` (409 / 404 are
not reload attempts and are not counted).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from index import CompressedIndex, VqrecError, load_index
from index.probes import run_probes
from index.store import IndexStore

from ..auth import AdminAuth
from ..deps import RegistryDep
from ..errors import ReloadFailedError, ReloadInProgressError, RollbackUnavailableError, UnknownIndexError
from ..metrics import record_reload
from ..registry import Registry

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAuth])

_LOCKS_GUARD = threading.Lock()


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(default=None, description="store layout: the version to load (default: the alias's)")


def _iso(ts: Any) -> str | None:
    if isinstance(ts, datetime):
        return ts.isoformat(timespec="seconds")
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    return None


@router.get("/indexes", summary="every configured index: path, version, load time, or why it failed")
async def admin_indexes(request: Request, registry: RegistryDep) -> dict[str, Any]:
    """What the registry holds: loaded indexes (path, index_version, store_version for the versioned
    store layout, items, load time) and failed ones (path, error); ``poll_seconds``: the alias poll interval
    (0 = off). ``loaded_at`` is when the index was (re)loaded (per index when the registry records it, else
    when the registry finished loading)."""
    per_index = getattr(registry, "loaded_at", None)
    per_index = per_index if isinstance(per_index, dict) else {}
    fallback = getattr(request.app.state, "registry_loaded_at", None)
    store_versions = getattr(registry, "versions", None)  # store layout: name -> active version directory
    store_versions = store_versions if isinstance(store_versions, dict) else {}
    indexes = [
        {
            "name": name,
            "path": registry.paths.get(name),
            "index_version": index.version,
            "store_version": store_versions.get(name),
            "n_items": len(index),
            "loaded_at": _iso(per_index.get(name, fallback)),
        }
        for name, index in sorted(registry.indexes.items())
    ]
    failed = [
        {"name": name, "path": registry.paths.get(name), "message": msg}
        for name, msg in sorted(registry.failed.items())
    ]
    settings = getattr(request.app.state, "settings", None)
    poll_seconds = getattr(settings, "poll_seconds", 0.0)
    return {"loaded": registry.loaded, "poll_seconds": poll_seconds, "indexes": indexes, "failed": failed}


# ---- reload / rollback ---------------------------------------------------------------------------
def lock_for(app: FastAPI, name: str) -> threading.Lock:
    """The per-name reload lock (shared by the admin routes and the alias poller; never held while waiting)."""
    with _LOCKS_GUARD:
        locks: dict[str, threading.Lock] | None = getattr(app.state, "reload_locks", None)
        if locks is None:
            locks = app.state.reload_locks = {}
        return locks.setdefault(name, threading.Lock())


def serving_version(registry: Registry, name: str) -> str | None:
    """The index_version served for ``name`` (None when it is not loaded)."""
    index = registry.indexes.get(name)
    return None if index is None else index.version


def _reload(request: Request, registry: Registry, name: str, version: str | None, *, rollback: bool) -> dict[str, Any]:
    app = request.app
    if name not in registry.paths:
        raise UnknownIndexError(f"unknown index {name!r}; available: {registry.names}.")
    lock = lock_for(app, name)
    if not lock.acquire(blocking=False):
        raise ReloadInProgressError(f"a reload of index {name!r} is already running; retry when it finishes.")
    try:
        return reload_locked(app, registry, name, version, rollback=rollback)
    except ReloadFailedError as e:
        target = (e.details or {}).get("candidate_version")
        logger.error("%s (target %s)", e.message, target)
        raise
    finally:
        lock.release()


def _fail(app: FastAPI, registry: Registry, name: str, target: str | None, message: str) -> ReloadFailedError:
    """Count the failure and build the 422 (the caller logs it: ERROR for the admin routes, WARNING once
    per failed version for the poller)."""
    record_reload(app, name, False)
    serving = serving_version(registry, name)
    return ReloadFailedError(
        f"reload of index {name!r} failed: {message} (still serving {serving or 'nothing'}).",
        details={"index": name, "index_version": serving, "candidate_version": target},
    )


def reload_locked(
    app: FastAPI, registry: Registry, name: str, version: str | None, *, rollback: bool, activate: bool = True
) -> dict[str, Any]:
    """Load, verify, self-test and swap in ``version`` of ``name`` (see the module docstring); the caller
    holds ``lock_for(app, name)``. ``activate=False`` (the alias poller): never flip the alias, even when
    it moved during the load (the poller sees the move on its next tick). Raises ReloadFailedError (counted
    in the metrics, not logged) or RollbackUnavailableError."""
    t0 = time.perf_counter()
    previous = serving_version(registry, name)
    store_root = registry.stores.get(name)
    store = IndexStore(store_root) if store_root is not None else None
    target = version
    # ---- what to load
    if store is None:
        if rollback:
            raise RollbackUnavailableError(
                f"index {name!r} is a flat artifact at {registry.paths[name]}, not a versioned store name: "
                "nothing to roll back to (publish versions with `vqrec publish`)."
            )
        path = registry.paths[name]
    else:
        try:
            if rollback:
                target = store.previous(name)
                if not target:
                    raise RollbackUnavailableError(
                        f"index {name!r}: the alias {store.alias_path(name)} has no previous version to roll back to."
                    )
            elif target is None:
                target = store.active(name)
                if target is None:
                    raise _fail(app, registry, name, None, f"no alias at {store.alias_path(name)}")
            path = store.path(name, target)
        except VqrecError as e:
            raise _fail(app, registry, name, target, str(e)) from None
    # ---- load and verify (every file's size and sha256, shapes), into memory
    try:
        candidate: CompressedIndex = load_index(path, mmap=False, verify=True)
    except Exception as e:  # any load failure: the old version keeps serving
        raise _fail(app, registry, name, target, str(e)) from None
    expected = target if target is not None else None
    if expected is not None and candidate.version != expected:
        raise _fail(
            app,
            registry,
            name,
            target,
            f"{path}: manifest index_version {candidate.version!r} does not match the requested {expected!r}",
        )
    # ---- self-test
    self_test = run_probes(candidate)
    if self_test["failures"]:
        shown = "; ".join(self_test["failures"][:3])
        raise _fail(
            app,
            registry,
            name,
            candidate.version,
            f"self-test failed ({self_test['passed']}/{self_test['probes']} probes passed): {shown}",
        )
    # ---- flip the alias (store layout, a version other than the active one), then swap
    alias_changed = False
    if store is not None and target is not None and activate:
        try:
            if store.active(name) != target:
                store.activate(name, target)
                alias_changed = True
        except VqrecError as e:
            raise _fail(app, registry, name, target, f"the alias could not be flipped: {e}") from None
    registry.indexes[name] = candidate  # the swap: one atomic dict item assignment
    registry.paths[name] = os.path.abspath(path)
    if target is not None and store is not None:
        registry.versions[name] = target
    registry.loaded_at[name] = time.time()
    registry.failed.pop(name, None)
    record_reload(app, name, True)
    took_ms = round((time.perf_counter() - t0) * 1000, 3)
    logger.info(
        "index %r %s: %s -> %s (self-test %s %d/%d) in %.1f ms",
        name,
        "rolled back" if rollback else "reloaded",
        previous,
        candidate.version,
        self_test["mode"],
        self_test["passed"],
        self_test["probes"],
        took_ms,
    )
    return {
        "index": name,
        "previous_version": previous,
        "index_version": candidate.version,
        "store_version": registry.versions.get(name) if store is not None else None,
        "alias_changed": alias_changed,
        "self_test": {
            "mode": self_test["mode"],
            "probes": self_test["probes"],
            "passed": self_test["passed"],
        },
        "took_ms": took_ms,
    }


@router.post(
    "/indexes/{name}/reload",
    summary="load, verify and self-test a version, then swap it in atomically",
    responses={
        404: {"description": "unknown index"},
        409: {"description": "a reload of this index is running"},
        422: {"description": "the candidate failed to load, verify or self-test; the old version serves"},
    },
)
def reload_index(
    name: str, request: Request, registry: RegistryDep, body: ReloadRequest | None = None
) -> dict[str, Any]:
    """Sync on purpose: loading blocks, so it runs in the thread pool while queries keep being answered."""
    return _reload(request, registry, name, body.version if body is not None else None, rollback=False)


@router.post(
    "/indexes/{name}/rollback",
    summary="reload the alias's previous version (same checks), flipping the alias back to it",
    responses={
        404: {"description": "unknown index"},
        409: {"description": "reload running, or nothing to roll back"},
        422: {"description": "the previous version failed to load, verify or self-test"},
    },
)
def rollback_index(name: str, request: Request, registry: RegistryDep) -> dict[str, Any]:
    return _reload(request, registry, name, None, rollback=True)
