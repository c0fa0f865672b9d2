"""Domain errors of vqrec. No HTTP knowledge here; service/errors.py maps them to status codes.

    VqrecError (ValueError)
    ├── InputError                 bad embeddings file or bad query input
    │   ├── DimensionMismatchError query/vector dimension differs from the index
    │   └── NonFiniteError         NaN or inf in a vector
    ├── ConfigError                an invalid trainer / build / search parameter
    ├── ArtifactError              an on-disk artifact cannot be used
    │   ├── ArtifactNotFound
    │   ├── ArtifactCorrupt        missing file, checksum or shape mismatch, unreadable manifest
    │   └── FormatVersionError     a format_version this code does not read
    └── UnknownIdError (KeyError-like lookups)
        ├── UnknownItemError
        └── UnknownUserError

Every message names what was wrong and, where there is one, the file and both values.
"""

from __future__ import annotations


class VqrecError(ValueError):
    """Base class of every error vqrec raises on purpose."""

    code = "vqrec_error"


class InputError(VqrecError):
    code = "invalid_input"


class DimensionMismatchError(InputError):
    code = "dimension_mismatch"


class NonFiniteError(InputError):
    code = "non_finite"


class ConfigError(VqrecError):
    code = "invalid_config"


class DistributedError(VqrecError):
    """Work on Ray that did not come back whole (a block without an answer, rows encoded twice or not at all)."""

    code = "distributed_error"


class ArtifactError(VqrecError):
    code = "artifact_error"


class ArtifactNotFound(ArtifactError):
    code = "artifact_not_found"


class ArtifactCorrupt(ArtifactError):
    code = "artifact_corrupt"


class FormatVersionError(ArtifactError):
    code = "format_version"


class UnknownIdError(VqrecError):
    code = "unknown_id"

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"Unknown {kind} id {ident!r}.")


class UnknownItemError(UnknownIdError):
    code = "unknown_item"

    def __init__(self, ident: str) -> None:
        super().__init__("item", ident)


class UnknownUserError(UnknownIdError):
    code = "unknown_user"

    def __init__(self, ident: str) -> None:
        super().__init__("user", ident)
