"""vqrec index: codebooks, ADC search and the on-disk index artifact (numpy + faiss-cpu only)."""

from .adc import TopK, adc_topk, kernel_available
from .artifact import INDEX_FORMAT_VERSION, load_index, save_index
from .build import build_index
from .codebooks import Codebooks
from .embeddings import Embeddings, load_embeddings, save_embeddings
from .errors import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    ConfigError,
    DimensionMismatchError,
    DistributedError,
    FormatVersionError,
    InputError,
    InvalidCursorError,
    InvalidPrefixError,
    NonFiniteError,
    RebuildError,
    StoreError,
    UnknownIdError,
    UnknownItemError,
    UnknownSemanticIdError,
    UnknownUserError,
    VqrecError,
)
from .exact import exact_search
from .index import MAX_K, CompressedIndex, SearchResult, UserStore
from .store import IndexStore

__all__ = [
    "INDEX_FORMAT_VERSION",
    "MAX_K",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactNotFound",
    "Codebooks",
    "CompressedIndex",
    "ConfigError",
    "DimensionMismatchError",
    "DistributedError",
    "Embeddings",
    "FormatVersionError",
    "IndexStore",
    "InputError",
    "InvalidCursorError",
    "InvalidPrefixError",
    "NonFiniteError",
    "RebuildError",
    "SearchResult",
    "StoreError",
    "TopK",
    "UnknownIdError",
    "UnknownItemError",
    "UnknownSemanticIdError",
    "UnknownUserError",
    "UserStore",
    "VqrecError",
    "adc_topk",
    "build_index",
    "exact_search",
    "kernel_available",
    "load_embeddings",
    "load_index",
    "save_embeddings",
    "save_index",
]
