"""Settings: the one place configuration enters the service (environment variables ``VQREC_*``).

    VQREC_INDEX_ROOT=/srv/indexes          a directory of index artifacts (one per subdirectory),
                                           or one index artifact directory
    VQREC_INDEXES=movies,books             optional: which of them to load (JSON list or commas)
    VQREC_MAX_K=100  VQREC_PORT=8080 ...
    VQREC_API_KEYS=k1,k2                   read keys (queries, index metadata); JSON list or commas
    VQREC_ADMIN_KEYS=a1                    admin keys (/v1/admin/*; they may also read)
    VQREC_METRICS_PUBLIC=true              /metrics without a key (false: an admin key is needed)
    VQREC_MMAP=auto                        memory-map the store's versions (auto), every index (always) or
                                           none (never): mapped pages are shared by the worker processes
    VQREC_POLL_SECONDS=0                   > 0: every that many seconds, reload a store index whose
                                           ACTIVE alias moved (service/poller.py); 0 = off
    VQREC_MAX_BODY_BYTES=16777216          largest request body (16 MiB): larger is 413 payload_too_large,
                                           refused before it is read or parsed (service/limits.py)
    VQREC_BODY_TIMEOUT_SECONDS=30          the whole body must arrive within this many seconds of the
                                           request head, else 408 request_timeout (service/limits.py)

Why 16 MiB: the largest body the other limits allow in practice is a full batch (max_batch = 256 queries)
of d-dim vectors: 256 x 1024 floats written in full (~21 bytes each) is ~5.5 MB, so 16 MiB holds d = 1024
three times over (d = 2048: ~11 MB). A query excluding max_exclude = 10,000 ids of 10 characters is
~0.14 MB, so 16 MiB also holds a full batch of queries each excluding ~4,000 such ids (13.7 MiB). Only the
product of both maxima (256 x 10,000 = 2.56 M exclusion ids, 34 MiB at 10 characters an id) does not fit:
parsing that costs ~1.2 s of the event loop and ~250 MB per request. Raise VQREC_MAX_BODY_BYTES for it.

No key configured (neither list) = authentication off. Keys are SecretStr: repr, str and logs show
``**********``, never the key.

Read once, in ``create_app`` (or by the caller that passes a ``Settings`` to it); never at import.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vqrec.index import MAX_K

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected key must not be echoed in the validation error (it reaches logs)
    model_config = SettingsConfigDict(env_prefix="VQREC_", extra="ignore", hide_input_in_errors=True)

    index_root: str = Field(description="directory of index artifacts (name = subdirectory), or one artifact")
    indexes: Annotated[list[str] | None, NoDecode] = Field(
        None, description="names to load (default: every artifact found under index_root)"
    )
    default_k: int = Field(10, ge=1, le=MAX_K)
    max_k: int = Field(MAX_K, ge=1, le=MAX_K)
    max_batch: int = Field(256, ge=1)
    max_exclude: int = Field(10_000, ge=0)
    verify_checksums: bool = True
    mmap: Literal["auto", "always", "never"] = Field(
        "auto",
        description="memory-map index files (pages shared by every worker) instead of reading them into memory: "
        "auto = the store's versions (written once, never rewritten), always, or never",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: LogLevel = "info"
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="read keys: queries and index metadata"
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="admin keys: /v1/admin/* (and everything a read key may do)"
    )
    metrics_public: bool = Field(True, description="serve /metrics without a key (else an admin key is needed)")
    poll_seconds: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="seconds between alias polls (0 = off): reload when the alias moves"
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes (vqrec serve --workers): each loads every index; with more than one, "
        "reloads reach the other workers through the alias poller (poll_seconds, 5 when left at 0)",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="largest request body in bytes (larger: 413 before it is read)"
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds from the request head by which the whole body must have arrived (else 408)",
    )

    @field_validator("indexes", "api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_names(cls, v: Any) -> Any:
        """Accept a JSON list or a comma-separated string (from the environment)."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [s.strip() for s in text.split(",") if s.strip()]
        return v

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _usable_keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        for key in v:
            raw = key.get_secret_value()
            if not raw or raw != raw.strip() or not raw.isprintable() or not raw.isascii():
                # the message never names the key
                raise ValueError("API keys must be non-empty printable ASCII without surrounding spaces.")
        return v

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.admin_keys)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _default_k_within_max(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k}).")
        return self
