"""The build step of semantic IDs: tokenize the entities of an index (``attach_semantic_ids`` in
``index/build.py`` calls it for ``vqrec build --semantic-ids``).

    align              rows of an embeddings file in the order of the index's ids (InputError naming
                       the ids without a row)
    tokenize           encode with the tokenizer, assign the dedup suffixes, and the quality report:
                       one SemanticIds (compact code dtype) and its report
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..embeddings import Embeddings
from ..errors import InputError
from .ids import SemanticIds, assign_suffixes
from .quality import semantic_report
from .tokenizer import Tokenizer


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
