"""Request and response bodies (pydantic). Scores are higher-is-better everywhere (see index/index.py).

    RecommendRequest   {"user_id": "u1" | 17}  or  {"vector": [float, ...]}   (exactly one)
    SimilarRequest     {"item_id": "i9" | 42}  or  {"vector": [float, ...]}   (exactly one)
      + "k": int (default settings.default_k, 1..settings.max_k), "exclude_item_ids": [id, ...],
        "rerank": int (0 = off; else re-score that many ADC candidates with the stored float vectors)
    Batch*Request      {"queries": [<the single request>, ...]}
    QueryResponse      {"results": [{"id": str, "score": float}, ...], "index_version": str, "took_ms": float}
    BatchQueryResponse {"results": [[...], ...] (one list per query, in order), "index_version", "took_ms"}

Ids may be JSON strings or integers; integers are turned into their decimal string.
"""

from __future__ import annotations

from typing import Annotated, Any

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

from index import MAX_K

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
    rerank: Annotated[int, Strict()] = Field(
        0,
        ge=0,
        le=MAX_RERANK,
        description="0 = ADC scores; N > 0 = re-score the top max(N, k) candidates exactly (needs item vectors)",
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
    bytes: dict[str, Any]
    evaluation: dict[str, Any]
    train_report: dict[str, Any]
    trainer_config: dict[str, Any]
    source: dict[str, Any]


class ItemInfo(BaseModel):
    id: str
    row: int
    codes: list[int]
    norm: float = Field(description="reconstruction norm |x_hat| in code space")
    zero_vector: bool = Field(description="the input embedding was all zeros (no item->item neighbours)")
    scale: float | None = Field(None, description="|x|, for norm-explicit codebooks (x_hat = scale * y_hat)")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    indexes: dict[str, str] = Field(description="name -> index_version")
