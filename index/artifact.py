"""The index artifact on disk: save_index / load_index.

A directory, readable with plain numpy (no pickles); see docs/artifacts.md:

    manifest.json       format_version, index_version, method/params, metric, dims, counts, bytes,
                        source fingerprints, sha256 + size of every file, evaluation report
    codebooks.npz       centroids (M, ksub, dsub|d) float32 [+ rotation (d, d) float32 for opq]
    codes.npy           (n, M) uint8          one code per (sub)codebook
    codes_fs4.npy       (blocks, 16 M) uint8  4-bit codes that fit it: the same codes in the 4-bit scan's block
                        layout (index/fastscan.py), searched in place; checked against codes.npy at load
    item_ids.txt        n lines, UTF-8        row i of codes.npy is item_ids line i
    item_norms.npy      (n,) float32          |x_hat| (reconstruction norm, code space)
    item_zero.npy       (n,) bool             input vector was all zeros
    item_scale.npy      (n,) float32          |x|, only for norm-explicit codebooks (x_hat = |x| * y_hat)
    pair_tables.npy     (M, ksub, ksub) | (M, M, ksub, ksub) float32, optional
    user_ids.txt        optional, with user_vectors.npy (nu, d) float32|float16 or user_codes.npy (nu, M) uint8
                        (+ user_scale.npy (nu,) float32 with norm-explicit codebooks)
    item_vectors.npy    optional (n, d) float16|float32|int8, for exact re-ranking (int8: with
                        item_vectors_scale.npy (d,) float32, x = v * scale per dimension)
    partition_centroids.npy   optional (nlist, d) float32: list centroids in code space (partitioned index)
    partition_lists.npy (nlist+1,) int64: list l holds rows [l] .. [l+1]-1 (every per-item file is in list
                        order; the manifest's ``partition`` section: nlist, kind, default nprobe, list sizes)
    item_semantic_codes.npy   optional (n, L) uint8|uint16|uint32: semantic-id codes (format 2)
    item_semantic_suffix.npy  (n,) uint32 dedup suffix; user_semantic_*.npy the same for users
                        (the manifest's ``semantic_ids`` section: levels, codebook sizes, tokenizer, report)

Format 2 added the semantic-id files; format 1 artifacts (no semantic ids) still load.

Publishing is atomic (temporary directory + rename). The manifest covers itself: its last field,
``manifest_sha256``, is the sha256 of manifest.json's bytes with that value written as 64 zeros
(artifact_io.write_manifest). A field of its own rather than a sidecar file because the manifest is the one
file every copier already carries (``IndexStore.publish_dir`` copies the files the manifest lists, plus the
manifest), and format 1/2 readers ignore an unknown field, so the format version stays 2 and an older vqrec
still reads new artifacts.

Loading, in this order (the first fault found is raised, as ArtifactCorrupt naming the file):
  1. the manifest: kind, format version, its schema (index/manifest.py: every field's type, range and
     allowed values, naming the field);
  2. every listed file's size, and its sha256 when ``verify`` (the default);
  3. each array: dtype and shape against the manifest, every float array finite (NaN/inf refused) and the
     norms non-negative; codes_fs4.npy against codes.npy (every row with ``verify``, else the first and last
     row of each list and 1,024 more); then the manifest's counts against the arrays (n_users, code_size,
     norm_explicit against item_scale.npy);
  4. the manifest's own checksum, when it has one (artifacts written before it existed have none and
     load unchecked). Verified even with ``verify=False``: it costs one sha256 of a few KB. It comes last so
     that a manifest contradicted by its files gets the more precise message from step 1-3; a manifest
     changed consistently (another metric in both places, another lut_path, ...) fails here.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import fastscan
from .artifact_io import (
    MANIFEST,
    atomic_dir,
    load_npy,
    read_manifest_bytes,
    verify_files,
    verify_manifest_checksum,
    write_manifest,
)
from .codebooks import Codebooks, load_npz
from .embeddings import read_ids
from .errors import ArtifactCorrupt, ConfigError
from .fastscan import release_freed_memory
from .ids import IdList, read_id_file
from .index import CompressedIndex, UserStore
from .manifest import validate_index_manifest
from .partition import Partition
from .semantic import SemanticIds

logger = logging.getLogger(__name__)

INDEX_FORMAT_VERSION = 2
PACKED = "codes_fs4.npy"  # the 4-bit block layout of codes.npy (written for 4-bit codes that fit it)
READABLE_VERSIONS = (1, 2)
_SEMANTIC_DTYPES = (np.uint8, np.uint16, np.uint32)
_VECTOR_DTYPES = (np.float16, np.float32)
_FINITE_CHUNK = 1 << 20  # elements per np.isfinite pass: bounds the temporary bool array (1 MB)


def _write_ids(path: str, ids: Sequence[str]) -> None:
    if isinstance(ids, IdList):  # already the file's bytes
        with open(path, "wb") as f:
            f.write(ids.lines_bytes())
        return
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{i}\n" for i in ids)


def _content_hash(index: CompressedIndex) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(index.codes).tobytes())
    h.update("\n".join(index.item_ids).encode())
    h.update(np.ascontiguousarray(index.codebooks.centroids).tobytes())
    return h.hexdigest()


def save_index(
    index: CompressedIndex, path: str, *, overwrite: bool = False, evaluation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Publish ``index`` at ``path`` atomically; returns the manifest written."""
    cb = index.codebooks
    created = datetime.datetime.now(datetime.UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}-{_content_hash(index)[:10]}"
    with atomic_dir(path, overwrite=overwrite) as tmp:
        np.savez(os.path.join(tmp, "codebooks.npz"), **cb.arrays())
        np.save(os.path.join(tmp, "codes.npy"), np.ascontiguousarray(index.codes, dtype=np.uint8))
        _write_ids(os.path.join(tmp, "item_ids.txt"), index.item_ids)
        np.save(os.path.join(tmp, "item_norms.npy"), index.recon_norms.astype(np.float32))
        np.save(os.path.join(tmp, "item_zero.npy"), np.asarray(index.zero_items, dtype=bool))
        if index.item_scale is not None:
            np.save(os.path.join(tmp, "item_scale.npy"), index.item_scale.astype(np.float32))
        if index.pair_tables is not None:
            np.save(os.path.join(tmp, "pair_tables.npy"), index.pair_tables)
        if index.users is not None:
            _write_ids(os.path.join(tmp, "user_ids.txt"), index.users.ids)
            if index.users.storage == "codes":
                np.save(os.path.join(tmp, "user_codes.npy"), index.users.codes)
                if index.users.scale is not None:
                    np.save(os.path.join(tmp, "user_scale.npy"), index.users.scale.astype(np.float32))
            else:
                np.save(os.path.join(tmp, "user_vectors.npy"), index.users.vectors)
        if index.item_vectors is not None:
            np.save(os.path.join(tmp, "item_vectors.npy"), index.item_vectors)
            if index.item_vectors_scale is not None:
                np.save(os.path.join(tmp, "item_vectors_scale.npy"), index.item_vectors_scale.astype(np.float32))
        if fastscan.supports(cb.M, cb.nbits) and len(index):
            # the layout the 4-bit scan reads, saved so that a load maps it instead of packing a private copy
            np.save(os.path.join(tmp, PACKED), index.packed_layout())
        if index.partition is not None:
            np.save(os.path.join(tmp, "partition_centroids.npy"), index.partition.centroids)
            np.save(os.path.join(tmp, "partition_lists.npy"), index.partition.list_rows)
        for kind, sem in (("item", index.semantic_items), ("user", index.semantic_users)):
            if sem is not None:
                np.save(os.path.join(tmp, f"{kind}_semantic_codes.npy"), np.ascontiguousarray(sem.codes))
                np.save(os.path.join(tmp, f"{kind}_semantic_suffix.npy"), np.asarray(sem.suffix, dtype=np.uint32))

        sizes = {name: os.path.getsize(os.path.join(tmp, name)) for name in os.listdir(tmp)}
        n = len(index)
        # the per-item files a load searches: the packed layout stands for codes.npy where it is written (codes.npy
        # is then only read to check it)
        codes_file = PACKED if PACKED in sizes else "codes.npy"
        per_item_files = [codes_file, "item_norms.npy", "item_zero.npy", "item_scale.npy", "item_ids.txt"]
        base = {k: v for k, v in index.manifest.items() if k not in ("files", "evaluation", "manifest_sha256")}
        manifest = {
            "artifact": "index",
            "format_version": INDEX_FORMAT_VERSION,
            "index_version": version,
            "created_at": created.isoformat(timespec="seconds"),
            **base,
            "method": cb.header(),
            "metric": cb.metric,
            "similar_metric": index.similar_metric,
            "d": cb.d,
            "n_items": n,
            "n_users": len(index.users.ids) if index.users else 0,
            "lut_path": index.lut_path,
            "bytes": {
                "code_bytes_per_item": cb.code_size,
                "index_bytes_per_item": round(sum(sizes.get(f, 0) for f in per_item_files) / n, 3),
                "float32_bytes_per_item": 4 * cb.d,
                "compression_ratio": round(4 * cb.d / cb.code_size, 2),
                "pair_tables": sizes.get("pair_tables.npy", 0),
                "users": sizes.get("user_vectors.npy", sizes.get("user_codes.npy", 0)),
                "item_vectors": sizes.get("item_vectors.npy", 0),
                "total": sum(sizes.values()),
            },
            "trainer_config": cb.config,
            "train_report": cb.report,
            "evaluation": evaluation if evaluation is not None else index.manifest.get("evaluation", {}),
        }
        manifest = write_manifest(tmp, manifest, checksum=True)
        validate_index_manifest(tmp, manifest)  # never publish what load_index would refuse (e.g. a bad evaluation)
    index.manifest = manifest
    index.path = path
    return manifest


def load_index(path: str, *, mmap: bool = True, verify: bool = True) -> CompressedIndex:
    """Load and check an index artifact (the steps: module docstring). Raises ArtifactError (naming the
    file) when it is not usable. ``verify=False`` skips the data files' sha256 only (sizes, shapes, finite
    values and the manifest's own checksum are always checked)."""
    t0 = time.perf_counter()
    manifest, raw = read_manifest_bytes(path, artifact="index", versions=READABLE_VERSIONS)
    validate_index_manifest(path, manifest)
    verify_files(path, manifest, checksums=verify)
    files = manifest["files"]
    for required in ("codebooks.npz", "codes.npy", "item_ids.txt", "item_norms.npy", "item_zero.npy"):
        if required not in files:
            raise ArtifactCorrupt(f"{os.path.join(path, required)}: missing from the manifest.")
    method = manifest["method"]
    arrays = load_npz(os.path.join(path, "codebooks.npz"))
    for key, arr in arrays.items():
        _finite(path, "codebooks.npz", arr, what=key)
    try:
        cb = Codebooks.from_arrays(
            method,
            arrays,
            config=manifest.get("trainer_config", {}),
            report=manifest.get("train_report", {}),
        )
    except (KeyError, TypeError, ConfigError) as e:
        raise ArtifactCorrupt(f"{os.path.join(path, 'codebooks.npz')}: does not match the manifest ({e}).") from None
    n = manifest["n_items"]
    partition = _load_partition(path, files, manifest, n, cb.d)
    # the 4-bit layout as saved: searched in place (mapped pages are shared by every process that maps them);
    # codes.npy is then only read for the check against it
    fits = fastscan.fastscan_available() and fastscan.supports(cb.M, cb.nbits) and n > 0
    use_packed = PACKED in files and fits
    if fits and not use_packed and mmap:
        logger.warning(
            "%s has no %s (written by an older vqrec): its codes are packed into this process's memory, not shared "
            "with other processes; build and publish it again to share them",
            path,
            PACKED,
        )
    codes = load_npy(path, "codes.npy", mmap=mmap)
    _expect(path, "codes.npy", codes, (n, cb.M), np.uint8)
    item_codes: Any = codes
    if use_packed:
        list_rows = partition.list_rows if partition is not None else np.array([0, n], dtype=np.int64)
        item_codes = _load_packed(path, codes, list_rows, cb.M, mmap=mmap, full_check=verify)
    elif cb.nbits < 8 and n and int(np.max(codes)) >= cb.ksub:
        raise ArtifactCorrupt(f"{os.path.join(path, 'codes.npy')}: a code is >= ksub ({cb.ksub}).")
    try:
        ids = read_id_file(os.path.join(path, "item_ids.txt"), mmap=mmap)
    except ConfigError as e:  # a repeated id
        raise ArtifactCorrupt(f"{os.path.join(path, 'item_ids.txt')}: {e}") from None
    norms = load_npy(path, "item_norms.npy", mmap=mmap)
    zero = load_npy(path, "item_zero.npy", mmap=mmap)
    _expect(path, "item_norms.npy", norms, (n,), np.float32)
    _finite(path, "item_norms.npy", norms, nonnegative=True)
    _expect(path, "item_zero.npy", zero, (n,), np.bool_)
    if len(ids) != n:
        raise ArtifactCorrupt(f"{os.path.join(path, 'item_ids.txt')}: {len(ids)} ids, manifest says n_items={n}.")
    scale = None
    if cb.norm_explicit:
        if "item_scale.npy" not in files:
            raise ArtifactCorrupt(f"{os.path.join(path, 'item_scale.npy')}: missing (norm-explicit codebooks).")
        scale = load_npy(path, "item_scale.npy", mmap=mmap)
        _expect(path, "item_scale.npy", scale, (n,), np.float32)
        _finite(path, "item_scale.npy", scale, nonnegative=True)
    elif "item_scale.npy" in files:
        raise ArtifactCorrupt(
            f"{os.path.join(path, MANIFEST)}: method.norm_explicit is false but item_scale.npy is present "
            "(it is written only for norm-explicit codebooks, whose scores need it)."
        )
    tables = None
    if "pair_tables.npy" in files:
        tables = load_npy(path, "pair_tables.npy", mmap=mmap)
        want = (cb.M, cb.M, cb.ksub, cb.ksub) if cb.kind == "rq" else (cb.M, cb.ksub, cb.ksub)
        _expect(path, "pair_tables.npy", tables, want, np.float32)
        _finite(path, "pair_tables.npy", tables)
    users = None
    if "user_ids.txt" in files:
        uids = read_ids(os.path.join(path, "user_ids.txt"))
        if "user_codes.npy" in files:
            uc = load_npy(path, "user_codes.npy", mmap=mmap)
            _expect(path, "user_codes.npy", uc, (len(uids), cb.M), np.uint8)
            us = None
            if "user_scale.npy" in files:
                us = load_npy(path, "user_scale.npy", mmap=mmap)
                _expect(path, "user_scale.npy", us, (len(uids),), np.float32)
                _finite(path, "user_scale.npy", us, nonnegative=True)
            users = UserStore(ids=uids, storage="codes", codes=uc, scale=us)
        elif "user_vectors.npy" in files:
            uv = load_npy(path, "user_vectors.npy", mmap=mmap)
            if uv.dtype not in _VECTOR_DTYPES:
                raise ArtifactCorrupt(f"{os.path.join(path, 'user_vectors.npy')}: dtype {uv.dtype}.")
            _expect(path, "user_vectors.npy", uv, (len(uids), cb.d), uv.dtype)
            _finite(path, "user_vectors.npy", uv)
            users = UserStore(ids=uids, storage=str(uv.dtype), vectors=uv)  # type: ignore[arg-type]
        else:
            raise ArtifactCorrupt(f"{path}: user_ids.txt without user_vectors.npy or user_codes.npy.")
    sem_meta = manifest.get("semantic_ids")
    sem_items = _load_semantic(path, files, sem_meta, "item", ids)
    sem_users = _load_semantic(path, files, sem_meta, "user", users.ids if users is not None else None)
    iv = None
    iv_scale = None
    if "item_vectors.npy" in files:
        iv = load_npy(path, "item_vectors.npy", mmap=mmap)
        if iv.dtype not in (*_VECTOR_DTYPES, np.int8):
            raise ArtifactCorrupt(
                f"{os.path.join(path, 'item_vectors.npy')}: dtype {iv.dtype}, expected float16, float32 or int8."
            )
        _expect(path, "item_vectors.npy", iv, (n, cb.d), iv.dtype)
        recorded = manifest.get("item_vectors")  # what the build wrote: its dtype must be the file's
        if recorded in ("float16", "float32", "int8") and iv.dtype != np.dtype(recorded):
            raise ArtifactCorrupt(
                f"{os.path.join(path, 'item_vectors.npy')}: dtype {iv.dtype}, the manifest says {recorded}."
            )
        _finite(path, "item_vectors.npy", iv)
        if iv.dtype == np.int8:
            if "item_vectors_scale.npy" not in files:
                raise ArtifactCorrupt(f"{os.path.join(path, 'item_vectors_scale.npy')}: missing (int8 item vectors).")
            iv_scale = load_npy(path, "item_vectors_scale.npy")
            _expect(path, "item_vectors_scale.npy", iv_scale, (cb.d,), np.float32)
            _finite(path, "item_vectors_scale.npy", iv_scale, nonnegative=True)
    _check_counts(path, manifest, cb, users)
    verify_manifest_checksum(path, manifest, raw)
    try:
        index = CompressedIndex(
            codebooks=cb,
            codes=item_codes,
            item_ids=ids,
            recon_norms=norms,
            zero_items=zero,
            item_scale=scale,
            pair_tables=tables,
            users=users,
            item_vectors=iv,
            item_vectors_scale=iv_scale,
            manifest=manifest,
            lut_path=manifest.get("lut_path", "pairs"),
            path=path,
            semantic_items=sem_items,
            semantic_users=sem_users,
            partition=partition,
            default_rerank=int((manifest.get("search") or {}).get("rerank", 0)) if iv is not None else 0,
        )
    except ConfigError as e:
        raise ArtifactCorrupt(f"{path}: {e}") from None
    release_freed_memory()
    logger.info(
        "loaded index %s version=%s kind=%s metric=%s n=%d d=%d M=%d nbits=%d in %.3fs",
        path,
        index.version,
        cb.kind,
        cb.metric,
        len(index),
        cb.d,
        cb.M,
        cb.nbits,
        time.perf_counter() - t0,
    )
    return index


_CHECK_ROWS = 1 << 18  # rows of codes.npy compared with the packed layout per step


def _load_packed(
    path: str, codes: np.ndarray, list_rows: np.ndarray, M: int, *, mmap: bool, full_check: bool
) -> fastscan.PackedCodes:
    """``codes_fs4.npy`` as the index's codes, checked against ``codes.npy``: every row when the checksums are
    verified (the file is then known to be as written, and this proves the writer packed the same codes), else
    the first and last row of every list and 1,024 more spread over the rows (a load in seconds at 10M items)."""
    packed = load_npy(path, PACKED, mmap=mmap)
    _expect(path, PACKED, packed, (int(fastscan.list_blocks(list_rows)[-1]), 16 * M), np.uint8)
    n = len(codes)
    if full_check:
        spans = [np.arange(r0, min(r0 + _CHECK_ROWS, n)) for r0 in range(0, n, _CHECK_ROWS)]
    else:
        ends = np.concatenate([list_rows[:-1], list_rows[1:] - 1])
        ends = ends[(ends >= 0) & (ends < n)]
        spans = [np.unique(np.concatenate([ends, np.linspace(0, n - 1, min(n, 1024)).astype(np.int64)]))]
    for rows in spans:
        got = fastscan.unpack_rows(packed, M, list_rows, rows)
        want = codes[rows[0] : rows[-1] + 1] if full_check else codes[rows]
        if not np.array_equal(got, want):
            bad = int(rows[np.flatnonzero((got != want).any(axis=1))[0]])
            raise ArtifactCorrupt(
                f"{os.path.join(path, PACKED)}: row {bad} differs from codes.npy (the packed layout must hold the "
                "same codes); rebuild the index."
            )
    return fastscan.PackedCodes(packed, M, list_rows)


def _load_partition(path: str, files: dict[str, Any], manifest: dict[str, Any], n: int, d: int) -> Partition | None:
    names = ("partition_centroids.npy", "partition_lists.npy")
    meta = manifest.get("partition")
    if not any(f in files for f in names) and meta is None:
        return None
    missing = [f for f in names if f not in files]
    if missing or not isinstance(meta, dict):
        what = f"{missing[0]} is missing" if missing else "the manifest has no partition section"
        raise ArtifactCorrupt(
            f"{path}: a partitioned index needs both partition files and a partition section; {what}."
        )
    nlist = meta["nlist"]
    cent = load_npy(path, names[0])
    rows = load_npy(path, names[1])
    _expect(path, names[0], cent, (nlist, d), np.float32)
    _finite(path, names[0], cent)
    _expect(path, names[1], rows, (nlist + 1,), np.int64)
    if rows[0] != 0 or rows[-1] != n or (np.diff(rows) < 0).any():
        raise ArtifactCorrupt(
            f"{os.path.join(path, names[1])}: list offsets must rise from 0 to n_items ({n}); "
            f"got {int(rows[0])} .. {int(rows[-1])}."
        )
    try:
        return Partition(centroids=cent, list_rows=rows, kind=meta["kind"], nprobe=meta["nprobe"])
    except ConfigError as e:
        raise ArtifactCorrupt(f"{os.path.join(path, MANIFEST)}: partition: {e}") from None


def _check_counts(path: str, manifest: dict[str, Any], cb: Codebooks, users: UserStore | None) -> None:
    """The manifest's counts and header against what the files hold."""
    mpath = os.path.join(path, MANIFEST)
    code_size = manifest["method"].get("code_size", cb.code_size)
    if code_size != cb.code_size:
        raise ArtifactCorrupt(f"{mpath}: method.code_size: {code_size}, expected M = {cb.M}.")
    nu = len(users.ids) if users is not None else 0
    if manifest.get("n_users", nu) != nu:
        raise ArtifactCorrupt(
            f"{mpath}: n_users: {manifest['n_users']}, but user_ids.txt holds {nu} ids"
            + ("" if users is not None else " (there is no user_ids.txt)")
            + "."
        )


def _finite(path: str, name: str, arr: np.ndarray, *, what: str | None = None, nonnegative: bool = False) -> None:
    """Refuse NaN / inf (and, with ``nonnegative``, values < 0) in a float array, naming the file.

    One pass over the data in chunks of ``_FINITE_CHUNK`` elements: a memory-mapped array is read once,
    without a full-size temporary."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
    flat = arr.reshape(-1, order=order)  # a view of a contiguous array (memory-mapped or not)
    label = f"{os.path.join(path, name)}: {what + ' ' if what else ''}"
    for i0 in range(0, flat.size, _FINITE_CHUNK):
        block = np.asarray(flat[i0 : i0 + _FINITE_CHUNK])
        bad = ~np.isfinite(block)
        if nonnegative:
            bad |= block < 0
        if bad.any():
            j = int(np.argmax(bad))
            at = tuple(int(x) for x in np.unravel_index(i0 + j, arr.shape, order=order))
            why = "a negative norm" if np.isfinite(block[j]) else "NaN or inf"
            raise ArtifactCorrupt(f"{label}holds {why} ({block[j]} at {at}); refusing non-finite or invalid scores.")


def _load_semantic(path: str, files: dict[str, Any], meta: Any, kind: str, ids: list[str] | None) -> SemanticIds | None:
    cname, sname = f"{kind}_semantic_codes.npy", f"{kind}_semantic_suffix.npy"
    if cname not in files and sname not in files:
        return None
    if cname not in files or sname not in files:
        raise ArtifactCorrupt(f"{path}: {cname} and {sname} come together; one is missing.")
    if ids is None:
        raise ArtifactCorrupt(f"{os.path.join(path, cname)}: {kind} semantic ids without {kind}s in the index.")
    sizes = meta.get("codebook_sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list) or not sizes or not all(isinstance(k, int) and k > 0 for k in sizes):  # schema
        raise ArtifactCorrupt(f"{os.path.join(path, MANIFEST)}: semantic_ids.codebook_sizes missing or invalid.")
    codes = load_npy(path, cname)
    suffix = load_npy(path, sname)
    if codes.dtype not in _SEMANTIC_DTYPES:
        raise ArtifactCorrupt(f"{os.path.join(path, cname)}: dtype {codes.dtype}.")
    _expect(path, cname, codes, (len(ids), len(sizes)), codes.dtype)
    _expect(path, sname, suffix, (len(ids),), np.uint32)
    try:
        return SemanticIds(ids=ids, codes=codes, suffix=suffix, sizes=sizes, kind=kind)
    except ConfigError as e:
        raise ArtifactCorrupt(f"{os.path.join(path, cname)}: {e}") from None


def _expect(path: str, name: str, arr: np.ndarray, shape: tuple[Any, ...], dtype: Any) -> None:
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise ArtifactCorrupt(
            f"{os.path.join(path, name)}: shape {arr.shape} dtype {arr.dtype}, "
            f"expected {tuple(shape)} {np.dtype(dtype)}."
        )
