"""The output files of ``vqrec embed`` and its cache: ``OUT.npy``, ``OUT_ids.txt`` and the sidecar
``OUT_meta.json`` that names the checksums of the other two (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .encoder import MODEL_NAME, MODEL_PACKAGE
from .texts import ItemTexts

SIDECAR_KIND = "vqrec-content-embeddings"
FORMAT_VERSION = 1


def output_paths(out: str) -> tuple[str, str]:
    """(ids file, sidecar) beside ``out`` (``X.npy`` -> ``X_ids.txt``, ``X_meta.json``)."""
    base = os.path.splitext(out)[0]
    return f"{base}_ids.txt", f"{base}_meta.json"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_sidecar(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("artifact") == SIDECAR_KIND else None


def cache_key(items: ItemTexts, *, normalize: bool, pkg_version: str) -> dict[str, Any]:
    """The sidecar fields that must all match for a cache hit."""
    return {
        "artifact": SIDECAR_KIND,
        "format_version": FORMAT_VERSION,
        "model": MODEL_NAME,
        "package": MODEL_PACKAGE,
        "package_version": pkg_version,
        "template": items.template,
        "normalize": normalize,
        "count": items.n,
        "texts_sha256": items.sha256(),
    }


def check_cache(out: str, key: dict[str, Any]) -> tuple[bool, str]:
    """(hit, note). A hit needs the sidecar to match ``key`` and both files to match its checksums."""
    ids_path, meta_path = output_paths(out)
    meta = read_sidecar(meta_path)
    if meta is None:
        return False, "no earlier output"
    changed = [k for k, v in key.items() if meta.get(k) != v]
    if changed:
        what = "texts changed" if "texts_sha256" in changed or "count" in changed else ", ".join(changed) + " changed"
        return False, f"stale ({what})"
    files = meta.get("files")
    if not isinstance(files, dict):
        return False, "stale (sidecar lists no files)"
    for p in (out, ids_path):
        rec = files.get(os.path.basename(p))
        if not isinstance(rec, dict) or not os.path.isfile(p):
            return False, f"stale ({os.path.basename(p)} missing)"
        if os.path.getsize(p) != rec.get("bytes") or sha256_file(p) != rec.get("sha256"):
            return False, f"stale ({os.path.basename(p)} does not match the sidecar)"
    return True, "hit"


def owned(out: str) -> bool:
    """Whether existing output at ``out`` was written by this module (a readable sidecar of ours)."""
    return read_sidecar(output_paths(out)[1]) is not None


def _tmp_beside(path: str) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path) or ".")


def write_outputs(out: str, ids: list[str], vectors: NDArray[np.float32], meta: dict[str, Any]) -> dict[str, Any]:
    """Write OUT.npy, OUT_ids.txt and OUT_meta.json, each via a temporary file renamed into place;
    the old sidecar is removed first and the new one renamed in last. Returns the sidecar written."""
    ids_path, meta_path = output_paths(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    temps: dict[str, str] = {}
    try:
        fd, temps[out] = _tmp_beside(out)
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        fd, temps[ids_path] = _tmp_beside(ids_path)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{i}\n" for i in ids)
            f.flush()
            os.fsync(f.fileno())
        files = {
            os.path.basename(p): {"sha256": sha256_file(t), "bytes": os.path.getsize(t)}
            for p, t in ((out, temps[out]), (ids_path, temps[ids_path]))
        }
        meta = {**meta, "files": files}
        fd, temps[meta_path] = _tmp_beside(meta_path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        for t in temps.values():
            os.chmod(t, 0o666 & ~umask)  # mkstemp makes 0600
        # the old sidecar stays until the new one replaces it: it names the old files' checksums, so
        # a crash between these renames leaves a mismatch that the next run recomputes
        os.replace(temps.pop(out), out)
        os.replace(temps.pop(ids_path), ids_path)
        os.replace(temps.pop(meta_path), meta_path)
    finally:
        for t in temps.values():
            try:
                os.remove(t)
            except OSError:
                pass
    return meta
