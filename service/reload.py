"""Hot reload and rollback of one served index: load, verify, self-test, then swap.

Used by the admin routes (``POST /v1/admin/indexes/{name}/reload|rollback``, service/routes/admin.py) and by
the alias poller (service/poller.py), both under the per-name lock of ``lock_for``. A name published into the
index root after startup is adopted by either (``adopt_published``), so it is served without a restart.

A reload loads the target (memory-mapped for a store version, else into memory: ``registry.maps_files``,
``VQREC_MMAP``) with every checksum verified, replays the manifest's self-test probes (index/probes.py; a
sanity check for artifacts built without them), and only then swaps: ``registry.indexes[name] = candidate``
(one dict item assignment). Requests already past the ``get_index`` dependency hold the old CompressedIndex
object and finish on it; later ones get the new one.
With the store layout the target is the ``version`` asked for or the alias's current one (re-read); a version
other than the alias's is then activated (``IndexStore.activate``: the alias flips only after the candidate
passed, so a failed reload never touches it and a restart serves what was swapped in). A flat artifact is
re-read from its directory (``version``, if sent, must be its index_version).

One reload per name at a time (a non-blocking lock: 409 ``reload_in_progress``). Any failure of the
candidate is 422 ``reload_failed``, the old version keeps serving, and ``details`` carries the
``index_version`` still served. The alias poller reloads through ``reload_locked`` with ``activate=False``:
it follows the alias and never writes it. Rollback of a flat index, or of an alias with no previous version,
is 409 ``rollback_unavailable``. Outcomes are counted in ``vqrec_reloads_total{index,outcome}`` (409 / 404
are not reload attempts and are not counted).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from fastapi import FastAPI

from vqrec.index import CompressedIndex, VqrecError, load_index
from vqrec.index.discovery import discover_one
from vqrec.index.probes import run_probes
from vqrec.index.store import IndexStore

from .errors import ReloadFailedError, ReloadInProgressError, RollbackUnavailableError, UnknownIndexError
from .metrics import record_reload
from .registry import Registry, maps_files

logger = logging.getLogger(__name__)

_LOCKS_GUARD = threading.Lock()


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


def reload_index(app: FastAPI, registry: Registry, name: str, version: str | None, *, rollback: bool) -> dict[str, Any]:
    """The admin routes' reload and rollback: 404 for an unknown name, 409 while another reload of the name
    runs, else ``reload_locked`` under the name's lock (a failure is logged at ERROR and raised)."""
    if name not in registry.paths and not adopt_published(app, registry, name):
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


def adopt_published(app: FastAPI, registry: Registry, name: str) -> bool:
    """Whether ``name`` was published into the index root after startup; if so it is recorded in the
    registry (not loaded yet: the caller reloads it). Never with a fixed list of names (``VQREC_INDEXES``)."""
    settings = getattr(app.state, "settings", None)
    if settings is None or settings.indexes is not None:
        return False
    entry = discover_one(settings.index_root, name)
    if entry is None:
        return False
    registry.adopt(name, entry)
    logger.info("new index %r found at %s", name, entry.path)
    return True


def _refuse(app: FastAPI, registry: Registry, name: str, target: str | None, message: str) -> ReloadFailedError:
    """Count the failure and build the 422 (the caller logs it: ERROR for the admin routes, WARNING once
    per failed version for the poller)."""
    record_reload(app, name, False)
    serving = serving_version(registry, name)
    if serving is None:  # nothing served for this name: /readyz and its routes (503) say why
        registry.failed[name] = message
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
                    raise _refuse(app, registry, name, None, f"no alias at {store.alias_path(name)}")
            path = store.path(name, target)
        except VqrecError as e:
            raise _refuse(app, registry, name, target, str(e)) from None
    # ---- load and verify (every file's size and sha256, shapes), mapped or into memory (registry.maps_files)
    try:
        mapped = maps_files(registry.mmap, store_version=store is not None)
        candidate: CompressedIndex = load_index(path, mmap=mapped, verify=True)
    except Exception as e:  # any load failure: the old version keeps serving
        raise _refuse(app, registry, name, target, str(e)) from None
    expected = target if target is not None else None
    if expected is not None and candidate.version != expected:
        raise _refuse(
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
        raise _refuse(
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
            raise _refuse(app, registry, name, target, f"the alias could not be flipped: {e}") from None
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
