"""Settings: the one place configuration enters the service (environment variables ``VQREC_*``).

    VQREC_INDEX_ROOT=/srv/indexes          a directory of index artifacts (one per subdirectory),
                                           or one index artifact directory
    VQREC_INDEXES=movies,books             optional: which of them to load (JSON list or commas)
    VQREC_MAX_K=100  VQREC_PORT=8080 ...
    VQREC_API_KEYS=k1,k2                   read keys (queries, index metadata); JSON list or commas
    VQREC_ADMIN_KEYS=a1                    admin keys (/v1/admin/*; they may also read)
    VQREC_METRICS_PUBLIC=true              /metrics without a key (false: an admin key is needed)
    VQREC_POLL_SECONDS=0                   > 0: every that many seconds, reload a store index whose
                                           ACTIVE alias moved (service/poller.py); 0 = off

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
