"""Trained codebooks and built indexes on the shared synthetic set, cached for the session.

Tiny configs keep the whole grid (pq/opq/rq x ip/cosine/l2) to a few seconds.

Every test using ``built`` runs on both row layouts (the ``layout`` fixture, ids ``flat`` / ``part``): the flat
one (``nlist=0``) and a partitioned one probing every list (``nlist=nprobe=8``), which must answer exactly as
the flat one. Rows of a partitioned index are stored list by list, so a test goes from rows to items through
``index.item_ids`` / ``index.row_of`` (row i is not item i).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vqrec.index import Codebooks, CompressedIndex, build_index
from vqrec.trainers.config import TrainConfig
from vqrec.trainers.quantizers import train

TINY: dict[str, Any] = {"M": 8, "nbits": 6, "niter": 10, "opq_niter": 5, "beam_size": 4, "eval_queries": 20}
# build_index keyword arguments per layout; the partitioned one probes every list (answers equal the flat ones)
LAYOUTS: dict[str, dict[str, int]] = {"flat": {"nlist": 0}, "partitioned": {"nlist": 8, "nprobe": 8}}


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


# Module scope, not session: pytest groups the tests of a parametrized fixture by its scope, so a session-scoped
# layout would run every module's flat tests, then every module's partitioned ones (module fixtures set up twice);
# per module, a file's tests stay together (its flat ones, then its partitioned ones). Indexes are cached per
# session all the same (_built_cache).
@pytest.fixture(scope="module", params=list(LAYOUTS), ids=["flat", "part"])
def layout(request: pytest.FixtureRequest) -> str:
    """The row layout of the indexes ``built`` gives: "flat" or "partitioned" (test ids ``flat`` / ``part``)."""
    return str(request.param)


@pytest.fixture(scope="module")
def layout_kwargs(layout: str) -> dict[str, int]:
    """The ``build_index`` keyword arguments of the test's layout (a module building its own indexes uses this
    to run on both layouts too)."""
    return dict(LAYOUTS[layout])


@pytest.fixture(scope="session")
def _built_cache() -> dict[tuple[Any, ...], CompressedIndex]:
    """The indexes ``built`` gives, for the whole session (``built`` itself is set up per module and layout)."""
    return {}


@pytest.fixture(scope="module")
def built(recsys, trained, layout, _built_cache) -> Callable[..., CompressedIndex]:  # type: ignore[no-untyped-def]
    """``built(method, metric, *, item_vectors="none", user_storage="float32", **cfg_overrides)`` ->
    CompressedIndex over ``recsys.items`` with ``recsys.users`` stored, in the ``layout`` of the test (cached: do
    not mutate it). Both layouts share the trained codebooks."""
    cache = _built_cache

    def get(
        method: str, metric: str, *, item_vectors: str = "none", user_storage: str = "float32", **over: Any
    ) -> CompressedIndex:
        key = (layout, method, metric, item_vectors, user_storage, tuple(sorted(over.items())))
        if key not in cache:
            cache[key] = build_index(
                trained(method, metric, **over),
                recsys.items,
                users=recsys.users,
                user_storage=user_storage,
                item_vectors=item_vectors,  # type: ignore[arg-type]
                pair_tables=True,  # the artifact tests read pair_tables.npy; the default (decode) is tested too
                show_progress=False,
                **LAYOUTS[layout],
            )
        return cache[key]

    return get
