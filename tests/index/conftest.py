"""Trained codebooks and built indexes on the shared synthetic set, cached for the session.

Tiny configs keep the whole grid (pq/opq/rq x ip/cosine/l2) to a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vqrec.index import Codebooks, CompressedIndex, build_index
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

TINY: dict[str, Any] = {"M": 8, "nbits": 6, "niter": 10, "opq_niter": 5, "beam_size": 4, "eval_queries": 20}


@pytest.fixture(scope="session")
def trained(recsys) -> Callable[..., Codebooks]:  # type: ignore[no-untyped-def]
    """``trained(method, metric, **cfg_overrides)`` -> Codebooks trained on ``recsys.items`` (cached)."""
    cache: dict[tuple[Any, ...], Codebooks] = {}

    def get(method: str, metric: str, **over: Any) -> Codebooks:
        key = (method, metric, tuple(sorted(over.items())))
        if key not in cache:
            cfg = TrainConfig(method=method, metric=metric, **{**TINY, **over})
            cache[key] = train(recsys.items, cfg, show_progress=False)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def built(recsys, trained) -> Callable[..., CompressedIndex]:  # type: ignore[no-untyped-def]
    """``built(method, metric, *, item_vectors="none", user_storage="float32", **cfg_overrides)`` ->
    CompressedIndex over ``recsys.items`` with ``recsys.users`` stored (cached: do not mutate it)."""
    cache: dict[tuple[Any, ...], CompressedIndex] = {}

    def get(
        method: str, metric: str, *, item_vectors: str = "none", user_storage: str = "float32", **over: Any
    ) -> CompressedIndex:
        key = (method, metric, item_vectors, user_storage, tuple(sorted(over.items())))
        if key not in cache:
            cache[key] = build_index(
                trained(method, metric, **over),
                recsys.items,
                users=recsys.users,
                user_storage=user_storage,
                item_vectors=item_vectors,  # type: ignore[arg-type]
                pair_tables=True,  # the artifact tests read pair_tables.npy; the default (decode) is tested too
                show_progress=False,
            )
        return cache[key]

    return get
