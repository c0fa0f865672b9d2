"""Low-level pieces shared by the codebook and index artifacts: atomic directory publish,
sha256 checksums, and manifest reading that fails loudly.

An artifact is a directory: ``manifest.json`` plus plain ``.npy``/``.npz``/``.txt`` files, never
pickles. The manifest lists every other file with its sha256 and byte size. Publishing writes into
a sibling temporary directory and renames it into place, so a reader sees the old artifact or the
new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import ArtifactCorrupt, ArtifactError, ArtifactNotFound, FormatVersionError

MANIFEST = "manifest.json"
CHECKSUM_FIELD = "manifest_sha256"  # the manifest's checksum of itself (index artifacts; see write_manifest)
_ZERO_SHA = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_dir(final: str, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside ``final``; on success rename it to ``final``.

    On any exception the temporary directory is removed and ``final`` is untouched (with
    ``overwrite`` the previous artifact is moved aside, and put back if the new one cannot be renamed
    in). Overwriting leaves a moment between the two renames when ``final`` does not exist: a server
    should serve versions published under new paths rather than overwrite the one it serves.
    """
    final = os.path.abspath(final)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(final) and not overwrite:
        raise ArtifactError(f"{final} already exists; choose another path or pass overwrite (--force).")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    old = None
    try:
        yield tmp
        # mkdtemp makes 0700; publish with the permissions a plain mkdir would get
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=parent)
            os.rename(final, os.path.join(old, "a"))
        os.rename(tmp, final)
    except BaseException:
        if old is not None and not os.path.exists(final):
            os.rename(os.path.join(old, "a"), final)  # put the previous artifact back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(dirpath: str, manifest: dict[str, Any], *, checksum: bool = False) -> dict[str, Any]:
    """Add a ``files`` table (sha256 + bytes of every file in ``dirpath``) and write manifest.json.

    With ``checksum`` the manifest also covers itself: its last field, ``manifest_sha256``, is the sha256
    of the file's exact bytes with that field's value written as 64 zeros (see ``verify_manifest_checksum``).
    Returns the manifest as written (what a reader of the file gets back)."""
    files = {}
    for name in sorted(os.listdir(dirpath)):
        if name == MANIFEST:
            continue
        p = os.path.join(dirpath, name)
        files[name] = {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
    manifest = {k: v for k, v in manifest.items() if k != CHECKSUM_FIELD}
    manifest = {**manifest, "files": files}
    text = json.dumps(manifest, indent=2, sort_keys=False, default=json_default)
    if checksum:
        # through JSON and back, so the dict returned is the one a reader parses (numpy scalars -> int/float)
        manifest = {**json.loads(text), CHECKSUM_FIELD: _ZERO_SHA}
        text = json.dumps(manifest, indent=2, sort_keys=False)
        data = (text + "\n").encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        head, pair, tail = data.rpartition(_pair(_ZERO_SHA))  # the last field: its last occurrence
        data = head + _pair(digest) + tail
        manifest[CHECKSUM_FIELD] = digest
    else:
        data = (text + "\n").encode("utf-8")
    with open(os.path.join(dirpath, MANIFEST), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return manifest


def _pair(value: str) -> bytes:
    """The checksum field as ``json.dumps`` writes it (``"key": "value"``; ASCII, so the bytes are fixed)."""
    return f'"{CHECKSUM_FIELD}": "{value}"'.encode("ascii")


def verify_manifest_checksum(dirpath: str, manifest: dict[str, Any], raw: bytes) -> bool:
    """Check ``manifest_sha256`` against the manifest's bytes ``raw``; False when the manifest has no such
    field (artifacts written before it existed), True when it matches, ArtifactCorrupt otherwise.

    The checksum is the sha256 of the file's exact bytes with the field's value replaced by 64 zeros, so
    every byte but the value itself is covered (a reformatted, re-ordered or edited manifest fails), and
    the file needs no canonical re-serialization to be checked. The field is the manifest's last, written
    ``"manifest_sha256": "<64 lowercase hex>"`` just before the closing brace: that position tells it from
    any same-named key nested in an earlier section."""
    if CHECKSUM_FIELD not in manifest:
        return False
    mpath = os.path.join(dirpath, MANIFEST)
    value = manifest[CHECKSUM_FIELD]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ArtifactCorrupt(f"{mpath}: {CHECKSUM_FIELD} {value!r} is not a sha256 (64 lowercase hex digits).")
    at = raw.rfind(_pair(value))
    if at < 0 or raw[at + len(_pair(value)) :].strip() != b"}":
        raise ArtifactCorrupt(
            f"{mpath}: does not match its checksum: {CHECKSUM_FIELD} is not the last field, in the form save_index "
            "writes it (the manifest was rewritten)."
        )
    digest = hashlib.sha256(raw[:at] + _pair(_ZERO_SHA) + raw[at + len(_pair(value)) :]).hexdigest()
    if digest != value:
        raise ArtifactCorrupt(
            f"{mpath}: does not match its checksum (sha256 {digest[:12]}…, {CHECKSUM_FIELD} says {value[:12]}…): "
            "the manifest was changed after it was written."
        )
    return True


def json_default(o: Any) -> Any:
    """``json.dump(default=...)`` for numpy scalars and arrays."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_manifest(dirpath: str, *, artifact: str, versions: tuple[int, ...]) -> dict[str, Any]:
    """Read and check ``dirpath/manifest.json``: it exists, parses, is the right artifact kind and
    a known format version."""
    return read_manifest_bytes(dirpath, artifact=artifact, versions=versions)[0]


def read_manifest_bytes(dirpath: str, *, artifact: str, versions: tuple[int, ...]) -> tuple[dict[str, Any], bytes]:
    """``read_manifest``, also returning the file's bytes (read once: for ``verify_manifest_checksum``)."""
    if not os.path.isdir(dirpath):
        raise ArtifactNotFound(f"{artifact} artifact not found: {dirpath} is not a directory.")
    mpath = os.path.join(dirpath, MANIFEST)
    if not os.path.exists(mpath):
        raise ArtifactCorrupt(f"{mpath}: missing; {dirpath} is not a complete {artifact} artifact.")
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ArtifactCorrupt(f"{mpath}: not valid JSON ({e}).") from None
    if not isinstance(manifest, dict):
        raise ArtifactCorrupt(f"{mpath}: expected a JSON object.")
    kind = manifest.get("artifact")
    if kind != artifact:
        raise ArtifactCorrupt(f"{mpath}: this is a {kind!r} artifact, expected {artifact!r}.")
    version = manifest.get("format_version")
    if version not in versions or isinstance(version, bool):
        raise FormatVersionError(
            f"{mpath}: format_version {version!r} is not one this vqrec reads (reads {list(versions)})."
        )
    if not isinstance(manifest.get("files"), dict):
        raise ArtifactCorrupt(f"{mpath}: no 'files' table.")
    return manifest, raw


def verify_files(dirpath: str, manifest: dict[str, Any], *, checksums: bool = True) -> None:
    """Every file the manifest lists exists with its size (and sha256 when ``checksums``)."""
    for name, meta in manifest["files"].items():
        p = os.path.join(dirpath, name)
        if not os.path.exists(p):
            raise ArtifactCorrupt(f"{p}: missing (listed in the manifest).")
        size = os.path.getsize(p)
        if size != meta.get("bytes"):
            raise ArtifactCorrupt(f"{p}: size {size} bytes, manifest says {meta.get('bytes')} (truncated?).")
        if checksums:
            digest = sha256_file(p)
            if digest != meta.get("sha256"):
                raise ArtifactCorrupt(
                    f"{p}: sha256 {digest[:12]}… does not match the manifest's {str(meta.get('sha256'))[:12]}…."
                )


def load_npy(dirpath: str, name: str, *, mmap: bool = False) -> np.ndarray:
    p = os.path.join(dirpath, name)
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ArtifactCorrupt(f"{p}: unreadable ({e}).") from None
