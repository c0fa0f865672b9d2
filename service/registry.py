"""The loaded indexes by name, and the ones that failed to load (with why).

What an index root holds (flat artifacts, store names and their aliases) is found by
``vqrec.index.discovery``; this module loads each entry. A failed load never stops the service: the error is
logged with the path and kept here, so ``/readyz`` can report it and queries on that name answer 503.

Names come and go at runtime (service/reload.py adopts a name published after startup; the alias poller,
service/poller.py, finds new names and notices vanished ones): ``adopt`` records where a new name lives,
``mark_broken`` stops serving a name whose files are gone but whose directory is still there (503, and
``/readyz`` names it), ``forget`` drops a name whose directory was removed (404; ``/readyz`` lists it under
``removed``). Readiness: loaded, the root readable, and no name failed. A root with no index yet is ready
(an empty deployment waiting for its first publish).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from vqrec.index import CompressedIndex, VqrecError, load_index
from vqrec.index.discovery import Entry, discover_entries

logger = logging.getLogger(__name__)

MmapMode = Literal["auto", "always", "never"]


def maps_files(mode: MmapMode, *, store_version: bool) -> bool:
    """Whether an index is memory-mapped rather than read into memory (``VQREC_MMAP``, docs/operations.md).

    ``auto``: a version of the store is mapped (its directory is written once, under a name of its own, and never
    rewritten: ``IndexStore.publish_dir``), so every worker process shares its pages; a flat artifact directory
    is read into memory (it can be overwritten in place, and a file rewritten or truncated under a mapping would
    change what is served, or SIGBUS). ``always`` / ``never``: every index."""
    return mode == "always" or (mode == "auto" and store_version)


@dataclass
class Registry:
    """``indexes``: name -> loaded index; ``failed``: name -> error message; ``paths``: name -> directory."""

    indexes: dict[str, CompressedIndex] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # name -> active version (store layout only)
    stores: dict[str, str] = field(default_factory=dict)  # name -> store root (store layout only)
    loaded_at: dict[str, float] = field(default_factory=dict)  # name -> time.time() of its (re)load
    removed: dict[str, str] = field(default_factory=dict)  # name -> why it is no longer served (gone)
    loaded: bool = False  # the lifespan has run the loads
    problem: str | None = None  # a root-level problem (the root is missing or not a directory)
    mmap: MmapMode = "auto"  # which indexes are memory-mapped (maps_files); reloads follow it too

    @property
    def names(self) -> list[str]:
        return sorted(self.paths)

    @property
    def ready(self) -> bool:
        return self.loaded and self.problem is None and not self.failed

    def not_ready_reason(self) -> str:
        if not self.loaded:
            return "indexes are not loaded yet."
        if self.problem is not None:
            return self.problem
        return "; ".join(f"index {name!r} failed to load: {msg}" for name, msg in sorted(self.failed.items()))

    def adopt(self, name: str, entry: Entry) -> None:
        """Record a name found after startup (not loaded yet: the caller reloads it)."""
        self.paths[name] = entry.path
        if entry.store_root is not None:
            self.stores[name] = entry.store_root
        if entry.error is not None:
            self.failed[name] = entry.error
        self.removed.pop(name, None)

    def mark_broken(self, name: str, reason: str) -> None:
        """Stop serving ``name`` (its files are gone in place): its routes answer 503 and /readyz names it.
        Requests already holding the index finish on it."""
        self.indexes.pop(name, None)
        self.versions.pop(name, None)
        self.failed[name] = reason

    def forget(self, name: str, reason: str) -> None:
        """Drop ``name`` (its directory was removed): its routes answer 404; /readyz lists it as removed."""
        for table in (self.indexes, self.paths, self.versions, self.stores, self.loaded_at, self.failed):
            table.pop(name, None)
        self.removed[name] = reason


def load_registry(
    index_root: str, names: list[str] | None = None, *, verify: bool = True, mmap: MmapMode = "auto"
) -> Registry:
    """Discover and load every index; failures are logged with their path and recorded, not raised."""
    entries, problem = discover_entries(index_root, names)
    reg = Registry(paths={name: e.path for name, e in entries.items()}, problem=problem, mmap=mmap)
    if problem is not None:
        logger.error("%s", problem)
    for name, entry in entries.items():
        path = entry.path
        if entry.store_root is not None:
            reg.stores[name] = entry.store_root
        if entry.error is not None:
            reg.failed[name] = entry.error
            logger.error("index %r failed to load: %s", name, entry.error)
            continue
        if entry.version is not None:
            reg.versions[name] = entry.version
        try:
            # mapped or read into memory: maps_files. load_index logs path, version, n, d, M, nbits, metric and
            # load time once per index.
            mapped = maps_files(mmap, store_version=entry.store_root is not None)
            reg.indexes[name] = load_index(path, mmap=mapped, verify=verify)
            reg.loaded_at[name] = time.time()
        except Exception as e:  # any failure leaves the service up, reporting this index as unavailable
            reg.failed[name] = str(e)
            logger.error("index %r at %s failed to load: %s", name, path, e, exc_info=not isinstance(e, VqrecError))
    reg.loaded = True
    logger.info(
        "serving %d index(es) %s from %s; %d failed", len(reg.indexes), sorted(reg.indexes), index_root, len(reg.failed)
    )
    return reg
