"""Helpers the semantic-id tests share (test_semantic_ids / _tokenizer / _quality / _build): the dedup-suffix
oracle, random numpy tokenizers and sample inputs.

The tokenizers are random numpy weights (no torch); codebooks are drawn from the latents of random rows
(then their residuals), so every code is used and code tuples collide.
"""

from __future__ import annotations

import numpy as np

from vqrec.index.semantic import Tokenizer

SIZES = [4, 3, 5]
D = 16


def oracle_suffixes(codes: np.ndarray) -> np.ndarray:
    """Count earlier rows with the same code tuple, in row order."""
    seen: dict[tuple[int, ...], int] = {}
    out = []
    for row in np.asarray(codes).tolist():
        key = tuple(row)
        out.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return np.array(out, dtype=np.int64)


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def random_tokenizer(
    seed: int,
    d: int,
    sizes: list[int] | tuple[int, ...],
    *,
    x: np.ndarray | None = None,
    input_norm: str = "l2",
    latent_norm: bool = False,
) -> Tokenizer:
    """encoder [(32, d), (8, 32)], decoder mirrored, codebooks (K, 8): the latents (then residuals) of
    random rows of ``x`` (so every code is used), or of unrelated random inputs when ``x`` is None."""
    rng = np.random.default_rng(seed)
    enc = [(rand(rng, 32, d, scale=d**-0.5), rand(rng, 32, scale=0.1)), (rand(rng, 8, 32, scale=0.3), rand(rng, 8))]
    dec = [(rand(rng, 32, 8, scale=0.3), rand(rng, 32, scale=0.1)), (rand(rng, d, 32, scale=0.2), rand(rng, d))]
    probe = Tokenizer(
        encoder=enc, codebooks=[rand(rng, 1, 8)], decoder=dec, input_norm=input_norm, latent_norm=latent_norm
    )
    src = x if x is not None else rng.standard_normal((512, d)) * rng.lognormal(0, 0.7, (512, 1))
    r = probe.embed(probe.prepare(src)).astype(np.float32)
    codebooks = []
    for k in sizes:
        c = r[rng.choice(len(r), k, replace=False)].copy()
        codebooks.append(c)
        d2 = ((r[:, None, :] - c[None]) ** 2).sum(-1)
        r = r - c[d2.argmin(1)]
    return Tokenizer(
        encoder=enc,
        codebooks=codebooks,
        decoder=dec,
        input_norm=input_norm,
        latent_norm=latent_norm,
        config={"loss": "test", "seed": seed},
        report={"note": "random"},
    )


def sample_x(seed: int, n: int = 300, d: int = D) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32) * rng.lognormal(0, 0.7, (n, 1)).astype(np.float32)
    x[7] = 0.0  # a zero row (stays zero under l2 normalisation)
    return x
