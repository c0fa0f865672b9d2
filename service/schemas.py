"""Request and response bodies (pydantic). Scores are higher-is-better everywhere (see index/index.py).

    RecommendRequest   {"user_id": "u1" | 17}  or  {"vector": [float, ...]}   (exactly one)
    SimilarRequest     {"item_id": "i9" | 42}  or  {"vector": [float, ...]}   (exactly one)
      + "k": int (default settings.default_k, 1..settings.max_k), "exclude_item_ids": [id, ...],
        "rerank": int (0 = off; else re-score that many ADC candidates with the stored float vectors),
        "nprobe": int (lists scanned in a partitioned index; default the index's own setting)
    Batch*Request      {"queries": [<the single request>, ...]}
    QueryResponse      {"results": [{"id": str, "score": float}, ...], "index_version": str, "took_ms": float}
    BatchQueryResponse {"results": [[...], ...] (one list per query, in order), "index_version", "took_ms"}

Ids may be JSON strings or integers; integers are turned into their decimal string.

Semantic ids (string form "c1-...-cL-suffix", e.g. "12-5-200-0"):
    SemanticIdResponse  {"index", "index_version", "entity", "id", "codes", "suffix", "semantic_id"}
    LookupRequest       exactly one of "item_ids" | "user_ids" | "semantic_ids" (+ "entity" for the last),
                        "allow_unknown": bool
    LookupResponse      {"index", "index_version", "entity", "results": [SemanticEntry], "unknown": [str]}
    PrefixRequest       {"prefix": [int], "entity": "item"|"user", "limit": 1..1000, "cursor": str|null}
    PrefixResponse      {"index", "index_version", "entity", "prefix", "levels", "total", "results",
                         "next_tokens": [{"token", "count"}], "next_is_suffix", "next_cursor"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from vqrec.index import MAX_K
from vqrec.index.partition import MAX_NLIST

MAX_RERANK = 10 * MAX_K  # the index's own bound (CompressedIndex._check_k)


def _id_to_str(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, str):
        return v
    raise PydanticCustomError("id_type", "ids must be strings or integers")


Id = Annotated[
    str,
    BeforeValidator(_id_to_str),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "integers become strings"}),
]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _fits_float32(v: float) -> float:
    if abs(v) > FLOAT32_MAX:
        raise PydanticCustomError(
            "float32_overflow", "{value} is outside the float32 range (it would be infinite)", {"value": v}
        )
    return v


# strict: no numeric strings or booleans; NaN / Infinity are rejected with type "finite_number", values
# beyond float32 with "float32_overflow" (both answered as code non_finite)
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False), AfterValidator(_fits_float32)]


class _QueryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vector: list[FiniteFloat] | None = Field(None, description="a raw query vector of the index dimension d")
    k: Annotated[int, Strict()] | None = Field(
        None, description="results wanted; default settings.default_k, at most settings.max_k (<= 1000)"
    )
    exclude_item_ids: list[Id] = Field(
        default_factory=list, description="item ids never returned (unknown ids are ignored)"
    )
    rerank: Annotated[int, Strict()] | None = Field(
        None,
        ge=0,
        le=MAX_RERANK,
        description="0 = ADC scores; N > 0 = re-score the top max(N, k) candidates exactly (needs item vectors); "
        "default: the index's setting (GET /v1/indexes/{name}: rerank_default; 0 unless the build tuned it)",
    )
    nprobe: Annotated[int, Strict()] | None = Field(
        None,
        ge=1,
        le=MAX_NLIST,
        description="lists a partitioned index scans for this query (more: higher recall, slower); default: the "
        "index's setting (GET /v1/indexes/{name}: nprobe); capped at nlist; ignored by an unpartitioned index",
    )

    def _exactly_one(self, id_field: str) -> None:
        has_id, has_vec = getattr(self, id_field) is not None, self.vector is not None
        if has_id == has_vec:
            raise PydanticCustomError(
                "invalid_query",
                "exactly one of {id_field} or vector is required, got {got}",
                {"id_field": id_field, "got": "both" if has_id else "neither"},
            )


class RecommendRequest(_QueryOptions):
    """user->item: top-k items for a stored user, or for a raw vector, under the index metric."""

    user_id: Id | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RecommendRequest:
        self._exactly_one("user_id")
        return self


class SimilarRequest(_QueryOptions):
    """item->item: neighbours of a stored item (never itself), or of a raw vector, under the similar metric."""

    item_id: Id | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SimilarRequest:
        self._exactly_one("item_id")
        return self


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[RecommendRequest] = Field(description="at most settings.max_batch queries")


class BatchSimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[SimilarRequest] = Field(description="at most settings.max_batch queries")


class Neighbor(TypedDict):
    """One result. A TypedDict, not a model: a full batch holds up to 256 x 1000 of them, and plain dicts
    validate and serialize several times faster than model instances."""

    id: str
    score: Annotated[float, Field(description="higher is better")]


class QueryResponse(BaseModel):
    results: list[Neighbor] = Field(description="best first; fewer than k when fewer items qualify")
    index_version: str
    took_ms: float


class BatchQueryResponse(BaseModel):
    results: list[list[Neighbor]] = Field(description="one list per query, in request order")
    index_version: str
    took_ms: float


# ---- index metadata ----------------------------------------------------------------------------
class IndexSummary(BaseModel):
    name: str
    index_version: str
    kind: str
    metric: str
    n_items: int
    n_users: int
    d: int
    M: int
    nbits: int
    code_bytes_per_item: int
    index_bytes_per_item: float


class UnavailableIndex(BaseModel):
    name: str
    message: str


class IndexList(BaseModel):
    indexes: list[IndexSummary]
    unavailable: list[UnavailableIndex] = Field(description="configured indexes that failed to load")


class SemanticIdsSummary(BaseModel):
    levels: int = Field(description="codes per semantic id (the dedup suffix comes after them)")
    codebook_sizes: list[int] = Field(description="codes of level l are integers in 0..codebook_sizes[l]-1")
    n_items: int
    users_tokenized: bool = Field(description="users have semantic ids too (entity 'user' is served)")
    n_users: int = Field(description="users with semantic ids (0 when not tokenized)")
    tokenizer: dict[str, Any] = Field(description="the RQ-VAE tokenizer: kind, d, levels, fingerprint, ...")
    items: dict[str, Any] = Field(
        description="quality report of the item ids: per-level usage, collisions before dedup, max suffix, "
        "reconstruction, neighbourhood preservation"
    )
    users: dict[str, Any] | None = Field(None, description="the same report for the users, when tokenized")


class IndexDetail(BaseModel):
    name: str
    index_version: str
    format_version: int
    created_at: str | None
    method: dict[str, Any] = Field(description="kind, metric, d, M, nbits, ksub, norm_explicit, code_size, ...")
    metric: str = Field(description="user->item score")
    similar_metric: str = Field(description="item->item score")
    n_items: int
    n_users: int
    d: int
    rerank_available: bool = Field(description="item vectors are stored, so rerank > 0 is allowed")
    scan: str = Field(
        "flat", description="how queries scan: fastscan4 (4-bit codes in SIMD blocks), lists (codes per list), flat"
    )
    nlist: int = Field(1, description="lists the items are partitioned into (1: not partitioned)")
    nprobe: int = Field(1, description="lists a query scans by default (a request's nprobe overrides it)")
    rerank_default: int = Field(0, description="candidates re-ranked when a request gives no rerank")
    search: dict[str, Any] | None = Field(
        None, description="the build's tuning: target recall, the chosen nprobe / rerank, the recall/QPS curve"
    )
    bytes: dict[str, Any]
    evaluation: dict[str, Any]
    train_report: dict[str, Any]
    trainer_config: dict[str, Any]
    source: dict[str, Any]
    semantic_ids: SemanticIdsSummary | None = Field(
        None, description="the index's semantic ids (null when it was built without them)"
    )


class ItemInfo(BaseModel):
    id: str
    row: int
    codes: list[int]
    norm: float = Field(description="reconstruction norm |x_hat| in code space")
    zero_vector: bool = Field(description="the input embedding was all zeros (no item->item neighbours)")
    scale: float | None = Field(None, description="|x|, for norm-explicit codebooks (x_hat = scale * y_hat)")


class Health(BaseModel):
    status: str


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable: unknown_index, invalid_k, payload_too_large, ...")
    message: str = Field(description="what was wrong, naming the value (long ids truncated)")
    details: dict[str, Any] | None = Field(default=None, description="per-error extras, e.g. the fields at fault")


class ErrorResponse(BaseModel):
    """The one error body of every 4xx/5xx the service answers (service/errors.py)."""

    error: ErrorInfo


class Readiness(BaseModel):
    status: str
    indexes: dict[str, str] = Field(description="name -> index_version (empty: no index published yet)")
    removed: dict[str, str] = Field(
        default_factory=dict, description="names served earlier whose directory was removed -> why"
    )


# ---- semantic ids ------------------------------------------------------------------------------
Entity = Literal["item", "user"]
MAX_PAGE = 1000  # results per semantic-ids/prefix page


class SemanticEntry(TypedDict):
    """One entity's semantic id (a TypedDict: a page holds up to 1000 of them)."""

    id: str
    codes: Annotated[list[int], Field(description="one code per level")]
    suffix: Annotated[int, Field(description="dedup suffix: 0 for the first entity with these codes, 1, ...")]
    semantic_id: Annotated[str, Field(description='string form: the codes then the suffix, joined by "-"')]


class SemanticIdResponse(BaseModel):
    index: str
    index_version: str
    entity: Entity
    id: str = Field(description="the item or user id asked for")
    codes: list[int] = Field(description="one code per level")
    suffix: int = Field(description="dedup suffix: 0 for the first entity with these codes, 1, ...")
    semantic_id: str = Field(description='e.g. "12-5-200-0": the codes, then the suffix')


class LookupRequest(BaseModel):
    """Exactly one of item_ids, user_ids, semantic_ids (at most settings.max_batch ids)."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[Id] | None = Field(None, description="items whose semantic ids are wanted")
    user_ids: list[Id] | None = Field(None, description="users whose semantic ids are wanted")
    semantic_ids: list[Annotated[str, Strict()]] | None = Field(
        None, description='semantic ids ("12-5-200-0") to resolve to the item (or, with entity "user", user)'
    )
    entity: Entity | None = Field(
        None, description='with semantic_ids: "item" (default) or "user"; with item_ids/user_ids it must agree'
    )
    allow_unknown: Annotated[bool, Strict()] = Field(
        False, description="false: any unknown id is a 404 naming them; true: they are listed in 'unknown'"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> LookupRequest:
        given = [f for f in ("item_ids", "user_ids", "semantic_ids") if getattr(self, f) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "invalid_query",
                "exactly one of item_ids, user_ids or semantic_ids is required, got {got}",
                {"got": " and ".join(given) if given else "none"},
            )
        implied = {"item_ids": "item", "user_ids": "user"}.get(given[0])
        if implied is not None and self.entity not in (None, implied):
            raise PydanticCustomError(
                "invalid_query",
                "entity '{entity}' contradicts {field} (entity is only needed with semantic_ids)",
                {"entity": str(self.entity), "field": given[0]},
            )
        return self

    @property
    def kind(self) -> Entity:
        if self.user_ids is not None:
            return "user"
        if self.item_ids is not None:
            return "item"
        return self.entity or "item"


class LookupResponse(BaseModel):
    index: str
    index_version: str
    entity: Entity
    results: list[SemanticEntry] = Field(description="one per known id, in request order (repeats kept)")
    unknown: list[str] = Field(
        description="ids (or semantic ids) that matched nothing, in request order, each once; only with "
        "allow_unknown (otherwise they are a 404)"
    )


# any JSON value in the schema's place: each element is checked by SemanticIds.check_prefix, so a code that
# is not an integer (2.5, "3", true) is an invalid_prefix like an out-of-range one, not a validation_error
PrefixCode = Annotated[Any, WithJsonSchema({"type": "integer", "minimum": 0})]


class PrefixRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: list[PrefixCode] = Field(
        default_factory=list,
        description="the first codes of a semantic id, at most `levels` of them ([] = every entity); code l "
        "must be in 0..codebook_sizes[l]-1",
    )
    entity: Entity = "item"
    limit: Annotated[int, Strict()] = Field(100, ge=1, le=MAX_PAGE, description="results per page (1..1000)")
    cursor: Annotated[str, Strict()] | None = Field(
        None, description="next_cursor of the previous page, sent with the same prefix and entity"
    )


class NextToken(TypedDict):
    token: int
    count: Annotated[int, Field(description="entities under prefix + [token]")]


class PrefixResponse(BaseModel):
    index: str
    index_version: str
    entity: Entity
    prefix: list[int]
    levels: int
    total: int = Field(description="entities whose semantic id starts with the prefix (0: a dead end)")
    results: list[SemanticEntry] = Field(description="this page, in semantic-id order (codes, then suffix)")
    next_tokens: list[NextToken] = Field(
        description="the codes that can follow the prefix (ascending), each with its entity count; "
        "when len(prefix) == levels they are the dedup suffixes"
    )
    next_is_suffix: bool = Field(description="len(prefix) == levels: next_tokens are suffixes, not codes")
    next_cursor: str | None = Field(description="null on the last page")
