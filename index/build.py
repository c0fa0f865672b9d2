"""build_index: encode every item with a codebook artifact and precompute what queries need."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .codebooks import Codebooks, row_norms
from .embeddings import Embeddings
from .errors import ConfigError, DimensionMismatchError
from .ids import IdList
from .index import CompressedIndex, UserStore
from .partition import Partition, assign, auto_nlist, kind_for, order, train_partition
from .probes import make_probes
from .progress import progress
from .semantic import Tokenizer, align, tokenize

logger = logging.getLogger(__name__)

UserStorage = Literal["float32", "float16", "codes"]
ItemVectors = Literal["none", "float16", "float32", "int8"]
# pair tables beyond this size are not stored; queries by id then decode (RQ with many stages)
DEFAULT_MAX_PAIR_TABLE_BYTES = 64 << 20


# (codebooks, vectors, what) -> (codes (n, M) uint8, reconstruction norms (n,) float32); what: "items" | "users"
Encoder = Callable[[Codebooks, NDArray[np.float32], str], tuple[NDArray[np.uint8], NDArray[np.float32]]]


def encode_block(codebooks: Codebooks, x: NDArray[np.float32]) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Codes and reconstruction norms |decode(codes)| of one block of vectors (the unit every encoder runs)."""
    codes = codebooks.encode(x)
    return codes, codebooks.recon_norms(codes)


def local_encoder(*, batch_size: int = 65536, show_progress: bool = True) -> Encoder:
    """Encode in this process, ``batch_size`` vectors at a time, with a progress bar."""

    def encode(codebooks: Codebooks, x: NDArray[np.float32], what: str) -> tuple[NDArray[np.uint8], NDArray[Any]]:
        n = len(x)
        codes = np.empty((n, codebooks.M), dtype=np.uint8)
        norms = np.empty(n, dtype=np.float32)
        with progress(total=n, desc=f"encode {what}", unit="vec", disable=not show_progress) as bar:
            for i0 in range(0, n, batch_size):
                i1 = min(n, i0 + batch_size)
                codes[i0:i1], norms[i0:i1] = encode_block(codebooks, x[i0:i1])
                bar.update(i1 - i0)
        return codes, norms

    return encode


def build_index(
    codebooks: Codebooks,
    items: Embeddings,
    *,
    users: Embeddings | None = None,
    user_storage: UserStorage = "float32",
    item_vectors: ItemVectors = "none",
    batch_size: int = 65536,
    pair_tables: bool = False,
    max_pair_table_bytes: int = DEFAULT_MAX_PAIR_TABLE_BYTES,
    show_progress: bool = True,
    encoder: Encoder | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    tune: bool = True,
    target_recall: float | None = None,
    tune_queries: int = 500,
) -> CompressedIndex:
    """Encode ``items`` into a CompressedIndex (not yet saved; see artifact.save_index).

    Precomputes the per-item terms queries need: reconstruction norms (cosine and l2 from the one ip
    code table), exact norms for norm-explicit codes, and zero-vector flags. With ``pair_tables`` it
    also stores the codeword-pair tables (when they fit in ``max_pair_table_bytes``), so lookup tables
    of queries by id are gathered instead of decoded. Off by default: decoding then one BLAS call
    measured faster end to end for every kind (bench/, "lookup tables of queries by id").

    ``encoder`` computes (codes, reconstruction norms) of a block of vectors; the default encodes in
    this process (``local_encoder``), ``index.distributed.ray_encoder`` on a Ray cluster. Every
    encoder must give the same codes, so the artifact does not depend on where it was built.

    ``nlist`` partitions the items into that many lists (faiss k-means, see index/partition.py); ``None``
    chooses from n (``auto_nlist``: none below 100,000 items), 0 or 1 builds none. Rows are then stored list
    by list (item ids, codes and every per-item array in that order). ``nprobe`` is the default number of
    lists a query scans (default: an eighth of the lists, at least 1; requests may set their own).

    ``tune`` (partitioned indexes, when ``nprobe`` is not given): sweep (nprobe, rerank) on ``tune_queries``
    held-out queries (a sample of ``users``, else of the items) and make the fastest setting that reaches
    ``target_recall`` the index's default (index/tune.py). ``target_recall`` None: 0.95 when item vectors
    are kept (re-rank), else the cheapest setting on the plateau of the codes-only curve.
    """
    t0 = time.perf_counter()
    if items.d != codebooks.d:
        raise DimensionMismatchError(
            f"{items.source}: item dimension ({items.d}) does not match the codebook dimension ({codebooks.d})."
        )
    if users is not None and users.d != codebooks.d:
        raise DimensionMismatchError(
            f"{users.source}: user dimension ({users.d}) does not match the codebook dimension ({codebooks.d})."
        )
    if user_storage not in ("float32", "float16", "codes"):
        raise ConfigError(f"user storage must be float32, float16 or codes, got {user_storage!r}.")
    if item_vectors not in ("none", "float16", "float32", "int8"):
        raise ConfigError(f"item vectors must be none, float16, float32 or int8, got {item_vectors!r}.")
    xb = items.vectors
    encode = encoder or local_encoder(batch_size=batch_size, show_progress=show_progress)
    codes, recon_norms = encode(codebooks, xb, "items")
    zero_items = ~xb.any(axis=1)
    item_scale = row_norms(xb) if codebooks.norm_explicit else None
    ids = IdList.from_list(items.ids)
    partition, perm = _partition(codebooks, xb, nlist, nprobe, seed)
    if perm is not None:  # rows list by list
        codes, recon_norms, zero_items = np.take(codes, perm, axis=0), recon_norms[perm], zero_items[perm]
        item_scale = None if item_scale is None else item_scale[perm]
        ids = ids.permuted(perm)
    # xb stays in input order (a 1M x 64 reordered copy cost ~1 s): what needs index order takes perm's rows

    tables = None
    if pair_tables and codebooks.pair_tables_bytes() <= max_pair_table_bytes:
        tables = codebooks.pair_tables()
    elif pair_tables:
        logger.info(
            "pair tables would take %d bytes (> %d): queries by id will decode",
            codebooks.pair_tables_bytes(),
            max_pair_table_bytes,
        )

    store = None
    if users is not None:
        if user_storage == "codes":
            ucodes, _ = encode(codebooks, users.vectors, "users")
            uscale = row_norms(users.vectors) if codebooks.norm_explicit else None
            store = UserStore(ids=list(users.ids), storage="codes", codes=ucodes, scale=uscale)
        else:
            store = UserStore(ids=list(users.ids), storage=user_storage, vectors=users.vectors.astype(user_storage))
    iv, iv_scale = None, None
    if item_vectors == "int8":
        iv, iv_scale = int8_vectors(xb)  # the scale is per dimension: the same in any row order
    elif item_vectors != "none":
        iv = np.ascontiguousarray(xb.astype(item_vectors))
    if iv is not None and perm is not None:
        iv = np.take(iv, perm, axis=0)  # (np.take: a fraction of fancy indexing's time on 1M rows)

    index = CompressedIndex(
        codebooks=codebooks,
        codes=codes,
        item_ids=ids,
        recon_norms=recon_norms,
        zero_items=zero_items,
        item_scale=item_scale,
        pair_tables=tables,
        users=store,
        item_vectors=iv,
        item_vectors_scale=iv_scale,
        partition=partition,
        manifest={
            "source": {
                "items": {"path": items.source, "n": items.n, "d": items.d, "sha256": items.fingerprint()},
                **(
                    {"users": {"path": users.source, "n": users.n, "d": users.d, "sha256": users.fingerprint()}}
                    if users is not None
                    else {}
                ),
            },
            "build_seconds": round(time.perf_counter() - t0, 3),
            "batch_size": batch_size,
            "user_storage": user_storage if users is not None else None,
            "item_vectors": item_vectors,
        },
    )
    if perm is not None:  # input row perm[j] is row j: evaluation right after the build skips the id lookups
        index._source_order = (items.ids, perm)
    if partition is not None and tune and nprobe is None:
        index.manifest["search"] = _tune(index, xb, perm, users, target_recall, tune_queries, seed)
    if partition is not None:
        index.manifest["partition"] = partition_section(partition)
    # a few queries and their answers, replayed after a load (service hot reload self-test)
    # (the probes' query vectors: the first non-zero rows in index order, found among its first 256)
    index.manifest["probes"] = make_probes(index, xb if perm is None else xb[perm[:256]])
    logger.info("built %r in %.2fs", index, time.perf_counter() - t0)
    return index


def int8_vectors(x: NDArray[np.float32]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    """Per-dimension symmetric int8 copies: x ~= v * scale, scale_j = max_i |x_ij| / 127 (1 for an all-zero
    dimension). d bytes per item plus d floats in all; the re-rank reads v * scale."""
    amax = np.abs(x).max(axis=0).astype(np.float64) if len(x) else np.zeros(x.shape[1])
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    v = np.rint(x / scale).clip(-127, 127).astype(np.int8)
    return np.ascontiguousarray(v), scale


def _partition(
    codebooks: Codebooks, xb: NDArray[np.float32], nlist: int | None, nprobe: int | None, seed: int
) -> tuple[Partition | None, NDArray[np.int64] | None]:
    n = len(xb)
    nl = auto_nlist(n) if nlist is None else int(nlist)
    if nl < 0:
        raise ConfigError(f"nlist must be >= 0, got {nl}.")
    if nl > n:
        raise ConfigError(f"nlist ({nl}) must not exceed the number of items ({n}).")
    if nl <= 1:
        if nprobe is not None and nprobe != 1:
            raise ConfigError("nprobe applies to a partitioned index: give --nlist as well.")
        return None, None
    if nprobe is not None and not 1 <= nprobe <= nl:
        raise ConfigError(f"nprobe must be between 1 and nlist ({nl}), got {nprobe}.")
    t0 = time.perf_counter()
    kind = kind_for(codebooks.metric)
    y = codebooks.to_code_space(xb, normalize=False)
    centroids = train_partition(y, nl, kind, seed=seed)
    lists = assign(y, centroids, kind)
    perm, list_rows = order(lists, nl)
    part = Partition(centroids=centroids, list_rows=list_rows, kind=kind, nprobe=nprobe or max(1, nl // 8))
    logger.info("partitioned %d items into %d lists in %.2fs", n, nl, time.perf_counter() - t0)
    return part, perm


def _tune(
    index: CompressedIndex,
    xb: NDArray[np.float32],
    perm: NDArray[np.int64] | None,
    users: Embeddings | None,
    target: float | None,
    nq: int,
    seed: int,
) -> dict[str, object]:
    from .tune import DEFAULT_TARGET, tune_search

    rng = np.random.default_rng(seed + 7)
    source = users.vectors if users is not None else xb
    q = source[np.sort(rng.choice(len(source), size=min(nq, len(source)), replace=False))]
    if target is None and index.item_vectors is not None:
        target = DEFAULT_TARGET
    t0 = time.perf_counter()
    section = tune_search(
        index, xb, q, target_recall=target, query_source="users" if users is not None else "items", order=perm
    )
    section["seconds"] = round(time.perf_counter() - t0, 3)
    logger.info("tuned: nprobe=%s rerank=%s recall=%s (%s)", section["nprobe"], section["rerank"], section["recall"],
                section["rule"])  # fmt: skip
    return section


def partition_section(p: Partition) -> dict[str, object]:
    """The manifest's ``partition`` section."""
    sizes = p.sizes()
    return {
        "nlist": p.nlist,
        "kind": p.kind,
        "nprobe": p.nprobe,
        "list_sizes": {"min": int(sizes.min()), "median": int(np.median(sizes)), "max": int(sizes.max())},
    }


def attach_semantic_ids(
    index: CompressedIndex,
    tokenizer: Tokenizer,
    items: Embeddings,
    *,
    users: Embeddings | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Tokenize the index's items (and, when ``users`` is given, the index's users) with a trained
    RQ-VAE tokenizer and attach the semantic ids and their quality report to the index.

    ``items`` / ``users`` are the embeddings the tokenizer reads (e.g. title embeddings), matched to the
    index by id: they may hold more rows than the index, but must cover every indexed id.
    Returns the manifest section (also stored in ``index.manifest["semantic_ids"]``).
    """
    t0 = time.perf_counter()
    for emb, what in ((items, "item"), (users, "user")):
        if emb is not None and emb.d != tokenizer.d:
            raise DimensionMismatchError(
                f"{emb.source}: {what} dimension ({emb.d}) does not match the tokenizer's input dimension "
                f"({tokenizer.d})."
            )
    if users is not None and index.users is None:
        raise ConfigError("users can be tokenized only in an index built with users (--users).")
    xi = align(items, index.item_ids, "item")
    xu = align(users, index.users.ids, "user") if users is not None and index.users is not None else None
    # everything is computed before the index is touched: a failure leaves it as it was
    sem_items, item_rep = tokenize(tokenizer, xi, index.item_ids, kind="item", seed=seed)
    sem_users, user_rep = None, None
    if xu is not None and index.users is not None:
        sem_users, user_rep = tokenize(tokenizer, xu, index.users.ids, kind="user", seed=seed)
    section: dict[str, object] = {
        "levels": tokenizer.levels,
        "codebook_sizes": tokenizer.sizes,
        "string_form": "the L codes, then the dedup suffix, joined by '-'",
        "tokenizer": {
            **tokenizer.header(),
            "path": tokenizer.path,
            "fingerprint": tokenizer.fingerprint(),
            "config": tokenizer.config,
        },
        "source": {
            "items": {"path": items.source, "sha256": items.fingerprint()},
            **({"users": {"path": users.source, "sha256": users.fingerprint()}} if users is not None else {}),
        },
        "items": item_rep,
        "users": user_rep,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    index.semantic_items = sem_items
    index.semantic_users = sem_users
    index.manifest["semantic_ids"] = section
    return section
