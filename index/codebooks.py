"""Codebooks: the trained quantizer, independent of any item set.

Vocabulary (faiss's): d dims, M sub-quantizers (PQ/OPQ) or stages (RQ), nbits per code,
ksub = 2**nbits codewords per (sub)codebook, dsub = d // M.

    kind  centroids                 extra                reconstruction x_hat (code space)
    pq    (M, ksub, dsub) float32   -                    concat_m C[m, code_m]
    opq   (M, ksub, dsub) float32   rotation R (d, d)    concat_m C[m, code_m]; x ≈ R.T @ x_hat
    rq    (M, ksub, d)    float32   beam_size            sum_m C[m, code_m]

"Code space" is where codes live: the input after normalization (metric "cosine", or any metric with
``norm_explicit``) and the OPQ rotation. R is orthogonal, so inner products and norms are the same in
both spaces.

Norm-explicit quantization (Dai et al., "Norm-Explicit Quantization", AAAI 2020): the codes hold
each item's unit direction and the index keeps its exact norm as a per-item scale, so
x_hat = |x| * decode(codes). Recommender item norms vary ~25x (popularity); quantizing them with the
direction spends codewords on the norm and blurs the direction of small items.

Codes are one uint8 per (sub)codebook (nbits <= 8), stored as (n, M).

The codebook artifact is a directory: manifest.json (kind, metric, dims, the trainer config and
the training report) + codebooks.npz (centroids, rotation).
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np
from numpy.typing import NDArray

from . import rq_encode
from .artifact_io import atomic_dir, read_manifest, verify_files, write_manifest
from .errors import ArtifactCorrupt, ConfigError, DimensionMismatchError

logger = logging.getLogger(__name__)

Kind = Literal["pq", "opq", "rq"]
Metric = Literal["ip", "cosine", "l2"]
KINDS: tuple[str, ...] = ("pq", "opq", "rq")
METRICS: tuple[str, ...] = ("ip", "cosine", "l2")
CODEBOOK_FORMAT_VERSION = 1
RECON_ROWS = 8192  # rows an RQ reconstruction norm decodes at a time (Codebooks.recon_norms)


def row_norms(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n,) L2 norms of the rows of a 2-d array, in float32 (np.linalg.norm's squared copy of x cost 0.1-0.6 s
    at 1M x 64; this does not make one)."""
    x = np.asarray(x)
    return np.sqrt(np.einsum("ij,ij->i", x, x)).astype(np.float32, copy=False)


def normalize_rows(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (they have no direction)."""
    norms = row_norms(x)[:, None]
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32, copy=False)


@dataclass
class Codebooks:
    kind: Kind
    metric: Metric
    d: int
    M: int
    nbits: int
    centroids: NDArray[np.float32]
    rotation: NDArray[np.float32] | None = None
    beam_size: int = 1
    norm_explicit: bool = False
    # ScaNN's score-aware (anisotropic) loss, as its threshold T in [0, 1): pq/opq codes minimize
    # ||r_perp||^2 + eta ||r_par||^2 with eta = (d - 1) T^2 / (1 - T^2) instead of ||r||^2. 0: nearest codeword
    score_aware: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    _faiss: Any = field(default=None, repr=False, compare=False)
    _lut_matrix: Any = field(default=None, repr=False, compare=False)
    _rq_tables: Any = field(default=None, repr=False, compare=False)
    _sq_norms: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown quantizer kind {self.kind!r}; choose one of {list(KINDS)}.")
        if self.metric not in METRICS:
            raise ConfigError(f"unknown metric {self.metric!r}; choose one of {list(METRICS)}.")
        if not 1 <= self.nbits <= 8:
            raise ConfigError(f"nbits must be in 1..8 (one byte per code), got {self.nbits}.")
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        want = (self.M, self.ksub, self.d if self.kind == "rq" else self.dsub)
        if self.kind != "rq" and self.d % self.M:
            raise ConfigError(f"d ({self.d}) must be divisible by M ({self.M}) for {self.kind}.")
        if self.centroids.shape != want:
            raise ConfigError(f"{self.kind} centroids have shape {self.centroids.shape}, expected {want}.")
        if self.kind == "opq":
            if self.rotation is None or self.rotation.shape != (self.d, self.d):
                raise ConfigError(f"opq needs a ({self.d}, {self.d}) rotation.")
            self.rotation = np.ascontiguousarray(self.rotation, dtype=np.float32)
        if not 0.0 <= self.score_aware < 1.0:
            raise ConfigError(f"score_aware must be in [0, 1), got {self.score_aware}.")
        if self.score_aware and self.kind == "rq":
            raise ConfigError("score_aware codes are for pq and opq (rq encodes by beam search, index/rq_encode.py).")

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def ksub(self) -> int:
        return 1 << self.nbits

    @property
    def dsub(self) -> int:
        return self.d // self.M

    @property
    def code_size(self) -> int:
        """Bytes per encoded vector (one byte per code)."""
        return self.M

    @property
    def normalizes_items(self) -> bool:
        return self.metric == "cosine" or self.norm_explicit

    # ---- spaces -------------------------------------------------------------------------------
    def to_code_space(self, x: NDArray[np.float32], *, normalize: bool | None = None) -> NDArray[np.float32]:
        """(n, d) input -> (n, d) code space: OPQ-rotated, and normalized when ``normalize`` (default:
        as items are encoded, i.e. for metric cosine or norm_explicit). Queries pass False."""
        x = self.check_dim(x) if x.ndim != 2 or x.dtype != np.float32 or x.shape[1] != self.d else x
        if normalize if normalize is not None else self.normalizes_items:
            x = normalize_rows(x)
        if self.rotation is not None:
            x = x @ self.rotation.T
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)

    def check_dim(self, x: np.ndarray) -> NDArray[np.float32]:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.d:
            got = x.shape[-1] if x.ndim else 0
            raise DimensionMismatchError(
                f"Provided vector dimension ({got}) does not match the codebook dimension ({self.d})."
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    # ---- faiss objects --------------------------------------------------------------------------
    def faiss_quantizer(self) -> Any:
        """A faiss ProductQuantizer / ResidualQuantizer holding these codebooks (built once)."""
        if self._faiss is None:
            if self.kind in ("pq", "opq"):
                q = faiss.ProductQuantizer(self.d, self.M, self.nbits)
                faiss.copy_array_to_vector(self.centroids.ravel(), q.centroids)
            else:
                q = faiss.ResidualQuantizer(self.d, self.M, self.nbits)
                q.max_beam_size = int(self.beam_size)
                faiss.copy_array_to_vector(self.centroids.ravel(), q.codebooks)
                q.is_trained = True
                # (encoding runs here only without index/rq_encode.py's kernel, or past its table limit)
                if 4 * (self.M * self.ksub) ** 2 <= rq_encode.MAX_TABLE_BYTES:
                    # beam search on the codebooks' cross-product tables: the same codes (every row of 50k on
                    # the 1M recipe, beam 8), 3.4x faster than distances in the full space
                    q.compute_codebook_tables()
                    q.use_beam_LUT = 1
            self._faiss = q
        return self._faiss

    # ---- encode / decode ------------------------------------------------------------------------
    @property
    def score_aware_eta(self) -> float:
        """The weight of the parallel residual relative to the orthogonal one (1: plain squared error)."""
        t = self.score_aware
        return (self.d - 1) * t * t / (1.0 - t * t) if t else 1.0

    def encode_code_space(self, y: NDArray[np.float32]) -> NDArray[np.uint8]:
        """(n, d) vectors already in code space -> (n, M) uint8 codes."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        if self.score_aware:
            from .score_aware import _c_kernel, encode_score_aware

            # the kernel starts from the nearest codewords it finds itself (one table for both steps)
            start = None if _c_kernel() is not None else self._nearest_codes(y)
            return encode_score_aware(y, self.centroids, start, self.score_aware_eta)
        return self._nearest_codes(y)

    def _nearest_codes(self, y: NDArray[np.float32]) -> NDArray[np.uint8]:
        if self.kind == "rq":
            # faiss's beam search, ~3x faster on 2 cores; its float16 tables give 2.2 % of the 1M recipe's rows
            # another code at the same error (index/rq_encode.py)
            if rq_encode.available(self.M, self.ksub):
                if self._rq_tables is None:
                    self._rq_tables = rq_encode.tables(self.centroids)
                return rq_encode.encode(y, self.centroids, int(self.beam_size), tabs=self._rq_tables)
        codes = self.faiss_quantizer().compute_codes(y)
        return codes.reshape(len(y), self.M) if self.nbits == 8 else _unpack_bits(codes, self.M, self.nbits)

    def encode(self, x: NDArray[np.float32]) -> NDArray[np.uint8]:
        """(n, d) input vectors -> (n, M) uint8 codes."""
        return self.encode_code_space(self.to_code_space(x))

    def decode(self, codes: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, M) codes -> (n, d) reconstructions in code space."""
        codes = np.asarray(codes)
        if self.kind == "rq":  # summed stage by stage, in stage order (no (n, M, d) temporary)
            out = np.zeros((len(codes), self.d), np.float32)
            for m in range(self.M):
                out += self.centroids[m][codes[:, m].astype(np.intp)]
            return out
        parts = self.centroids[np.arange(self.M), codes.astype(np.intp)]  # (n, M, dsub)
        return np.ascontiguousarray(parts.reshape(len(codes), self.d))

    def recon_norms(self, codes: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, M) codes -> (n,) |decode(codes)|. PQ/OPQ sub-spaces are orthogonal, so the squared norm is the sum
        of the M codewords' squared norms: gathered from an (M, ksub) table instead of decoding (1M x 64 PQ16:
        ~0.1 s instead of 1.1 s); RQ stages are not orthogonal and decode, RECON_ROWS rows at a time (the sums
        stay in cache: a 65,536-row block of RQ16x8 codes took 0.07-0.11 s decoded whole, 0.045-0.05 s so)."""
        codes = np.asarray(codes)
        if self.kind == "rq":
            out = np.empty(len(codes), np.float32)
            for i in range(0, len(codes), RECON_ROWS):
                out[i : i + RECON_ROWS] = row_norms(self.decode(codes[i : i + RECON_ROWS]))
            return out
        if self._sq_norms is None:
            self._sq_norms = np.einsum("mkd,mkd->mk", self.centroids.astype(np.float64), self.centroids)
        acc = np.zeros(len(codes), np.float64)
        for m in range(self.M):
            acc += self._sq_norms[m][codes[:, m]]
        return np.sqrt(acc).astype(np.float32)

    def decode_input_space(self, codes: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, M) codes -> (n, d) reconstructions in input space (undoes the OPQ rotation)."""
        y = self.decode(codes)
        return y @ self.rotation if self.rotation is not None else y

    # ---- lookup tables --------------------------------------------------------------------------
    def lut(self, y: NDArray[np.float32]) -> NDArray[np.float32]:
        """(nq, d) queries in code space -> (nq, M, ksub) inner-product lookup tables.

        PQ/OPQ: lut[q, m, j] = <y_q[m-th slice], C[m, j]>;  RQ: lut[q, m, j] = <y_q, C[m, j]>.
        """
        y = np.ascontiguousarray(y, dtype=np.float32)
        if self._lut_matrix is None:
            # transposed once, so a LUT is one BLAS call: rq (d, M*ksub); pq/opq (M, dsub, ksub)
            C = self.centroids
            if self.kind == "rq":
                self._lut_matrix = np.ascontiguousarray(C.reshape(self.M * self.ksub, self.d).T)
            else:
                self._lut_matrix = np.ascontiguousarray(C.transpose(0, 2, 1))
        nq = len(y)
        if self.kind == "rq":
            return (y @ self._lut_matrix).reshape(nq, self.M, self.ksub)
        ys = y.reshape(nq, self.M, 1, self.dsub)
        return np.matmul(ys, self._lut_matrix).reshape(nq, self.M, self.ksub)

    def pair_tables(self) -> NDArray[np.float32]:
        """Codeword-pair inner products, computed once at build time.

        PQ/OPQ: (M, ksub, ksub), T[m, a, b] = <C[m, a], C[m, b]>.
        RQ:     (M, M, ksub, ksub), T[l, m, a, b] = <C[l, a], C[m, b]> (all stage pairs).
        The LUT of a reconstruction x_hat(codes) is then a gather: see ``lut_from_codes``.
        """
        C = self.centroids
        if self.kind == "rq":
            return np.einsum("lad,mbd->lmab", C, C, optimize=True).astype(np.float32)
        return np.einsum("mad,mbd->mab", C, C, optimize=True).astype(np.float32)

    def lut_from_codes(self, codes: NDArray[np.uint8], tables: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, M) codes + pair tables -> (n, M, ksub) LUTs of the reconstructions, without decoding."""
        codes = np.asarray(codes).astype(np.intp)
        M = self.M
        if self.kind == "rq":
            # lut[m, :] = sum_l T[l, m, code_l, :]
            lv = np.arange(M)
            g = tables[lv[None, :, None], lv[None, None, :], codes[:, :, None]]  # (n, L, M, ksub)
            return g.sum(axis=1, dtype=np.float32)
        return tables[np.arange(M)[None, :], codes]  # (n, M, ksub)

    def pair_tables_bytes(self) -> int:
        per = self.M * self.ksub * self.ksub * 4
        return per * self.M if self.kind == "rq" else per

    # ---- artifact -------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {"centroids": self.centroids}
        if self.rotation is not None:
            out["rotation"] = self.rotation
        return out

    def header(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "d": self.d,
            "M": self.M,
            "nbits": self.nbits,
            "ksub": self.ksub,
            "beam_size": self.beam_size,
            "norm_explicit": self.norm_explicit,
            "score_aware": self.score_aware,
            "code_size": self.code_size,
        }

    def save(self, path: str, *, overwrite: bool = False) -> str:
        """Publish the codebook artifact atomically at ``path``."""
        import datetime

        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.savez(os.path.join(tmp, "codebooks.npz"), **self.arrays())
            write_manifest(
                tmp,
                {
                    "artifact": "codebooks",
                    "format_version": CODEBOOK_FORMAT_VERSION,
                    **self.header(),
                    "trainer_config": self.config,
                    "train_report": self.report,
                    "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                },
            )
        return path

    @classmethod
    def from_arrays(cls, header: dict[str, Any], arrays: dict[str, np.ndarray], **extra: Any) -> Codebooks:
        return cls(
            kind=header["kind"],
            metric=header["metric"],
            d=int(header["d"]),
            M=int(header["M"]),
            nbits=int(header["nbits"]),
            centroids=arrays["centroids"],
            rotation=arrays.get("rotation"),
            beam_size=int(header.get("beam_size", 1)),
            norm_explicit=bool(header.get("norm_explicit", False)),
            score_aware=float(header.get("score_aware", 0.0)),
            **extra,
        )

    @classmethod
    def load(cls, path: str) -> Codebooks:
        """Load a codebook artifact, checking its manifest, checksums and array shapes."""
        manifest = read_manifest(path, artifact="codebooks", versions=(CODEBOOK_FORMAT_VERSION,))
        verify_files(path, manifest)
        arrays = load_npz(os.path.join(path, "codebooks.npz"))
        try:
            return cls.from_arrays(
                manifest, arrays, config=manifest.get("trainer_config", {}), report=manifest.get("train_report", {})
            )
        except (KeyError, ConfigError) as e:
            raise ArtifactCorrupt(f"{path}: codebooks do not match the manifest: {e}") from None


def load_npz(p: str) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ArtifactCorrupt(f"{p}: unreadable ({e}).") from None


def _unpack_bits(packed: np.ndarray, M: int, nbits: int) -> NDArray[np.uint8]:
    """faiss's little-endian bit-packed codes (n, ceil(M*nbits/8)) -> (n, M) uint8."""
    if nbits == 4:  # two codes a byte, the even one in the low nibble
        packed = np.asarray(packed, dtype=np.uint8)
        return np.ascontiguousarray(np.stack([packed & 15, packed >> 4], axis=2).reshape(len(packed), -1)[:, :M])
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : M * nbits]
    bits = bits.reshape(len(packed), M, nbits)
    weights = (1 << np.arange(nbits)).astype(np.uint16)
    return (bits * weights).sum(axis=2).astype(np.uint8)


def _pack_bits(codes: np.ndarray, nbits: int) -> NDArray[np.uint8]:
    """(n, M) uint8 -> faiss's bit-packed layout (inverse of _unpack_bits)."""
    n, M = codes.shape
    bits = ((codes[:, :, None] >> np.arange(nbits)) & 1).astype(np.uint8).reshape(n, M * nbits)
    return np.packbits(bits, axis=1, bitorder="little")
