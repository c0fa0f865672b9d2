"""Every domain error of vqrec, in one tree. No HTTP knowledge here: service/errors.py maps them to
status codes, and the CLI to exit codes (``vqrec rebuild`` reads ``RebuildError.exit_code``).

    VqrecError (ValueError)            code
    ├── InputError                     invalid_input          bad embeddings file or bad query input
    │   ├── DimensionMismatchError     dimension_mismatch     query/vector dimension differs from the index
    │   ├── NonFiniteError             non_finite             NaN or inf in a vector
    │   ├── InvalidPrefixError         invalid_prefix         a semantic-ID prefix that cannot exist
    │   └── InvalidCursorError         invalid_cursor         a page cursor not issued for this query/index
    ├── ConfigError                    invalid_config         an invalid trainer / build / search parameter
    ├── DistributedError               distributed_error      work on Ray that did not come back whole
    ├── ArtifactError                  artifact_error         an on-disk artifact cannot be used
    │   ├── ArtifactNotFound           artifact_not_found
    │   ├── ArtifactCorrupt            artifact_corrupt       missing file, checksum or shape mismatch, bad manifest
    │   ├── FormatVersionError         format_version         a format_version this code does not read
    │   └── StoreError                 store_error            a store operation that cannot be done
    ├── UnknownIdError                 unknown_id             (KeyError-like lookups)
    │   ├── UnknownItemError           unknown_item
    │   └── UnknownUserError           unknown_user
    ├── UnknownSemanticIdError         unknown_semantic_id    no entity has that semantic ID
    └── RebuildError                   rebuild_failed         the rebuild job stopped; exit_code says why

Every message names what was wrong and, where there is one, the file and both values. A value a message
echoes back from its caller (an id) is cut to ``ECHO_LIMIT`` characters and its length (``echo``): a 1 MB
id makes a short message, in an HTTP error body and on the command line alike. A test pins this tree
(tests/index/test_errors.py): every error class of the package is defined here.
"""

from __future__ import annotations

ECHO_LIMIT = 100  # characters of a caller's value that a message repeats


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` when it has at most ``limit`` characters, else its first ``limit`` and its length:
    ``"AAAA…(1000000 chars)"``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a caller's value for a message, cut like ``shorten``: ``'AAAA'…(1000000 chars)``."""
    if not isinstance(value, str):
        return shorten(repr(value), limit)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}…({len(value)} chars)"


class VqrecError(ValueError):
    """Base class of every error vqrec raises on purpose."""

    code = "vqrec_error"


class InputError(VqrecError):
    code = "invalid_input"


class DimensionMismatchError(InputError):
    code = "dimension_mismatch"


class NonFiniteError(InputError):
    code = "non_finite"


class InvalidPrefixError(InputError):
    code = "invalid_prefix"


class InvalidCursorError(InputError):
    code = "invalid_cursor"


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


class StoreError(ArtifactError):
    """A store operation that cannot be done (unknown version, nothing to roll back to, a clash)."""

    code = "store_error"


class UnknownIdError(VqrecError):
    code = "unknown_id"

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"Unknown {kind} id {echo(ident)}.")


class UnknownItemError(UnknownIdError):
    code = "unknown_item"

    def __init__(self, ident: str) -> None:
        super().__init__("item", ident)


class UnknownUserError(UnknownIdError):
    code = "unknown_user"

    def __init__(self, ident: str) -> None:
        super().__init__("user", ident)


class UnknownSemanticIdError(VqrecError):
    code = "unknown_semantic_id"


class RebuildError(VqrecError):
    """The rebuild job stopped; ``exit_code`` is one of ``vqrec.trainers.rebuild``'s EXIT_* codes."""

    code = "rebuild_failed"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
