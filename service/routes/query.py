"""Query routes: user->item (recommend) and item->item (similar), single and batch.

A batch is answered with as few index calls as possible: queries are grouped by kind (id or
vector), rerank and nprobe setting, each group is one call with the group's largest k, and each query's
list is cut to its own k. Top-k is a total order (score desc, then row asc) and exclusions are
applied per query, so a cut list equals that query's single answer (same ids; scores equal up to
float rounding of the batched matmul). With rerank the candidate count max(rerank, k) is part of
the group key, because it changes which candidates are re-scored.

One bad query fails the whole batch (one error, naming the query's position where the service
checks it: k, exclude size, vector dimension, schema errors).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from vqrec.index import CompressedIndex, DimensionMismatchError, NonFiniteError, SearchResult

from ..deps import IndexDep, SettingsDep
from ..errors import BatchTooLargeError, ExcludeTooLargeError, InvalidKError
from ..metrics import count_served
from ..openapi import QUERY
from ..schemas import (
    FLOAT32_MAX,
    BatchQueryResponse,
    BatchRecommendRequest,
    BatchSimilarRequest,
    Neighbor,
    QueryResponse,
    RecommendRequest,
    SimilarRequest,
)
from ..settings import Settings

router = APIRouter(prefix="/v1/indexes/{name}", tags=["query"], responses=QUERY)

Query = RecommendRequest | SimilarRequest
ByIds = Callable[..., list[SearchResult]]


def _check_query(q: Query, index: CompressedIndex, settings: Settings, pos: int | None) -> int:
    """The query's k (default filled in) after checking k, the exclude list and the vector dimension.

    ``pos`` is the query's position in a batch (None for a single query), named in the messages.
    """
    field = "" if pos is None else f"queries[{pos}]."
    k = settings.default_k if q.k is None else q.k
    if not 1 <= k <= settings.max_k:
        raise InvalidKError(f"{field}k must be between 1 and {settings.max_k}, got {k}.")
    if len(q.exclude_item_ids) > settings.max_exclude:
        raise ExcludeTooLargeError(
            f"{field}exclude_item_ids has {len(q.exclude_item_ids)} ids; at most {settings.max_exclude} are allowed."
        )
    if q.vector is not None and len(q.vector) != index.d:
        # checked here too so a batch names the query (and ragged vectors never reach numpy)
        where = "" if pos is None else f"queries[{pos}]: "
        raise DimensionMismatchError(
            f"{where}Provided query dimension ({len(q.vector)}) does not match the index dimension ({index.d})."
        )
    if q.vector is not None:
        x = np.asarray(q.vector, dtype=np.float64)
        if float(x @ x) > FLOAT32_MAX:
            # every value fits float32 (schema) but |x|^2 does not: scores would be inf or NaN
            where = "" if pos is None else f"queries[{pos}]: "
            raise NonFiniteError(f"{where}the query vector's squared norm overflows float32; scale it down.")
    return k


def run_queries(
    index: CompressedIndex,
    queries: Sequence[Query],
    settings: Settings,
    *,
    id_field: str,
    by_ids: ByIds,
    by_vectors: ByIds,
    batch: bool,
) -> list[list[Neighbor]]:
    """Answer ``queries`` in order; ``by_ids`` / ``by_vectors`` are bound index methods taking lists."""
    if batch and len(queries) > settings.max_batch:
        raise BatchTooLargeError(f"batch has {len(queries)} queries; at most {settings.max_batch} are allowed.")
    ks = [_check_query(q, index, settings, i if batch else None) for i, q in enumerate(queries)]
    groups: dict[tuple[bool, int, int, int | None], list[int]] = defaultdict(list)
    default_rr = index.default_rerank if index.item_vectors is not None else 0
    for i, (q, k) in enumerate(zip(queries, ks, strict=True)):
        rr = default_rr if q.rerank is None else q.rerank
        groups[(q.vector is not None, rr, max(rr, k) if rr else 0, q.nprobe)].append(i)
    out: list[list[Neighbor]] = [[] for _ in queries]
    for (is_vector, rerank, _, nprobe), members in groups.items():
        inputs: list[Any] = [queries[i].vector if is_vector else getattr(queries[i], id_field) for i in members]
        fn = by_vectors if is_vector else by_ids
        kmax = max(ks[i] for i in members)
        excl = [queries[i].exclude_item_ids for i in members]
        results = fn(inputs, kmax, exclude=excl, rerank=rerank, nprobe=nprobe)
        for i, res in zip(members, results, strict=True):
            out[i] = [{"id": s, "score": v} for s, v in zip(res.ids[: ks[i]], res.scores[: ks[i]], strict=True)]
    return out


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


# A single query small enough is answered on the event loop: measured on 2 cores, the hop to the thread pool
# and back (and the GIL passing between the two threads) cost more than a partitioned query's scan. A query
# that may scan more (a flat index over many items, a long exclude list, a deep re-rank) goes to the pool so
# the loop keeps answering.
INLINE_MAX_SCAN = 1 << 18  # items a query may scan and still run on the event loop
INLINE_MAX_EXTRA = 1000  # exclude ids, re-rank depth


def _inline(index: CompressedIndex, q: Query) -> bool:
    nlist = index.nlist
    nprobe = q.nprobe if q.nprobe is not None else index.nprobe
    scanned = len(index) if not nlist else len(index) * min(nprobe, nlist) // nlist
    rerank = q.rerank or 0
    return scanned <= INLINE_MAX_SCAN and len(q.exclude_item_ids) <= INLINE_MAX_EXTRA and rerank <= INLINE_MAX_EXTRA


def _single(
    request: Request, body: Query, index: CompressedIndex, settings: Settings, by: tuple[ByIds, ByIds, str]
) -> QueryResponse:
    t0 = time.perf_counter()
    by_ids, by_vectors, id_field = by
    (results,) = run_queries(
        index, [body], settings, id_field=id_field, by_ids=by_ids, by_vectors=by_vectors, batch=False
    )
    count_served(request, len(results))
    return QueryResponse(results=results, index_version=index.version, took_ms=_ms(t0))


@router.post("/recommend", response_model=QueryResponse, summary="user->item top-k")
async def recommend(request: Request, body: RecommendRequest, index: IndexDep, settings: SettingsDep) -> QueryResponse:
    args = (request, body, index, settings, (index.recommend, index.search, "user_id"))
    return _single(*args) if _inline(index, body) else await run_in_threadpool(_single, *args)


@router.post("/similar", response_model=QueryResponse, summary="item->item top-k (never the query item)")
async def similar(request: Request, body: SimilarRequest, index: IndexDep, settings: SettingsDep) -> QueryResponse:
    args = (request, body, index, settings, (index.similar, index.similar_to_vector, "item_id"))
    return _single(*args) if _inline(index, body) else await run_in_threadpool(_single, *args)


@router.post("/recommend/batch", response_model=BatchQueryResponse, summary="user->item top-k, many queries")
def recommend_batch(
    request: Request, body: BatchRecommendRequest, index: IndexDep, settings: SettingsDep
) -> BatchQueryResponse:
    t0 = time.perf_counter()
    results = run_queries(
        index, body.queries, settings, id_field="user_id", by_ids=index.recommend, by_vectors=index.search, batch=True
    )
    count_served(request, sum(len(r) for r in results))
    return BatchQueryResponse(results=results, index_version=index.version, took_ms=_ms(t0))


@router.post("/similar/batch", response_model=BatchQueryResponse, summary="item->item top-k, many queries")
def similar_batch(
    request: Request, body: BatchSimilarRequest, index: IndexDep, settings: SettingsDep
) -> BatchQueryResponse:
    t0 = time.perf_counter()
    results = run_queries(
        index,
        body.queries,
        settings,
        id_field="item_id",
        by_ids=index.similar,
        by_vectors=index.similar_to_vector,
        batch=True,
    )
    count_served(request, sum(len(r) for r in results))
    return BatchQueryResponse(results=results, index_version=index.version, took_ms=_ms(t0))
