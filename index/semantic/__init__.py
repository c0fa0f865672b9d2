"""Semantic IDs: the code tuple a learned residual tokenizer (RQ-VAE / CoST) gives each item, made
unique with a dedup suffix, plus the prefix structure that generative recommenders decode against.

numpy (and faiss for the exact neighbours of the report) only: the tokenizer is trained with torch
under ``trainers/learned``, but its weights are plain arrays here, so ``vqrec build`` and the service
compute and serve semantic IDs without torch.

    tokenizer.py       Tokenizer: numpy forward of a trained RQ-VAE (encode, decode) and its artifact
    ids.py             the ID table: assign_suffixes (dedup suffixes), SemanticIds (prefix structure,
                       lookup, string form, pagination cursors)
    quality.py         semantic_report: per-level usage, collisions, reconstruction error and
                       neighbourhood preservation
    build.py           the build step: align (rows in the index's id order) and tokenize (encode ->
                       SemanticIds + report)

Every name other modules use is re-exported here: ``from vqrec.index.semantic import Tokenizer``.
"""

from .build import align, tokenize
from .ids import SemanticIds, assign_suffixes, semantic_string
from .quality import collisions, level_usage, neighbourhood_preservation, semantic_report
from .tokenizer import INPUT_NORMS, TOKENIZER_FORMAT_VERSION, Layer, Tokenizer, residual_quantize

__all__ = [
    "INPUT_NORMS",
    "TOKENIZER_FORMAT_VERSION",
    "Layer",
    "SemanticIds",
    "Tokenizer",
    "align",
    "assign_suffixes",
    "collisions",
    "level_usage",
    "neighbourhood_preservation",
    "residual_quantize",
    "semantic_report",
    "semantic_string",
    "tokenize",
]
