"""What an index root holds: flat index artifacts and names of the versioned store (index/store.py).

Discovery: every immediate, non-hidden subdirectory of ``index_root`` holding a ``manifest.json`` is
an index named after the subdirectory. When ``index_root`` is itself an index artifact (it holds a
``manifest.json``) it is the one index, named after its directory. Hidden directories are skipped:
``save_index`` publishes through ``.<name>.tmp-*`` siblings.

The versioned store layout is understood too: a subdirectory ``{name}`` holding an ``ACTIVE`` alias
serves ``{name}/versions/{active version}`` (``Entry.version``), and so does ``index_root`` itself when it
holds the alias. An alias that is unreadable or points at a missing version is an ``Entry`` with an
``error`` (the service reports it as a load failure of that name). A store name with versions but no
alias yet is not served (logged).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .artifact_io import MANIFEST
from .errors import VqrecError
from .store import ALIAS, IndexStore

logger = logging.getLogger(__name__)


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
