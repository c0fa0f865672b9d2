"""What an index root holds: flat index artifacts and names of the versioned store (index/store.py).

Discovery: every immediate, non-hidden subdirectory of ``index_root`` holding a ``manifest.json`` is
an index named after the subdirectory. When ``index_root`` is itself an index artifact (it holds a
``manifest.json``) it is the one index, named after its directory. Hidden directories are skipped:
``save_index`` publishes through ``.<name>.tmp-*`` siblings.

The versioned store layout is understood too: a subdirectory ``{name}`` holding an ``ACTIVE`` alias
serves ``{name}/versions/{active version}`` (``Entry.version``), and so does ``index_root`` itself when it
holds the alias. An alias that is unreadable or points at a missing version is an ``Entry`` with an
``error`` (the service reports it as a load failure of that name). A store name with versions but no
alias yet is not served (logged). A directory holding index data files (``codes.npy``) but no
``manifest.json`` is a broken artifact (an ``Entry`` with an ``error``), not something to skip silently.

A root with no index at all is not a problem: it is a deployment waiting for its first publish (the service
serves names as they appear; see service/poller.py). ``name_status`` says what became of one name: still an
index, broken in place (its directory is there, its manifest or alias is not), or gone.
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


_DATA_FILE = "codes.npy"  # every index artifact has it (see artifact.py)


def _entry(path: str) -> Entry | None:
    if os.path.exists(os.path.join(path, MANIFEST)):
        return Entry(path=path)
    if os.path.lexists(os.path.join(path, ALIAS)):  # a directory, FIFO or dangling link too: reported, not skipped
        return _resolve_alias(path)
    if os.path.exists(os.path.join(path, _DATA_FILE)):
        return Entry(path=path, error=f"{path} holds index data but no {MANIFEST}: a broken or partial artifact.")
    return None


def _check_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and os.sep not in name and name not in (".", "..")


def discover_one(index_root: str, name: str) -> Entry | None:
    """The Entry of one name under ``index_root`` (None when there is no such index); the root itself when
    it is the one artifact and has that name."""
    root = os.path.abspath(index_root)
    if not _check_name(name) or not os.path.isdir(root):
        return None
    top = _entry(root)
    if top is not None:
        return top if os.path.basename(root) == name else None
    return _entry(os.path.join(root, name))


def name_status(index_root: str, name: str) -> str | None:
    """None while ``name`` is an index under ``index_root``; else why it is not: ``"gone"`` when its directory
    no longer exists, or a sentence naming what is missing in it."""
    root = os.path.abspath(index_root)
    entry = discover_one(root, name)
    if entry is not None:
        return entry.error
    path = os.path.join(root, name)
    if os.path.basename(root) == name and not os.path.isdir(path):
        path = root  # the root was the one artifact
    if not os.path.isdir(path):
        return "gone"
    if IndexStore.is_store_entry(path):
        return f"{os.path.join(path, ALIAS)} is missing: no active version."
    return f"{os.path.join(path, MANIFEST)} is missing."


def discover_entries(
    index_root: str, names: list[str] | None = None, *, warn: bool = True
) -> tuple[dict[str, Entry], str | None]:
    """(name -> Entry, root-level problem or None) for ``index_root``; see the module docstring. ``warn``:
    log the store names that have versions but no alias (off for the poller's repeated looks)."""
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
            elif warn and IndexStore.is_store_entry(entry.path):
                logger.warning(
                    "index %r at %s has versions but no %s alias: not served.", entry.name, entry.path, ALIAS
                )
    if names is not None:
        return {name: found.get(name, Entry(path=os.path.join(root, name))) for name in names}, None
    if not found:
        what = f"a directory with {MANIFEST}, or a store name with an {ALIAS} alias"
        logger.warning("no index artifact (%s) in %s yet: names are served as they are published.", what, root)
    return found, None


def discover(index_root: str, names: list[str] | None = None) -> tuple[dict[str, str], str | None]:
    """(name -> artifact directory, root-level problem or None) for ``index_root``.

    Names asked for explicitly are always returned (so a missing one is reported by ``load_index``).
    """
    entries, problem = discover_entries(index_root, names)
    return {name: e.path for name, e in entries.items()}, problem
