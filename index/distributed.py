"""Encoding and evaluation on Ray Data, for catalogues that outgrow one machine (optional extra
``distributed``).

The codebooks are trained on a sample on the driver (``vqrec train``); this module only moves the
encoding: the codebook arrays and the vectors are put in Ray's object store once (broadcast), a Ray
dataset of row numbers is split into ``shards`` blocks, ``map_batches`` encodes each batch of rows on
whichever worker runs it, every encoded batch is written as one shard file (row numbers, codes,
reconstruction norms), and the driver merges the shards back into row order. ``build_index`` then
assembles exactly the index a single process builds: codes are computed by the same
``index.build.encode_block`` on the same codebooks, so they are identical byte for byte (tested).

The evaluation (``ray_eval_runner``, for ``index.eval.evaluate_index``) moves the same way: the index
arrays and the float items are broadcast, each worker rebuilds the index and the exact-search oracle
once (a pool of actors that ends with the evaluation), and ``map_batches`` runs the blocks of evaluation
queries that ``evaluate_index`` planned on the driver. The answers come back to the driver, which computes
the figures, so the report is the one a single process writes (tested).

    ray.init()                               # local: all cores of this machine
    ray.init(address="ray://head:10001")     # a cluster (or set RAY_ADDRESS); see docs/operations.md

Nothing else in ``index/`` or the service imports Ray; it is imported inside these functions.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .build import Encoder, encode_block
from .codebooks import Codebooks
from .errors import ConfigError, DistributedError
from .eval import Block, EvalContext, EvalRunner, eval_block
from .index import CompressedIndex

INSTALL_HINT = 'pip install -e ".[distributed]"'


def require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"distributed encoding needs Ray Data (the 'distributed' extra): {INSTALL_HINT}") from None
    return ray


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to ``address`` (a cluster, "auto", or None for a local Ray on this machine) unless Ray is
    already initialised; returns the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            kw["address"] = address
        elif num_cpus:
            kw["num_cpus"] = num_cpus
        ray.init(**kw)
    return ray


def _encode_batch(
    batch: dict[str, NDArray[Any]], arrays_ref: Any, vectors_ref: Any, header: dict[str, Any]
) -> dict[str, Any]:
    import ray

    codebooks = Codebooks.from_arrays(header, ray.get(arrays_ref))
    rows = np.asarray(batch["id"], dtype=np.int64)
    codes, norms = encode_block(codebooks, np.ascontiguousarray(ray.get(vectors_ref)[rows], dtype=np.float32))
    return {"row": rows, "codes": codes, "norm": norms}


def ray_encoder(
    *, shards: int | None = None, batch_size: int = 65536, shard_dir: str | None = None, address: str | None = None
) -> Encoder:
    """An ``index.build`` encoder that runs on Ray Data (see the module docstring).

    ``shards``: blocks the rows are split into (default: 2 x the cluster's CPUs). ``shard_dir``: where
    the encoded shards are written before the merge (default: a temporary directory, removed after).
    """

    def encode(codebooks: Codebooks, x: NDArray[np.float32], what: str) -> tuple[NDArray[np.uint8], NDArray[Any]]:
        ray = ensure_ray(address)
        n = len(x)
        nblocks = max(1, min(shards or 2 * int(ray.cluster_resources().get("CPU", 1)), n))
        arrays_ref = ray.put(codebooks.arrays())  # broadcast once: every task reads the same objects
        vectors_ref = ray.put(np.ascontiguousarray(x, dtype=np.float32))
        encoded = ray.data.range(n, override_num_blocks=nblocks).map_batches(
            _encode_batch,
            fn_kwargs={"arrays_ref": arrays_ref, "vectors_ref": vectors_ref, "header": codebooks.header()},
            batch_size=max(1, min(batch_size, -(-n // nblocks))),
            batch_format="numpy",
        )
        with tempfile.TemporaryDirectory(prefix=f"vqrec-shards-{what}-") as tmp:
            out = shard_dir or tmp
            os.makedirs(out, exist_ok=True)
            for stale in glob.glob(os.path.join(out, f"{what}-*.npz")):
                os.remove(stale)
            # one shard file per encoded batch as results stream in, then one merge in row order
            for k, b in enumerate(encoded.iter_batches(batch_size=None, batch_format="numpy")):
                np.savez(os.path.join(out, f"{what}-{k:05d}.npz"), row=b["row"], codes=b["codes"], norm=b["norm"])
            return merge_shards(sorted(glob.glob(os.path.join(out, f"{what}-*.npz"))), n, codebooks.M)

    return encode


def merge_shards(paths: list[str], n: int, M: int) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Codes and norms in row order from encoded shard files; every row exactly once."""
    codes = np.empty((n, M), dtype=np.uint8)
    norms = np.empty(n, dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            rows = z["row"]
            if seen[rows].any():
                raise DistributedError(f"{p}: rows encoded twice while merging shards.")
            seen[rows] = True
            codes[rows] = z["codes"]
            norms[rows] = z["norm"]
    if not seen.all():
        raise DistributedError(f"merging shards: {int((~seen).sum())} of {n} rows were not encoded.")
    return codes, norms


# ---- evaluation --------------------------------------------------------------------------------
_IndexParts = tuple[dict[str, Any], dict[str, Any]]


def index_parts(index: CompressedIndex) -> _IndexParts:
    """What a worker needs to answer evaluation queries exactly as ``index`` does: codebook header and
    arrays plus the item arrays (no users, no semantic ids: evaluation queries are vectors and item ids)."""
    cb = index.codebooks
    return (
        {"codebooks": cb.header(), "item_ids": list(index.item_ids), "lut_path": index.lut_path},
        {
            "codebooks": cb.arrays(),
            "codes": index.codes,
            "recon_norms": index.recon_norms,
            "zero_items": index.zero_items,
            "item_scale": index.item_scale,
            "pair_tables": index.pair_tables,
            "item_vectors": index.item_vectors,
        },
    )


def index_from_parts(parts: _IndexParts) -> CompressedIndex:
    header, arrays = parts
    return CompressedIndex(
        codebooks=Codebooks.from_arrays(header["codebooks"], arrays["codebooks"]),
        codes=arrays["codes"],
        item_ids=header["item_ids"],
        recon_norms=arrays["recon_norms"],
        zero_items=arrays["zero_items"],
        item_scale=arrays["item_scale"],
        pair_tables=arrays["pair_tables"],
        item_vectors=arrays["item_vectors"],
        lut_path=header["lut_path"],
    )


def _pack(answer: dict[str, NDArray[Any]]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **answer)
    return buf.getvalue()


def _unpack(payload: bytes) -> dict[str, NDArray[Any]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _get(ref: Any) -> Any:
    import ray

    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


class _EvalWorker:
    """A Ray Data actor for one evaluation: rebuilds the index and the exact-search oracle once, then
    answers blocks. The actors end with the evaluation, and so does the memory they hold."""

    def __init__(self, parts_ref: Any, xb_ref: Any, blocks_ref: Any) -> None:
        self.ctx = EvalContext(index_from_parts(_get(parts_ref)), _get(xb_ref))
        self.blocks: list[Block] = _get(blocks_ref)

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, Any]:
        ids = np.asarray(batch["id"], dtype=np.int64)
        return {"id": ids, "answer": np.array([_pack(eval_block(self.ctx, self.blocks[j])) for j in ids], dtype=object)}


def ray_eval_runner(*, address: str | None = None, workers: int | None = None) -> EvalRunner:
    """An ``index.eval`` runner on Ray Data: a pool of ``workers`` actors (default: one per CPU of the
    cluster, at most one per block) answers the blocks of evaluation queries (see the module docstring);
    the answers are returned to the driver in block order."""

    def run(index: CompressedIndex, xb: NDArray[np.float32], blocks: list[Block]) -> list[dict[str, Any]]:
        ray = ensure_ray(address)
        if not blocks:
            return []
        refs = {
            "parts_ref": ray.put(index_parts(index)),
            "xb_ref": ray.put(np.ascontiguousarray(xb, dtype=np.float32)),
            "blocks_ref": ray.put(blocks),
        }
        n_workers = max(1, min(len(blocks), workers or int(ray.cluster_resources().get("CPU", 1))))
        # from_items: the block numbers are put in the object store by the driver, so no read task competes
        # with the actors for CPUs (with ray.data.range, actors holding every CPU starved its read task)
        ds = ray.data.from_items([{"id": j} for j in range(len(blocks))], override_num_blocks=len(blocks)).map_batches(
            _EvalWorker,
            fn_constructor_kwargs=refs,
            concurrency=n_workers,
            batch_size=1,
            batch_format="numpy",
        )
        answers: list[dict[str, Any] | None] = [None] * len(blocks)
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for j, payload in zip(b["id"], b["answer"], strict=True):
                answers[int(j)] = _unpack(payload)
        missing = [j for j, a in enumerate(answers) if a is None]
        if missing:
            raise DistributedError(f"evaluation on Ray: no answer for blocks {missing[:5]} of {len(blocks)}.")
        return answers  # type: ignore[return-value]

    return run
