"""Settings: the one place configuration enters the service (environment variables ``VQREC_*``).

    VQREC_INDEX_ROOT=/srv/indexes          a directory of index artifacts (one per subdirectory),
                                           or one index artifact directory
    VQREC_INDEXES=movies,books             optional: which of them to load (JSON list or commas)
    VQREC_MAX_K=100  VQREC_PORT=8080 ...

Read once, in ``create_app`` (or by the caller that passes a ``Settings`` to it); never at import.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from index import MAX_K

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VQREC_", extra="ignore")

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

    @field_validator("indexes", mode="before")
    @classmethod
    def _split_names(cls, v: Any) -> Any:
        """Accept a JSON list or a comma-separated string (from the environment)."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [s.strip() for s in text.split(",") if s.strip()]
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _default_k_within_max(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k}).")
        return self
