"""The loaded indexes by name, and the ones that failed to load (with why).

Discovery: every immediate, non-hidden subdirectory of ``index_root`` holding a ``manifest.json`` is
an index named after the subdirectory. When ``index_root`` is itself an index artifact (it holds a
``manifest.json``) it is the one index, named after its directory. Hidden directories are skipped:
``save_index`` publishes through ``.<name>.tmp-*`` siblings.

The versioned store layout (index/store.py) is understood too: a subdirectory ``{name}`` holding an
``ACTIVE`` alias serves ``{name}/versions/{active version}`` (recorded in ``Registry.versions``), and
so does ``index_root`` itself when it holds the alias. An alias that is unreadable or points at a
missing or corrupt version is a load failure of that index like any other. A store name with
versions but no alias yet is not served.

A failed load never stops the service: the error is logged with the path and kept here, so
``/readyz`` can report it and queries on that name answer 503.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from index import CompressedIndex, VqrecError, load_index
from index.artifact_io import MANIFEST
from index.store import ALIAS, IndexStore

logger = logging.getLogger(__name__)


@dataclass
class Registry:
    """``indexes``: name -> loaded index; ``failed``: name -> error message; ``paths``: name -> directory."""

    indexes: dict[str, CompressedIndex] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # name -> active version (store layout only)
    stores: dict[str, str] = field(default_factory=dict)  # name -> store root (store layout only)
    loaded_at: dict[str, float] = field(default_factory=dict)  # name -> time.time() of its (re)load
    loaded: bool = False  # the lifespan has run the loads
    problem: str | None = None  # a root-level problem (missing root, nothing found)

    @property
    def names(self) -> list[str]:
        return sorted(self.paths)

    @property
    def ready(self) -> bool:
        return self.loaded and self.problem is None and not self.failed and bool(self.indexes)

    def not_ready_reason(self) -> str:
        if not self.loaded:
            return "indexes are not loaded yet."
        if self.problem is not None:
            return self.problem
        parts = [f"index {name!r} failed to load: {msg}" for name, msg in sorted(self.failed.items())]
        return "; ".join(parts) or "no index loaded."


@dataclass
class Entry:
    """A discovered index: its artifact directory, and for the store layout the active version and the
    store root; ``error`` when the alias cannot be resolved (``path`` is then the name directory)."""

    path: str
    version: str | None = None
    store_root: str | None = None
    error: str | None = None


def _resolve_alias(name_dir: str) -> Entry:
    store = IndexStore(os.path.dirname(name_dir))
    name = os.path.basename(name_dir)
    try:
        path = store.path(name)
    except VqrecError as e:
        return Entry(path=name_dir, store_root=store.root, error=str(e))
    return Entry(path=path, version=os.path.basename(path), store_root=store.root)


def _entry(path: str) -> Entry | None:
    if os.path.exists(os.path.join(path, MANIFEST)):
        return Entry(path=path)
    if os.path.isfile(os.path.join(path, ALIAS)):
        return _resolve_alias(path)
    return None


def discover_entries(index_root: str, names: list[str] | None = None) -> tuple[dict[str, Entry], str | None]:
    """(name -> Entry, root-level problem or None) for ``index_root``; see the module docstring."""
    root = os.path.abspath(index_root)
    if not os.path.isdir(root):
        return {}, f"index_root {root} is not a directory."
    top = _entry(root)
    if top is not None:
        found = {os.path.basename(root): top}
    else:
        found = {}
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            e = _entry(entry.path)
            if e is not None:
                found[entry.name] = e
            elif IndexStore.is_store_entry(entry.path):
                logger.warning(
                    "index %r at %s has versions but no %s alias: not served.", entry.name, entry.path, ALIAS
                )
    if names is not None:
        return {name: found.get(name, Entry(path=os.path.join(root, name))) for name in names}, None
    if not found:
        what = f"a directory with {MANIFEST}, or a store name with an {ALIAS} alias"
        return {}, f"no index artifact ({what}) found in {root}."
    return found, None


def discover(index_root: str, names: list[str] | None = None) -> tuple[dict[str, str], str | None]:
    """(name -> artifact directory, root-level problem or None) for ``index_root``.

    Names asked for explicitly are always returned (so a missing one is reported by ``load_index``).
    """
    entries, problem = discover_entries(index_root, names)
    return {name: e.path for name, e in entries.items()}, problem


def load_registry(index_root: str, names: list[str] | None = None, *, verify: bool = True) -> Registry:
    """Discover and load every index; failures are logged with their path and recorded, not raised."""
    entries, problem = discover_entries(index_root, names)
    reg = Registry(paths={name: e.path for name, e in entries.items()}, problem=problem)
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
            # read into memory, not memory-mapped: a file rewritten or truncated on disk after the load
            # must not change (or SIGBUS) what is served. load_index logs path, version, n, d, M, nbits,
            # metric and load time once per index.
            reg.indexes[name] = load_index(path, mmap=False, verify=verify)
            reg.loaded_at[name] = time.time()
        except Exception as e:  # any failure leaves the service up, reporting this index as unavailable
            reg.failed[name] = str(e)
            logger.error("index %r at %s failed to load: %s", name, path, e, exc_info=not isinstance(e, VqrecError))
    reg.loaded = True
    logger.info(
        "serving %d index(es) %s from %s; %d failed", len(reg.indexes), sorted(reg.indexes), index_root, len(reg.failed)
    )
    return reg
