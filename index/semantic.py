"""Semantic IDs: the code tuple a learned residual tokenizer (RQ-VAE / CoST) gives each item, made
unique with a dedup suffix, plus the prefix structure that generative recommenders decode against.

numpy (and faiss for the exact neighbours of the report) only: the tokenizer is trained with torch
under ``trainers/learned``, but its weights are plain arrays here, so ``vqrec build`` and the service
compute and serve semantic IDs without torch.

    Tokenizer          numpy forward of a trained RQ-VAE: encode (MLP -> greedy residual
                       quantization over L levels) and decode (sum of codewords -> MLP)
    assign_suffixes    per-item dedup suffix: 0 for the first item of a code tuple (row order), 1 for
                       the next, ...; (codes, suffix) is then unique
    SemanticIds        codes + suffixes of one entity kind (items or users), with a prefix structure:
                       rows sorted lexicographically by (codes, suffix), so every prefix is one
                       contiguous range found level by level with binary search, and the distinct next
                       codes of a prefix are the child runs inside that range (O(L log n + children),
                       never a scan of the catalogue)
    semantic_report    utilization / perplexity per level, collision rate before dedup,
                       reconstruction error and neighbourhood preservation

String form of a semantic ID: the L codes, then the suffix, joined by "-": ``"12-5-200-0"``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from .artifact_io import atomic_dir, read_manifest, verify_files, write_manifest
from .embeddings import Embeddings
from .errors import (
    ArtifactCorrupt,
    ConfigError,
    DimensionMismatchError,
    InputError,
    InvalidCursorError,
    InvalidPrefixError,
)

TOKENIZER_FORMAT_VERSION = 1
INPUT_NORMS = ("none", "l2")


# ---- tokenizer (numpy forward) -----------------------------------------------------------------
Layer = tuple[NDArray[np.float32], NDArray[np.float32]]  # (W (out, in), b (out,)), torch.nn.Linear layout


def _mlp(x: NDArray[np.float32], layers: Sequence[Layer]) -> NDArray[np.float32]:
    """Linear layers with ReLU between them (none after the last), as the torch model."""
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


def residual_quantize(z: NDArray[np.float32], codebooks: Sequence[NDArray[np.float32]]) -> NDArray[np.int64]:
    """Greedy residual quantization: level l picks the codeword nearest (L2) to what levels < l left."""
    r = np.array(z, dtype=np.float32, copy=True)
    codes = np.empty((len(z), len(codebooks)), dtype=np.int64)
    for lvl, c in enumerate(codebooks):
        # argmin |r - c|^2 = argmin |c|^2 - 2 r.c
        d = (c * c).sum(1)[None, :] - 2.0 * (r @ c.T)
        idx = np.argmin(d, axis=1)
        codes[:, lvl] = idx
        r -= c[idx]
    return codes


@dataclass
class Tokenizer:
    """A trained RQ-VAE in numpy: ``encode(x) -> (n, L) codes``, ``decode(codes) -> (n, d)``."""

    encoder: list[Layer]
    codebooks: list[NDArray[np.float32]]  # L x (K_l, latent)
    decoder: list[Layer]
    input_norm: str = "l2"  # "l2": inputs are L2-normalised before encoding (and reconstructions compared so)
    latent_norm: bool = False  # the encoder output is L2-normalised before quantization
    config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm must be one of {list(INPUT_NORMS)}, got {self.input_norm!r}.")
        if not self.encoder or not self.decoder or not self.codebooks:
            raise ConfigError("a tokenizer needs encoder layers, decoder layers and at least one codebook.")
        latent = self.encoder[-1][0].shape[0]
        for lvl, c in enumerate(self.codebooks):
            if c.ndim != 2 or c.shape[1] != latent:
                raise ConfigError(f"codebook {lvl} has shape {c.shape}, expected (K, {latent}).")
        if self.decoder[0][0].shape[1] != latent or self.decoder[-1][0].shape[0] != self.d:
            raise ConfigError("decoder shapes do not match the encoder's latent and input dimensions.")

    @property
    def d(self) -> int:
        return int(self.encoder[0][0].shape[1])

    @property
    def latent_dim(self) -> int:
        return int(self.encoder[-1][0].shape[0])

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    @property
    def sizes(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codebooks]

    def prepare(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """The model's input: float32, L2-normalised when ``input_norm == "l2"`` (zero rows stay zero)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise DimensionMismatchError(f"embeddings must be an (n, {self.d}) array, got shape {x.shape}.")
        if x.shape[1] != self.d:
            raise DimensionMismatchError(f"embeddings have dimension {x.shape[1]}, the tokenizer expects {self.d}.")
        if self.input_norm == "l2":
            n = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(n > 0, n, 1.0).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def encode(self, x: NDArray[Any], *, batch_size: int = 65536) -> NDArray[np.int64]:
        x = self.prepare(x)
        out = np.empty((len(x), self.levels), dtype=np.int64)
        for s in range(0, len(x), batch_size):
            out[s : s + batch_size] = residual_quantize(self.embed(x[s : s + batch_size]), self.codebooks)
        return out

    def embed(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Encoder output (the latent that is quantized) of prepared inputs."""
        z = _mlp(x, self.encoder)
        if self.latent_norm:
            n = np.linalg.norm(z, axis=1, keepdims=True)
            z = z / np.maximum(n, 1e-12)
        return z

    def latent(self, codes: NDArray[Any]) -> NDArray[np.float32]:
        codes = np.asarray(codes)
        z = np.zeros((len(codes), self.latent_dim), dtype=np.float32)
        for lvl, c in enumerate(self.codebooks):
            z += c[codes[:, lvl]]
        return z

    def decode(self, codes: NDArray[Any]) -> NDArray[np.float32]:
        return _mlp(self.latent(codes), self.decoder)

    # ---- artifact ----------------------------------------------------------------------------
    def arrays(self) -> dict[str, NDArray[np.float32]]:
        out: dict[str, NDArray[np.float32]] = {}
        for part, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, (w, b) in enumerate(layers):
                out[f"{part}.{i}.weight"] = np.ascontiguousarray(w, np.float32)
                out[f"{part}.{i}.bias"] = np.ascontiguousarray(b, np.float32)
        for lvl, c in enumerate(self.codebooks):
            out[f"codebook.{lvl}"] = np.ascontiguousarray(c, np.float32)
        return out

    def header(self) -> dict[str, Any]:
        return {
            "kind": "rqvae",
            "d": self.d,
            "latent_dim": self.latent_dim,
            "levels": self.levels,
            "codebook_sizes": self.sizes,
            "input_norm": self.input_norm,
            "latent_norm": self.latent_norm,
            "loss": self.config.get("loss"),
        }

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, a in sorted(self.arrays().items()):
            h.update(name.encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def save(
        self, path: str, *, overwrite: bool = False, extra_files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        """Publish atomically: manifest.json (header, config, report, checksums), weights.npz, and any
        ``extra_files`` (the trainer's checkpoint.pt)."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.savez(os.path.join(tmp, "weights.npz"), **self.arrays())
            for name, data in (extra_files or {}).items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            manifest = write_manifest(
                tmp,
                {
                    "artifact": "tokenizer",
                    "format_version": TOKENIZER_FORMAT_VERSION,
                    **self.header(),
                    "fingerprint": self.fingerprint(),
                    "config": self.config,
                    "report": self.report,
                },
            )
        self.path = path
        return manifest

    @classmethod
    def load(cls, path: str, *, verify: bool = True) -> Tokenizer:
        manifest = read_manifest(path, artifact="tokenizer", versions=(TOKENIZER_FORMAT_VERSION,))
        verify_files(path, manifest, checksums=verify)
        wpath = os.path.join(path, "weights.npz")
        if "weights.npz" not in manifest["files"]:
            raise ArtifactCorrupt(f"{wpath}: missing from the manifest.")
        try:
            with np.load(wpath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # a bad CRC is BadZipFile
            raise ArtifactCorrupt(f"{wpath}: unreadable ({e}).") from None

        def layers(part: str) -> list[Layer]:
            out = []
            while f"{part}.{len(out)}.weight" in arrays:
                i = len(out)
                out.append((arrays[f"{part}.{i}.weight"], arrays[f"{part}.{i}.bias"]))
            return out

        codebooks = []
        while f"codebook.{len(codebooks)}" in arrays:
            codebooks.append(arrays[f"codebook.{len(codebooks)}"])
        try:
            tok = cls(
                encoder=layers("encoder"),
                codebooks=codebooks,
                decoder=layers("decoder"),
                input_norm=manifest.get("input_norm", "l2"),
                latent_norm=bool(manifest.get("latent_norm", False)),
                config=manifest.get("config", {}),
                report=manifest.get("report", {}),
                path=path,
            )
        except (ConfigError, IndexError, KeyError) as e:  # KeyError: a layer's weight without its bias
            raise ArtifactCorrupt(f"{wpath}: does not hold a usable tokenizer ({e}).") from None
        if tok.sizes != manifest.get("codebook_sizes") or tok.d != manifest.get("d"):
            raise ArtifactCorrupt(f"{wpath}: shapes do not match the manifest.")
        return tok


# ---- dedup suffixes ----------------------------------------------------------------------------
def assign_suffixes(codes: NDArray[Any]) -> NDArray[np.int64]:
    """0 for the first row (in row order) of each distinct code tuple, 1 for the second, ..."""
    codes = np.asarray(codes)
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # lexsort sorts by the last key first: codes level 0, 1, ..., then row number (ties keep row order)
    order = np.lexsort((np.arange(n),) + tuple(codes[:, lvl] for lvl in range(codes.shape[1] - 1, -1, -1)))
    sc = codes[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = np.any(sc[1:] != sc[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    suffix = np.empty(n, dtype=np.int64)
    suffix[order] = np.arange(n) - group_start
    return suffix


# ---- the served structure ----------------------------------------------------------------------
def semantic_string(codes: Sequence[int], suffix: int) -> str:
    return "-".join(str(int(c)) for c in codes) + f"-{int(suffix)}"


@dataclass
class SemanticIds:
    """Codes (n, L) and dedup suffixes (n,) of one entity kind, rows aligned with ``ids``."""

    ids: list[str]
    codes: NDArray[Any]  # (n, L) non-negative ints
    suffix: NDArray[Any]  # (n,)
    sizes: list[int]  # codebook size per level
    kind: str = "item"

    def __post_init__(self) -> None:
        codes = np.asarray(self.codes)
        n = len(self.ids)
        if codes.ndim != 2 or len(codes) != n or np.asarray(self.suffix).shape != (n,):
            raise ConfigError(f"semantic ids: {n} ids but codes {codes.shape} and suffixes {np.shape(self.suffix)}.")
        if codes.shape[1] != len(self.sizes) or codes.shape[1] == 0:
            raise ConfigError(f"semantic ids: codes have {codes.shape[1]} levels, sizes list {self.sizes}.")
        if n and (codes.min() < 0 or np.any(codes.max(axis=0) >= np.asarray(self.sizes))):
            raise ConfigError("semantic ids: a code is outside its level's codebook.")
        self._rows = {s: i for i, s in enumerate(self.ids)}
        L = codes.shape[1]
        suffix = np.asarray(self.suffix, dtype=np.int64)
        keys = [codes[:, lvl].astype(np.int64) for lvl in range(L)] + [suffix]
        order = np.lexsort(tuple(reversed(keys)))
        self._order = order  # position in the sorted order -> row
        self._cols = [np.ascontiguousarray(k[order]) for k in keys]  # L code columns + suffix column, sorted
        if n > 1:
            same = np.ones(n - 1, dtype=bool)
            for col in self._cols:
                same &= col[1:] == col[:-1]
            if same.any():
                raise ConfigError("semantic ids: (codes, suffix) is not unique; suffixes must deduplicate the codes.")
        # run starts at depth t = 1..L+1 (prefix of t tokens): positions where one of the first t tokens changes
        self._starts: list[NDArray[np.int64]] = [np.zeros(1 if n else 0, dtype=np.int64)]  # depth 0: one run
        change = np.zeros(max(n - 1, 0), dtype=bool)
        for col in self._cols:
            change |= col[1:] != col[:-1]
            self._starts.append(np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64) if n else change)
        h = hashlib.sha256(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(suffix).tobytes())
        h.update("\n".join(self.ids).encode())
        self.tag = h.hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def levels(self) -> int:
        return len(self.sizes)

    def row_of(self, ident: str) -> int | None:
        return self._rows.get(ident)

    def entry(self, row: int) -> dict[str, Any]:
        codes = [int(c) for c in self.codes[row]]
        suffix = int(self.suffix[row])
        return {"codes": codes, "suffix": suffix, "semantic_id": semantic_string(codes, suffix)}

    # ---- prefixes ------------------------------------------------------------------------------
    def check_prefix(self, prefix: Sequence[int]) -> list[int]:
        """The prefix as ints, or InvalidPrefixError naming the position and the valid range."""
        if len(prefix) > self.levels:
            raise InvalidPrefixError(
                f"prefix has {len(prefix)} codes but {self.kind} semantic ids have {self.levels} levels "
                f"(the dedup suffix is not part of a prefix)."
            )
        out = []
        for pos, c in enumerate(prefix):
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= int(c) < self.sizes[pos]:
                raise InvalidPrefixError(
                    f"prefix[{pos}] = {c!r} is not a code of level {pos}: "
                    f"codes are integers in 0..{self.sizes[pos] - 1}."
                )
            out.append(int(c))
        return out

    def prefix_range(self, prefix: Sequence[int]) -> tuple[int, int]:
        """[lo, hi) positions in the sorted order whose first len(prefix) tokens equal ``prefix``."""
        lo, hi = 0, len(self.ids)
        for lvl, c in enumerate(prefix):
            col = self._cols[lvl][lo:hi]
            a = int(np.searchsorted(col, c, side="left"))
            b = int(np.searchsorted(col, c, side="right"))
            lo, hi = lo + a, lo + b
            if lo == hi:
                break
        return lo, hi

    def next_tokens(self, depth: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """(token, count) of the runs at depth+1 inside [lo, hi): the valid next codes (or, at depth L,
        the dedup suffixes) after a prefix of ``depth`` codes, with how many rows each leads to."""
        if lo >= hi:
            return []
        starts = self._starts[depth + 1]
        a = int(np.searchsorted(starts, lo, side="left"))
        b = int(np.searchsorted(starts, hi, side="left"))
        s = starts[a:b]
        counts = np.diff(np.append(s, hi))
        tokens = self._cols[depth][s]
        return [(int(t), int(c)) for t, c in zip(tokens, counts, strict=True)]

    def rows_in(self, lo: int, hi: int) -> NDArray[np.int64]:
        return self._order[lo:hi]

    def find(self, codes: Sequence[int], suffix: int) -> int | None:
        """The row whose semantic ID is exactly (codes, suffix), or None."""
        if len(codes) != self.levels:
            return None
        lo, hi = self.prefix_range(list(codes) + [suffix])
        return int(self._order[lo]) if hi > lo else None

    def parse(self, text: str) -> tuple[list[int], int]:
        """``"12-5-200-0"`` -> ([12, 5, 200], 0). InvalidPrefixError (with the expected form) if malformed:
        not L codes and a suffix joined by "-", a part that is not a canonical decimal (ASCII digits, no
        leading zeros: "01" would otherwise name the same id as "1"), or a code out of its level's range."""
        parts = text.split("-")
        # ASCII digits only (str.isdigit also accepts e.g. "²", which int() refuses), and at most 18 of
        # them (int() refuses > 4300 digits; no code or suffix is that long anyway)
        if len(parts) != self.levels + 1 or not all(
            p.isascii() and p.isdigit() and len(p) <= 18 and (p == "0" or p[0] != "0") for p in parts
        ):
            raise InvalidPrefixError(
                f"{text[:80]!r} is not a semantic id: expected {self.levels} codes and a suffix, decimal "
                f"without leading zeros, joined by '-', e.g. {semantic_string([0] * self.levels, 0)!r}."
            )
        return self.check_prefix([int(p) for p in parts[:-1]]), int(parts[-1])

    # ---- pagination cursors --------------------------------------------------------------------
    def encode_cursor(self, prefix: Sequence[int], offset: int) -> str:
        raw = json.dumps({"k": self.kind, "p": list(prefix), "o": int(offset), "t": self.tag}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode_cursor(self, cursor: str, prefix: Sequence[int]) -> int:
        """The offset a cursor from ``encode_cursor`` carries; InvalidCursorError if it is not one of ours,
        was issued for the other entity kind, for another version of these semantic ids, or for another
        prefix."""
        try:
            pad = "=" * (-len(cursor) % 4)
            data = json.loads(base64.urlsafe_b64decode(cursor + pad).decode())
            kind, offset, p, tag = data["k"], data["o"], data["p"], data["t"]
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(p, list):
                raise ValueError
            if not isinstance(kind, str):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise InvalidCursorError(f"cursor {cursor[:40]!r} is not a cursor this service issued.") from None
        if kind != self.kind:
            raise InvalidCursorError(
                f"cursor was issued for {kind[:40]}s, not {self.kind}s: send it back for the same entity kind."
            )
        if tag != self.tag:
            raise InvalidCursorError("cursor was issued for another version of these semantic ids; start again.")
        if list(p) != list(prefix):
            raise InvalidCursorError(f"cursor was issued for prefix {p}, not {list(prefix)}.")
        return offset


# ---- quality report ----------------------------------------------------------------------------
def level_usage(codes: NDArray[Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for lvl, k in enumerate(sizes):
        counts = np.bincount(np.asarray(codes)[:, lvl], minlength=k).astype(np.float64)
        p = counts / max(counts.sum(), 1.0)
        nz = p[p > 0]
        out.append(
            {
                "level": lvl,
                "codebook_size": int(k),
                "used": int((counts > 0).sum()),
                "utilization": round(float((counts > 0).mean()), 4),
                "perplexity": round(float(np.exp(-(nz * np.log(nz)).sum())), 2),
            }
        )
    return out


def collisions(codes: NDArray[Any]) -> dict[str, Any]:
    """Before dedup: how many code tuples are shared by more than one row."""
    codes = np.asarray(codes)
    n = len(codes)
    if n == 0:
        return {"unique_tuples": 0, "collision_rate": 0.0, "rows_in_collisions": 0, "max_rows_per_tuple": 0}
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "unique_tuples": len(counts),
        "collision_rate": round(1.0 - len(counts) / n, 4),  # share of rows that need a suffix > 0
        "rows_in_collisions": int(counts[counts > 1].sum()),
        "max_rows_per_tuple": int(counts.max()),
    }


def neighbourhood_preservation(
    x: NDArray[Any], codes: NDArray[Any], *, k: int = 10, max_queries: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """For each (sampled) item: of its exact top-k cosine neighbours (self and zero vectors excluded),
    the share that have the same first 1, 2, ... L codes. ``chance@t`` is the share a random pair
    would have (sum of squared prefix frequencies), for scale."""
    x = np.asarray(x, dtype=np.float32)
    codes = np.asarray(codes)
    norms = np.linalg.norm(x, axis=1)
    ok = np.flatnonzero(norms > 0)
    L = codes.shape[1]
    if len(ok) <= k:
        return {"k": k, "queries": 0}
    xn = np.ascontiguousarray(x[ok] / norms[ok, None])
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(ok), min(max_queries, len(ok)), replace=False))
    flat = faiss.IndexFlatIP(xn.shape[1])
    flat.add(xn)
    _, nb = flat.search(xn[q], k + 1)
    out: dict[str, Any] = {"k": k, "queries": len(q), "metric": "cosine"}
    qc = codes[ok[q]]
    for t in range(1, L + 1):
        shares = []
        for i in range(len(q)):
            row = nb[i][(nb[i] >= 0) & (nb[i] != q[i])][:k]
            shares.append(np.mean(np.all(codes[ok[row], :t] == qc[i, :t], axis=1)) if len(row) else 0.0)
        _, counts = np.unique(codes[ok, :t], axis=0, return_counts=True)
        p = counts / counts.sum()
        out[f"share@{t}"] = round(float(np.mean(shares)), 4)
        out[f"chance@{t}"] = round(float((p * p).sum()), 4)
    return out


def semantic_report(
    x: NDArray[Any],
    codes: NDArray[Any],
    suffix: NDArray[Any],
    sizes: Sequence[int],
    *,
    x_hat: NDArray[Any] | None = None,
    k: int = 10,
    max_queries: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The quality numbers stored in the manifest: per-level usage, collisions before and after dedup,
    reconstruction error (when ``x_hat`` is given, in the tokenizer's input space) and neighbourhood
    preservation."""
    codes = np.asarray(codes)
    suffix = np.asarray(suffix)
    rep: dict[str, Any] = {
        "n": len(codes),
        "levels": level_usage(codes, sizes),
        "collisions_before_dedup": collisions(codes),
        "collisions_after_dedup": collisions(np.column_stack([codes, suffix]))["rows_in_collisions"]
        if len(codes)
        else 0,
        "max_suffix": int(suffix.max()) if len(suffix) else 0,
    }
    if x_hat is not None:
        x = np.asarray(x, dtype=np.float64)
        err = ((x - np.asarray(x_hat, dtype=np.float64)) ** 2).sum(1)
        rep["reconstruction"] = {
            "mse": round(float(err.mean() / x.shape[1]), 6),
            "relative_mse": round(float(err.sum() / max((x * x).sum(), 1e-30)), 4),
        }
    rep["neighbourhood"] = neighbourhood_preservation(x, codes, k=k, max_queries=max_queries, seed=seed)
    return rep


# ---- build step: tokenize the entities of an index ---------------------------------------------
def align(emb: Embeddings, ids: Sequence[str], what: str) -> NDArray[np.float32]:
    """Rows of ``emb`` in the order of ``ids``; InputError naming missing ids (count and first few)."""
    rows = []
    missing = []
    for i in ids:
        try:
            rows.append(emb.row_of(i))
        except KeyError:
            missing.append(i)
    if missing:
        raise InputError(
            f"{len(missing)} of {len(ids)} {what} ids have no row in {emb.source} "
            f"(first: {missing[:5]}); the semantic-id embeddings must cover every {what}."
        )
    return np.ascontiguousarray(emb.vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)


def tokenize(
    tokenizer: Tokenizer, x: NDArray[Any], ids: Sequence[str], *, kind: str, seed: int = 0
) -> tuple[SemanticIds, dict[str, Any]]:
    """Encode ``x`` (rows aligned with ``ids``) into semantic ids, with its quality report."""
    codes = tokenizer.encode(x)
    suffix = assign_suffixes(codes)
    xin = tokenizer.prepare(x)
    rep = semantic_report(xin, codes, suffix, tokenizer.sizes, x_hat=tokenizer.decode(codes), seed=seed)
    sem = SemanticIds(
        ids=list(ids),
        codes=codes.astype(_code_dtype(tokenizer.sizes)),
        suffix=suffix.astype(np.uint32),
        sizes=tokenizer.sizes,
        kind=kind,
    )
    return sem, rep


def _code_dtype(sizes: Sequence[int]) -> Any:
    m = max(sizes)
    return np.uint8 if m <= 256 else np.uint16 if m <= 65536 else np.uint32
