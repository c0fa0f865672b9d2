"""Index metadata routes: the list, one index's manifest summary (with its semantic ids), one item's stored
codes."""

from __future__ import annotations

from fastapi import APIRouter

from vqrec.index import CompressedIndex

from ..deps import IndexDep, RegistryDep
from ..openapi import READ
from ..schemas import IndexDetail, IndexList, IndexSummary, ItemInfo, SemanticIdsSummary, UnavailableIndex

router = APIRouter(prefix="/v1/indexes", tags=["indexes"], responses=READ)


def summarize(name: str, index: CompressedIndex) -> IndexSummary:
    cb = index.codebooks
    nbytes = index.manifest.get("bytes", {})
    return IndexSummary(
        name=name,
        index_version=index.version,
        kind=cb.kind,
        metric=index.metric,
        n_items=len(index),
        n_users=len(index.users.ids) if index.users is not None else 0,
        d=cb.d,
        M=cb.M,
        nbits=cb.nbits,
        code_bytes_per_item=int(nbytes.get("code_bytes_per_item", cb.code_size)),
        index_bytes_per_item=float(nbytes.get("index_bytes_per_item", cb.code_size)),
    )


def semantic_summary(index: CompressedIndex) -> SemanticIdsSummary | None:
    """What the index's semantic ids are (None when it has none): levels, codebook sizes, counts, the
    tokenizer and the quality reports stored at build time (manifest ``semantic_ids``)."""
    items, users = index.semantic_items, index.semantic_users
    sem = items if items is not None else users
    if sem is None:
        return None
    meta = index.manifest.get("semantic_ids")
    meta = meta if isinstance(meta, dict) else {}
    return SemanticIdsSummary(
        levels=sem.levels,
        codebook_sizes=[int(k) for k in sem.sizes],
        n_items=len(items) if items is not None else 0,
        users_tokenized=users is not None,
        n_users=len(users) if users is not None else 0,
        tokenizer=meta.get("tokenizer") or {},
        items=(meta.get("items") or {}) if items is not None else {},
        users=(meta.get("users") or {}) if users is not None else None,
    )


@router.get("", response_model=IndexList, summary="the configured indexes")
def list_indexes(registry: RegistryDep) -> IndexList:
    return IndexList(
        indexes=[summarize(name, registry.indexes[name]) for name in sorted(registry.indexes)],
        unavailable=[UnavailableIndex(name=name, message=msg) for name, msg in sorted(registry.failed.items())],
    )


@router.get("/{name}", response_model=IndexDetail, summary="one index: method, counts, bytes, evaluation, semantic ids")
def get_index_detail(name: str, index: IndexDep) -> IndexDetail:
    m = index.manifest
    return IndexDetail(
        name=name,
        index_version=index.version,
        format_version=int(m.get("format_version", 0)),
        created_at=m.get("created_at"),
        method=m.get("method", index.codebooks.header()),
        metric=index.metric,
        similar_metric=index.similar_metric,
        n_items=len(index),
        n_users=len(index.users.ids) if index.users is not None else 0,
        d=index.d,
        rerank_available=index.item_vectors is not None,
        scan=index.scan_kind,
        nlist=index.nlist,
        nprobe=index.nprobe,
        rerank_default=index.default_rerank if index.item_vectors is not None else 0,
        search=m.get("search"),
        bytes=m.get("bytes", {}),
        evaluation=m.get("evaluation", {}),
        train_report=m.get("train_report", {}),
        trainer_config=m.get("trainer_config", {}),
        source=m.get("source", {}),
        semantic_ids=semantic_summary(index),
    )


@router.get("/{name}/items/{item_id}", response_model=ItemInfo, summary="one item's codes, norm and zero flag")
def get_item(item_id: str, index: IndexDep) -> ItemInfo:
    info = index.item_info(item_id)
    scale = None if index.item_scale is None else float(index.item_scale[info["row"]])
    return ItemInfo(**info, scale=scale)
