"""A versioned index store: immutable index artifacts per name, and an atomically flipped alias.

    {root}/{name}/versions/{version}/   an index artifact (as ``save_index`` writes it); the directory
                                        name is the manifest's ``index_version``, never rewritten (its files
                                        are made read-only: the service memory-maps them, VQREC_MMAP)
    {root}/{name}/ACTIVE                the alias: JSON {"version", "previous", "updated_at"}
    {root}/{name}/.lock                 serializes writers (publish / activate / rollback / prune)

Publishing writes a version under a hidden staging name and renames it into ``versions/`` (readers
see all of a version or none of it) and never touches the alias. ``activate`` checks the version
loads and verifies (format, sizes, sha256, shapes), then replaces ACTIVE with a temporary file from
the same directory (write, fsync, ``os.replace``, fsync the directory): a reader sees the old alias
or the new one, never half of one. ``rollback`` flips to the alias's ``previous``. ``prune`` removes
the oldest versions beyond a count, never the active or previous one.

Versions are ordered by the manifest's ``created_at``, then by version id (which starts with the
same timestamp); newest first.

Faults. An alias that is not one (not UTF-8, not a JSON object, a field of the wrong type, a version that
is not a version id, a directory, a FIFO, a dangling link, larger than 1 MiB; index/alias.py) is
``ArtifactCorrupt`` naming the file and the repair; it affects its name only, and ``activate`` replaces it
(the previous version is then unknown; a directory in its place is moved aside, not deleted). A writer
killed with SIGKILL leaves ``versions/.publish-*`` (or ``.trash-*``): every writer of the name removes them
once it holds the name's lock (a live publish holds that lock while it stages, so what is found then is a
leftover), and so does ``clean_stagings``. Publishing a version that is already stored with the same
content (index_version and every file's sha256 and size) is not an error (``publish_dir_status`` says it
was already there); the same version id with other content is.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .alias import ALIAS, STORE_ID, fsync_dir, read_alias, write_alias
from .artifact import READABLE_VERSIONS, load_index, save_index
from .artifact_io import MANIFEST, read_manifest
from .errors import ArtifactCorrupt, ArtifactNotFound, ConfigError, StoreError, VqrecError, echo
from .index import CompressedIndex

logger = logging.getLogger(__name__)

VERSIONS = "versions"
_LOCK = ".lock"
_STAGING_PREFIXES = (".publish-", ".trash-")  # hidden work directories of publish / _delete under versions/


@dataclass
class VersionInfo:
    """One stored version, as listed by ``IndexStore.versions`` (``error`` set when its manifest is unreadable)."""

    version: str
    path: str
    created_at: str | None = None
    n_items: int | None = None
    n_users: int | None = None
    method: str | None = None
    metric: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    previous: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not STORE_ID.match(value):
        raise ConfigError(
            f"invalid {kind} {echo(value)}: use letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    return value


def _file_sums(manifest: dict[str, Any]) -> dict[str, Any]:
    """file name -> (sha256, bytes) as a manifest lists them."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return {}
    return {n: (m.get("sha256"), m.get("bytes")) if isinstance(m, dict) else m for n, m in files.items()}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _method(m: dict[str, Any]) -> str | None:
    method = m.get("method")
    if not isinstance(method, dict):
        return None
    return f"{method.get('kind')} M={method.get('M')} nbits={method.get('nbits')}"


def evaluation_summary(evaluation: Any) -> dict[str, Any]:
    """The headline figures of a manifest's evaluation report (empty when there is none)."""
    if not isinstance(evaluation, dict):
        return {}
    out: dict[str, Any] = {}
    for key, label in (
        ("user_to_item", "user_to_item_recall@10"),
        ("user_to_item_rerank", "user_to_item_rerank_recall@10"),
        ("item_to_item", "item_to_item_recall@10"),
    ):
        section = evaluation.get(key)
        if isinstance(section, dict) and "recall@10" in section:
            out[label] = section["recall@10"]
    return out


class IndexStore:
    """The versioned store under ``root``. Readers need no lock; writers take ``{root}/{name}/.lock``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    # ---- layout -------------------------------------------------------------------------------
    def name_dir(self, name: str) -> str:
        return os.path.join(self.root, _check_name("index name", name))

    def versions_dir(self, name: str) -> str:
        return os.path.join(self.name_dir(name), VERSIONS)

    def alias_path(self, name: str) -> str:
        return os.path.join(self.name_dir(name), ALIAS)

    def version_dir(self, name: str, version: str) -> str:
        return os.path.join(self.versions_dir(name), _check_name("version", version))

    @staticmethod
    def is_store_entry(path: str) -> bool:
        """``path`` is a name directory of the store layout (it has an alias or a versions/ directory)."""
        return os.path.isfile(os.path.join(path, ALIAS)) or os.path.isdir(os.path.join(path, VERSIONS))

    # ---- reading ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not os.path.isdir(self.root):
            return []
        return sorted(
            e.name
            for e in os.scandir(self.root)
            if e.is_dir() and not e.name.startswith(".") and STORE_ID.match(e.name) and self.is_store_entry(e.path)
        )

    def read_alias(self, name: str) -> dict[str, Any] | None:
        """The alias as stored, or None when ``name`` has none; anything else than a well-formed alias is
        ArtifactCorrupt naming the file (index/alias.py)."""
        return read_alias(self.alias_path(name), name)

    def active(self, name: str) -> str | None:
        alias = self.read_alias(name)
        return None if alias is None else str(alias["version"])

    def previous(self, name: str) -> str | None:
        alias = self.read_alias(name)
        return None if alias is None else alias.get("previous")

    def _version_ids(self, name: str) -> list[str]:
        vdir = self.versions_dir(name)
        if not os.path.isdir(vdir):
            return []
        return [
            e.name for e in os.scandir(vdir) if e.is_dir() and not e.name.startswith(".") and STORE_ID.match(e.name)
        ]

    def versions(self, name: str) -> list[VersionInfo]:
        """Every stored version of ``name``, newest first (hidden staging/trash directories skipped)."""
        if not os.path.isdir(self.name_dir(name)):
            raise ArtifactNotFound(f"no index named {name!r} in the store at {self.root}.")
        try:
            alias = self.read_alias(name) or {}
        except ArtifactCorrupt:
            alias = {}
        infos = []
        for v in self._version_ids(name):
            path = self.version_dir(name, v)
            info = VersionInfo(
                version=v, path=path, active=alias.get("version") == v, previous=alias.get("previous") == v
            )
            try:
                m = read_manifest(path, artifact="index", versions=READABLE_VERSIONS)
                info.created_at = m.get("created_at")
                info.n_items = m.get("n_items")
                info.n_users = m.get("n_users")
                info.method = _method(m)
                info.metric = m.get("metric")
                info.evaluation = evaluation_summary(m.get("evaluation"))
            except VqrecError as e:
                info.error = str(e)
            infos.append(info)
        infos.sort(key=lambda i: (i.created_at or "", i.version), reverse=True)
        return infos

    def path(self, name: str, version: str | None = None) -> str:
        """The artifact directory of ``version`` (the active one when None)."""
        if version is None:
            alias = self.read_alias(name)
            if alias is None:
                raise ArtifactNotFound(
                    f"index {name!r} has no active version: no alias at {self.alias_path(name)} "
                    "(activate one with `vqrec activate`)."
                )
            version = str(alias["version"])
            p = self.version_dir(name, version)
            if not os.path.isdir(p):
                raise ArtifactNotFound(
                    f"index {name!r}: the alias {self.alias_path(name)} points at version {version!r}, "
                    f"but {p} does not exist."
                )
            return p
        p = self.version_dir(name, version)
        if not os.path.isdir(p):
            raise ArtifactNotFound(f"index {name!r} has no version {version!r} ({p} does not exist).")
        return p

    # ---- writing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        d = self.name_dir(name)
        os.makedirs(d, exist_ok=True)
        fd = os.open(os.path.join(d, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        """Hold the name's lock, and first remove what killed writers left (see ``clean_stagings``)."""
        with self._locked(name):
            self._clean_stagings_locked(name)
            yield

    def clean_stagings(self, name: str) -> list[str]:
        """Remove the leftovers of interrupted writes of ``name`` (``versions/.publish-*`` and ``.trash-*``
        directories); returns their names. Waits for the name's lock: a publish still running holds it while
        it stages, so its staging is never taken for a leftover."""
        if not os.path.isdir(self.versions_dir(name)):
            return []
        with self._locked(name):
            return self._clean_stagings_locked(name)

    def _clean_stagings_locked(self, name: str) -> list[str]:
        vdir = self.versions_dir(name)
        try:
            entries = [e for e in os.scandir(vdir) if e.name.startswith(_STAGING_PREFIXES)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        removed = []
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            shutil.rmtree(e.path, ignore_errors=True)
            if os.path.lexists(e.path):
                logger.warning("index %r: could not remove %s, left by an interrupted store write", name, e.path)
            else:
                removed.append(e.name)
        if removed:
            logger.warning(
                "index %r: removed %d leftover(s) of interrupted store writes in %s: %s",
                name,
                len(removed),
                vdir,
                ", ".join(sorted(removed)),
            )
        return removed

    def _move_in(self, name: str, staged: str, version: str) -> str:
        """Rename the staged artifact to versions/{version}; the staging directory is removed on failure."""
        try:
            final = self.version_dir(name, version)
            if os.path.lexists(final):
                raise StoreError(f"index {name!r} already has version {version!r} ({final}); nothing published.")
            for f in os.listdir(staged):  # read-only: a version is never rewritten (servers map its files)
                p = os.path.join(staged, f)
                os.chmod(p, os.stat(p).st_mode & 0o7555)
            os.rename(staged, final)
            fsync_dir(os.path.dirname(final))
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return final

    def publish(self, index: CompressedIndex, name: str, *, evaluation: dict[str, Any] | None = None) -> str:
        """Save ``index`` as a new version of ``name`` (atomically); returns the version id. The alias
        is not touched."""
        with self._writing(name):
            vdir = self.versions_dir(name)
            os.makedirs(vdir, exist_ok=True)
            holder = tempfile.mkdtemp(prefix=".publish-", dir=vdir)
            try:
                staged = os.path.join(holder, "a")
                manifest = save_index(index, staged, evaluation=evaluation)
                version = _check_name("version", str(manifest["index_version"]))
                final = self._move_in(name, staged, version)
            finally:
                shutil.rmtree(holder, ignore_errors=True)
            index.path = final
            return version

    def publish_dir(self, src: str, name: str, *, on_file: Callable[[str], None] | None = None) -> str:
        """Copy the index artifact at ``src`` in as a new version (its ``index_version`` kept), verifying
        the copy (format, sizes, sha256, shapes) before it appears; returns the version id.
        ``on_file(file name)`` is called after each file is copied into the staging directory (progress).
        A version already stored with the same content is not copied again (see ``publish_dir_status``)."""
        return self.publish_dir_status(src, name, on_file=on_file)[0]

    def publish_dir_status(
        self, src: str, name: str, *, on_file: Callable[[str], None] | None = None
    ) -> tuple[str, bool]:
        """``publish_dir``, returning (version id, published now). When the store already holds that version
        with the same content (index_version, and every file's sha256 and size in the manifests) and it
        verifies, nothing is copied and the second item is False (a rerun after a kill is not an error);
        the same version id with other content, or a stored copy that does not verify, is StoreError."""
        manifest = read_manifest(src, artifact="index", versions=READABLE_VERSIONS)
        version = _check_name("version", str(manifest.get("index_version")))
        with self._writing(name):
            vdir = self.versions_dir(name)
            os.makedirs(vdir, exist_ok=True)
            if os.path.lexists(os.path.join(vdir, version)):
                self._check_same_content(name, version, src, manifest)
                return version, False
            staged = tempfile.mkdtemp(prefix=".publish-", dir=vdir)
            try:
                for fname in [*manifest["files"], MANIFEST]:
                    if os.path.basename(fname) != fname:
                        raise ArtifactCorrupt(f"{os.path.join(src, MANIFEST)}: file name {fname!r} is not plain.")
                    s = os.path.join(src, fname)
                    if not os.path.isfile(s):
                        raise ArtifactCorrupt(f"{s}: missing (listed in the manifest).")
                    shutil.copyfile(s, os.path.join(staged, fname))
                    if on_file is not None:
                        on_file(fname)
                load_index(staged, mmap=False, verify=True)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(staged, 0o777 & ~umask)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
            self._move_in(name, staged, version)
            return version, True

    def _check_same_content(self, name: str, version: str, src: str, manifest: dict[str, Any]) -> None:
        """The stored ``version`` is the artifact at ``src`` (same index_version and file sums) and verifies;
        StoreError naming both otherwise."""
        final = self.version_dir(name, version)
        head = f"index {name!r} already has version {version!r} ({final})"
        try:
            stored = read_manifest(final, artifact="index", versions=READABLE_VERSIONS)
        except VqrecError as e:
            raise StoreError(f"{head}, but it does not verify ({e}); nothing published from {src}.") from None
        ours, theirs = _file_sums(stored), _file_sums(manifest)
        differ = sorted(f for f in ours.keys() | theirs.keys() if ours.get(f) != theirs.get(f))
        if stored.get("index_version") != version:
            differ.insert(0, f"{MANIFEST} index_version {stored.get('index_version')!r}")
        if differ:
            raise StoreError(
                f"{head} with different content than {src} (differs: {', '.join(differ)}); nothing published "
                "(a version id names one content: build the new artifact again for a version of its own)."
            )
        try:
            load_index(final, mmap=True, verify=True)
        except VqrecError as e:
            raise StoreError(
                f"{head} with the content of {src}, but the stored copy does not verify ({e}); nothing published."
            ) from None

    def _write_alias(self, name: str, alias: dict[str, Any]) -> None:
        write_alias(self.alias_path(name), name, alias)

    def _check_loadable(self, name: str, version: str) -> None:
        p = self.path(name, version)
        try:
            index = load_index(p, mmap=True, verify=True)
        except VqrecError as e:
            raise StoreError(
                f"index {name!r} version {version!r} does not load ({e}); the alias is unchanged."
            ) from None
        if index.version != version:
            raise StoreError(
                f"{p}: manifest index_version {index.version!r} does not match the directory name {version!r}; "
                "the alias is unchanged."
            )

    def activate(self, name: str, version: str) -> dict[str, Any]:
        """Point the alias at ``version`` (which must load and verify); the old active version becomes
        ``previous``. Activating the active version changes nothing. An unreadable alias is replaced (the
        previous version is then unknown: null). Returns the alias."""
        with self._writing(name):
            try:
                current = self.read_alias(name)
                unreadable = None
            except ArtifactCorrupt as e:
                current, unreadable = None, e  # a corrupt alias is repaired by activating a good version
            if current is not None and current["version"] == version:
                self._check_loadable(name, version)
                return current
            self._check_loadable(name, version)
            if unreadable is not None:
                logger.info("index %r: replacing the unreadable alias (%s); previous version unknown", name, unreadable)
            alias = {
                "version": version,
                "previous": current["version"] if current is not None else None,
                "updated_at": _now(),
            }
            self._write_alias(name, alias)
            return alias

    def rollback(self, name: str) -> dict[str, Any]:
        """Flip the alias back to its ``previous`` version (which then becomes ``previous`` in turn)."""
        alias = self.read_alias(name)
        if alias is None:
            raise StoreError(f"index {name!r} has no alias at {self.alias_path(name)}: nothing to roll back.")
        prev = alias.get("previous")
        if not prev:
            raise StoreError(
                f"index {name!r}: the alias {self.alias_path(name)} has no previous version to roll back to."
            )
        return self.activate(name, prev)

    def prune(self, name: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond the newest ``keep``, never the active or previous one;
        returns the deleted version ids (oldest last)."""
        if not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"keep must be an integer >= 1, got {keep!r}.")
        with self._writing(name):
            alias = self.read_alias(name) or {}
            protected = {alias.get("version"), alias.get("previous")}
            infos = self.versions(name)
            doomed = [i.version for i in infos[keep:] if i.version not in protected]
            for v in doomed:
                self._delete(name, v)
            return doomed

    def discard(self, name: str, version: str) -> None:
        """Delete one version that is neither active nor previous (e.g. a publish that failed to activate)."""
        with self._writing(name):
            alias = self.read_alias(name) or {}
            if version in (alias.get("version"), alias.get("previous")):
                raise StoreError(f"index {name!r} version {version!r} is the active or previous one; not deleted.")
            self.path(name, version)
            self._delete(name, version)

    def _delete(self, name: str, version: str) -> None:
        vdir = self.versions_dir(name)
        trash = tempfile.mkdtemp(prefix=".trash-", dir=vdir)
        os.rename(os.path.join(vdir, version), os.path.join(trash, version))  # gone from listings at once
        fsync_dir(vdir)
        shutil.rmtree(trash, ignore_errors=True)
