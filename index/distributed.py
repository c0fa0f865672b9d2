"""Encoding on Ray Data, for catalogues that outgrow one machine (optional extra ``distributed``).

The codebooks are trained on a sample on the driver (``vqrec train``); this module only moves the
encoding: the codebook arrays and the vectors are put in Ray's object store once (broadcast), a Ray
dataset of row numbers is split into ``shards`` blocks, ``map_batches`` encodes each batch of rows on
whichever worker runs it, every encoded batch is written as one shard file (row numbers, codes,
reconstruction norms), and the driver merges the shards back into row order. ``build_index`` then
assembles exactly the index a single process builds: codes are computed by the same
``index.build.encode_block`` on the same codebooks, so they are identical byte for byte (tested).

    ray.init()                               # local: all cores of this machine
    ray.init(address="ray://head:10001")     # a cluster (or set RAY_ADDRESS); see README

Nothing else in ``index/`` or the service imports Ray; it is imported inside these functions.
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .build import Encoder, encode_block
from .codebooks import Codebooks
from .errors import ConfigError

INSTALL_HINT = 'pip install -e ".[distributed]"'


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"distributed encoding needs Ray Data (the 'distributed' extra): {INSTALL_HINT}") from None
    return ray


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to ``address`` (a cluster, "auto", or None for a local Ray on this machine) unless Ray is
    already initialised; returns the ``ray`` module."""
    ray = _ray()
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
                raise ConfigError(f"{p}: rows encoded twice while merging shards.")
            seen[rows] = True
            codes[rows] = z["codes"]
            norms[rows] = z["norm"]
    if not seen.all():
        raise ConfigError(f"merging shards: {int((~seen).sum())} of {n} rows were not encoded.")
    return codes, norms
