"""The faiss counterparts of one of our indexes.

same codes  our codebooks and codes inside faiss.IndexPQ / IndexPreTransform(LinearTransform = our OPQ
            rotation, IndexPQ) / IndexResidualQuantizer (ST_LUT_nonorm): identical codes, faiss's scan.
            Our ip codes are norm-explicit directions, so faiss ranks by <q, y_hat> without |x|: its
            speed is comparable, its recall is not.
native      faiss's own index of the same kind and size, trained by faiss on the raw vectors (IndexPQ,
            index_factory "OPQ{M},PQ{M}", IndexResidualQuantizer with our beam): the quality comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from vqrec.index import CompressedIndex
from vqrec.index.codebooks import _pack_bits


@dataclass
class FaissIndex:
    """A faiss index answering with rows, plus how it was made."""

    index: Any
    label: str
    train_s: float = 0.0
    add_s: float = 0.0
    decode_max_abs_err: float | None = None  # same codes: faiss decode vs ours

    def search(self, xq: NDArray[np.float32], k: int) -> NDArray[np.int64]:
        return self.index.search(np.ascontiguousarray(xq, dtype=np.float32), k)[1]

    def reconstruct(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """(n, d) reconstructions in the input space (faiss undoes the OPQ rotation)."""
        return self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Serialized size: codes plus codebooks (and the OPQ matrix)."""
        return int(len(faiss.serialize_index(self.index)))

    @property
    def code_size(self) -> int:
        return int(self.index.sa_code_size())


def faiss_same_codes(index: CompressedIndex) -> FaissIndex:
    """faiss IndexPQ / IndexPreTransform(OPQ rotation, IndexPQ) / IndexResidualQuantizer (LUT search, no norm)
    holding our codebooks and our codes: identical codes, faiss's scan."""
    cb = index.codebooks
    metric = faiss.METRIC_INNER_PRODUCT
    codes = np.ascontiguousarray(index.codes, dtype=np.uint8)
    packed = codes if cb.nbits == 8 else _pack_bits(codes, cb.nbits)
    if cb.kind in ("pq", "opq"):
        fidx = faiss.IndexPQ(cb.d, cb.M, cb.nbits, metric)
        faiss.copy_array_to_vector(cb.centroids.ravel(), fidx.pq.centroids)
        fidx.is_trained = True
        fidx.add_sa_codes(packed)
        if cb.kind == "opq":
            assert cb.rotation is not None
            lt = faiss.LinearTransform(cb.d, cb.d, False)  # y = A x, A = R (we encode x @ R.T)
            faiss.copy_array_to_vector(cb.rotation.ravel(), lt.A)
            lt.is_trained = True
            lt.set_is_orthonormal()
            fidx = faiss.IndexPreTransform(lt, fidx)
    else:
        fidx = faiss.IndexResidualQuantizer(cb.d, cb.M, cb.nbits, metric, faiss.AdditiveQuantizer.ST_LUT_nonorm)
        faiss.copy_array_to_vector(cb.centroids.ravel(), fidx.rq.codebooks)
        fidx.rq.is_trained = True
        fidx.is_trained = True
        fidx.add_sa_codes(packed)
    sample = np.arange(min(len(codes), 256))
    err = float(np.abs(fidx.sa_decode(packed[sample]) - cb.decode_input_space(codes[sample])).max())
    return FaissIndex(fidx, "faiss same codes", decode_max_abs_err=err)


def faiss_native(
    kind: str, d: int, M: int, nbits: int, xt: NDArray[np.float32], xb: NDArray[np.float32], *, beam_size: int
) -> FaissIndex:
    """faiss's own index of the same kind and size, trained by faiss on the raw (not normalized) vectors."""
    metric = faiss.METRIC_INNER_PRODUCT
    if kind == "pq":
        fidx = faiss.IndexPQ(d, M, nbits, metric)
    elif kind == "opq":
        fidx = faiss.index_factory(d, f"OPQ{M},PQ{M}x{nbits}", metric)
    else:
        fidx = faiss.IndexResidualQuantizer(d, M, nbits, metric, faiss.AdditiveQuantizer.ST_LUT_nonorm)
        fidx.rq.max_beam_size = beam_size
    t0 = time.perf_counter()
    fidx.train(np.ascontiguousarray(xt, dtype=np.float32))
    t1 = time.perf_counter()
    fidx.add(np.ascontiguousarray(xb, dtype=np.float32))
    t2 = time.perf_counter()
    return FaissIndex(fidx, "faiss native", train_s=t1 - t0, add_s=t2 - t1)
