"""The loaded indexes by name, and the ones that failed to load (with why).

Discovery: every immediate, non-hidden subdirectory of ``index_root`` holding a ``manifest.json`` is
an index named after the subdirectory. When ``index_root`` is itself an index artifact (it holds a
``manifest.json``) it is the one index, named after its directory. Hidden directories are skipped:
``save_index`` publishes through ``.<name>.tmp-*`` siblings.

A failed load never stops the service: the error is logged with the path and kept here, so
``/readyz`` can report it and queries on that name answer 503.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from index import CompressedIndex, VqrecError, load_index
from index.artifact_io import MANIFEST

logger = logging.getLogger(__name__)


@dataclass
class Registry:
    """``indexes``: name -> loaded index; ``failed``: name -> error message; ``paths``: name -> directory."""

    indexes: dict[str, CompressedIndex] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
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


def discover(index_root: str, names: list[str] | None = None) -> tuple[dict[str, str], str | None]:
    """(name -> artifact directory, root-level problem or None) for ``index_root``.

    Names asked for explicitly are always returned (so a missing one is reported by ``load_index``).
    """
    root = os.path.abspath(index_root)
    if not os.path.isdir(root):
        return {}, f"index_root {root} is not a directory."
    if os.path.exists(os.path.join(root, MANIFEST)):
        found = {os.path.basename(root): root}
    else:
        found = {
            entry.name: entry.path
            for entry in sorted(os.scandir(root), key=lambda e: e.name)
            if entry.is_dir() and not entry.name.startswith(".") and os.path.exists(os.path.join(entry.path, MANIFEST))
        }
    if names is not None:
        return {name: found.get(name, os.path.join(root, name)) for name in names}, None
    if not found:
        return {}, f"no index artifact (a directory with {MANIFEST}) found in {root}."
    return found, None


def load_registry(index_root: str, names: list[str] | None = None, *, verify: bool = True) -> Registry:
    """Discover and load every index; failures are logged with their path and recorded, not raised."""
    paths, problem = discover(index_root, names)
    reg = Registry(paths=paths, problem=problem)
    if problem is not None:
        logger.error("%s", problem)
    for name, path in paths.items():
        try:
            # read into memory, not memory-mapped: a file rewritten or truncated on disk after the load
            # must not change (or SIGBUS) what is served. load_index logs path, version, n, d, M, nbits,
            # metric and load time once per index.
            reg.indexes[name] = load_index(path, mmap=False, verify=verify)
        except Exception as e:  # any failure leaves the service up, reporting this index as unavailable
            reg.failed[name] = str(e)
            logger.error("index %r at %s failed to load: %s", name, path, e, exc_info=not isinstance(e, VqrecError))
    reg.loaded = True
    logger.info(
        "serving %d index(es) %s from %s; %d failed", len(reg.indexes), sorted(reg.indexes), index_root, len(reg.failed)
    )
    return reg
