"""Dependencies: the settings and the registry from app.state, and an index by name (404 / 503)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from vqrec.index import CompressedIndex

from .errors import IndexNotLoadedError, UnknownIndexError
from .registry import Registry
from .settings import Settings

# async: they only read app.state, so they need not hop to the thread pool


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]


async def get_index(name: str, registry: RegistryDep) -> CompressedIndex:
    """The loaded index ``name``: UnknownIndexError (404) if not configured, IndexNotLoadedError (503) if
    it failed to load or loading has not run yet."""
    index = registry.indexes.get(name)
    if index is not None:
        return index
    if name in registry.failed:
        raise IndexNotLoadedError(f"index {name!r} is not loaded: {registry.failed[name]}")
    if not registry.loaded:
        raise IndexNotLoadedError(f"index {name!r} is not loaded: indexes are not loaded yet.")
    raise UnknownIndexError(f"unknown index {name!r}; available: {registry.names}.")


IndexDep = Annotated[CompressedIndex, Depends(get_index)]
