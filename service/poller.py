"""Alias polling (``VQREC_POLL_SECONDS`` > 0): the service follows each store index's ACTIVE alias, and the
names of the index root, by itself.

The lifespan starts ``AliasPoller`` (an asyncio task) when ``settings.poll_seconds`` > 0. Every interval it
runs one tick in a worker thread (``asyncio.to_thread``: the event loop never waits on a load), which reads
the alias of every store-backed name (``Registry.stores``: names found with an ``ACTIVE`` alias, including
those whose alias could not be resolved at startup) and, when the alias names a new version, reloads through
the admin reload path: ``service.reload.reload_locked`` under the same per-name lock (load, mapped for a
store version under ``VQREC_MMAP=auto``, verify every checksum, replay the self-test probes, atomic swap,
``vqrec_reloads_total{index,outcome}`` and ``vqrec_reload_failures_total{index}``). Flat artifacts are not polled.

The rule: reload when the alias names a version other than the one served, unless that version is the
one whose reload last failed for this name.

- It converges on the alias whatever moved it and in whatever order (``vqrec activate``/``rollback``, a
  rebuild, the admin routes): there is no "last seen" state that two quick moves could fool.
- ``POST /v1/admin/indexes/{name}/reload`` and ``.../rollback`` flip the alias to the version they swap in,
  so after them alias == served and the poller has nothing to do: a manual reload is never undone.
- When a manual reload holds the name's lock, that name is skipped this tick and looked at again next tick;
  alias and served version are read again under the lock.
- A version that fails (missing, checksum, self-test; also the version that failed at startup) is logged
  once at WARNING with the reason, counted once, and not retried by the poller until the alias names
  another version (``POST .../reload`` retries it on demand, e.g. after repairing the files in place).
- It never writes the alias (``activate=False``): if the alias moves again during a load, the next tick
  follows it. A successful poll reload logs ``alias moved: NAME OLD -> NEW`` at INFO.
- Names come and go (unless ``VQREC_INDEXES`` fixes them): each tick first looks at the index root. A name
  published there since (flat artifact or store name with an alias) is loaded through the same path and
  served (``new index NAME served`` at INFO). A served name whose directory is still there but whose
  ``manifest.json`` (flat) or ``ACTIVE`` alias (store) is gone is broken in place: it answers 503 and
  ``/readyz`` names it, until the file is back (then it is reloaded). A name whose directory was removed is
  forgotten: 404, listed under ``removed`` in ``/readyz``. Each is logged once at WARNING; requests in
  flight finish on the index they hold.

``stop()`` (lifespan shutdown) wakes the sleeping task at once; a tick in progress gets up to
``STOP_TIMEOUT`` seconds to finish the name it is loading, then the task is cancelled (the worker thread
finishes its load into the registry being discarded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from vqrec.index import VqrecError
from vqrec.index.discovery import discover_entries, discover_one, name_status
from vqrec.index.store import IndexStore

from .errors import ReloadFailedError
from .metrics import record_reload
from .registry import Registry
from .reload import lock_for, reload_locked

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds shutdown waits for a poll load in progress


class AliasPoller:
    """Follows the ACTIVE alias of every store-backed index of ``app.state.registry`` (see the module doc)."""

    def __init__(self, app: FastAPI, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"poll interval must be > 0, got {interval!r}.")
        self.app = app
        self.interval = float(interval)
        self.failed: dict[str, str] = {}  # name -> the alias version whose reload failed (not retried)
        self._alias_errors: dict[str, str] = {}  # name -> the alias read error last logged (logged once)
        self._broken: dict[str, str] = {}  # name -> why it is broken in place (logged once; reloaded when back)
        self.ticks = 0  # ticks completed (for tests and diagnostics)
        self._halt = threading.Event()  # read by the worker thread between names
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle (event loop) ----------------------------------------------------------------
    def start(self) -> None:
        """Remember the versions that failed at startup, and start the task (call in the loop)."""
        registry: Registry = self.app.state.registry
        for name in sorted(registry.stores):
            version = registry.versions.get(name)
            if name in registry.failed and version is not None:
                self.failed[name] = version
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="vqrec-alias-poller")
        logger.info("polling the alias of %d store index(es) every %g s", len(registry.stores), self.interval)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop the task: at once when it sleeps, else after the current name (up to STOP_TIMEOUT seconds)."""
        self._halt.set()
        if self._wake is not None:
            self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=STOP_TIMEOUT)
        except TimeoutError:
            logger.warning("alias poller still loading at shutdown: abandoning the load")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._halt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            if self._halt.is_set():
                break
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # never let one bad tick end the polling
                logger.exception("alias poll tick failed")
            self.ticks += 1

    # ---- one tick (worker thread) --------------------------------------------------------------
    def tick(self) -> None:
        """Look at the root's names, then at every store-backed name once (blocking: run it in a worker
        thread)."""
        registry: Registry = self.app.state.registry
        self._follow_names(registry)
        for name in sorted(registry.stores):
            if self._halt.is_set():
                return
            if name in registry.stores:  # not forgotten meanwhile
                self._check(registry, name)

    # ---- names that appear and disappear -------------------------------------------------------
    def _follow_names(self, registry: Registry) -> None:
        settings = self.app.state.settings
        if settings.indexes is not None:  # a fixed list of names: nothing comes or goes
            return
        root = settings.index_root
        found, problem = discover_entries(root, warn=False)
        if problem is not None:  # the root itself is unreadable: leave the served names as they are
            return
        healthy = {name for name, entry in found.items() if entry.error is None}
        for name in sorted(registry.paths):
            # gone, or a flat artifact without its manifest (a store alias that cannot be read is the alias
            # check's business: the version served stays, see _check)
            if name not in found or (name not in healthy and name not in registry.stores):
                self._vanished(registry, root, name)
        for name in sorted((set(found) - set(registry.paths)) | (set(self._broken) & healthy)):
            if self._halt.is_set():
                return
            self._appeared(registry, root, name)

    def _vanished(self, registry: Registry, root: str, name: str) -> None:
        status = name_status(root, name)
        if status is None or self._broken.get(name) == status:
            return  # back already, or broken and said so
        lock = lock_for(self.app, name)
        if not lock.acquire(blocking=False):
            return  # a reload of it runs: look again next tick
        try:
            if status == "gone":
                registry.forget(name, f"its directory was removed from {root}")
                self._broken.pop(name, None)
                logger.warning("index %r was removed from %s: no longer served", name, root)
            else:
                registry.mark_broken(name, f"no longer an index: {status}")
                self._broken[name] = status
                logger.warning("index %r is broken in place (%s): answering 503 until it is repaired", name, status)
        finally:
            lock.release()

    def _appeared(self, registry: Registry, root: str, name: str) -> None:
        """Load a name published since startup, or one broken in place whose files are back."""
        lock = lock_for(self.app, name)
        if not lock.acquire(blocking=False):
            return
        try:
            entry = discover_one(root, name)
            if entry is None:
                return
            registry.adopt(name, entry)
            self._broken.pop(name, None)
            if entry.error is not None:
                logger.warning("index %r found at %s cannot be served: %s", name, entry.path, entry.error)
                return
            try:
                out = reload_locked(self.app, registry, name, None, rollback=False, activate=False)
            except Exception as e:  # refused (ReloadFailedError) or unexpected: counted, logged once
                if not isinstance(e, ReloadFailedError):
                    record_reload(self.app, name, False)
                    registry.failed[name] = str(e)
                if entry.version is not None:
                    self.failed[name] = entry.version  # not retried until the alias names another version
                logger.warning("index %r found at %s cannot be served: %s", name, entry.path, e)
                return
            logger.info("new index %r served: %s (%s)", name, out["index_version"], entry.path)
        finally:
            lock.release()

    def _read_alias(self, store: IndexStore, name: str) -> str | None:
        """The alias' version, or None when there is none or it is unreadable (logged once per message)."""
        try:
            version = store.active(name)
        except (VqrecError, OSError) as e:
            message = str(e)
            if self._alias_errors.get(name) != message:
                self._alias_errors[name] = message
                logger.warning("alias poll: the alias of index %r cannot be read: %s", name, message)
            return None
        self._alias_errors.pop(name, None)
        return version

    def _wanted(self, registry: Registry, store: IndexStore, name: str) -> tuple[str | None, str | None]:
        """(the alias version to load, or None when there is nothing to do; the version served)."""
        served = registry.versions.get(name) if name in registry.indexes else None
        alias = self._read_alias(store, name)
        if alias is not None and self.failed.get(name) not in (None, alias):
            del self.failed[name]  # the alias moved away from the refused version: it may be tried again later
        if alias is None or alias == served or alias == self.failed.get(name):
            return None, served
        return alias, served

    def _check(self, registry: Registry, name: str) -> None:
        store = IndexStore(registry.stores[name])
        if self._wanted(registry, store, name)[0] is None:
            return
        lock = lock_for(self.app, name)
        if not lock.acquire(blocking=False):
            logger.debug("alias poll: a reload of index %r is running; looking again next tick", name)
            return
        try:
            # again under the lock: a manual reload may just have moved the alias or swapped the index
            alias, served = self._wanted(registry, store, name)
            if alias is None:
                return
            try:
                out = reload_locked(self.app, registry, name, alias, rollback=False, activate=False)
            except ReloadFailedError as e:
                self.failed[name] = alias
                logger.warning(
                    "alias poll: the alias of index %r names %s, which was refused: %s; not retried until the "
                    "alias names another version",
                    name,
                    alias,
                    e.message,
                )
                return
            except Exception as e:  # unexpected (the admin route would answer 500): counted, logged once
                self.failed[name] = alias
                record_reload(self.app, name, False)
                logger.warning(
                    "alias poll: reloading index %r version %s failed unexpectedly: %s; not retried until the "
                    "alias names another version",
                    name,
                    alias,
                    e,
                    exc_info=True,
                )
                return
            self.failed.pop(name, None)
            logger.info("alias moved: %s %s -> %s", name, served, out["store_version"])
        finally:
            lock.release()
