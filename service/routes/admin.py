"""Admin routes (``/v1/admin/...``, admin key): the index list, hot reload and rollback.

    GET  /v1/admin/indexes                   every configured index: path, versions, load time, or why it failed
    POST /v1/admin/indexes/{name}/reload     body optional: {"version": "..."} (store layout)
    POST /v1/admin/indexes/{name}/rollback   the alias's previous version

How a reload loads, verifies, self-tests and swaps, and its errors (404, 409, 422): service/reload.py, which
the alias poller (service/poller.py) uses too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from .. import reload
from ..auth import AdminAuth
from ..deps import RegistryDep
from ..openapi import ADMIN, errors

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAuth], responses=ADMIN)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(default=None, description="store layout: the version to load (default: the alias's)")


def _iso(ts: Any) -> str | None:
    if isinstance(ts, datetime):
        return ts.isoformat(timespec="seconds")
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    return None


@router.get("/indexes", summary="every configured index: path, version, load time, or why it failed")
async def admin_indexes(request: Request, registry: RegistryDep) -> dict[str, Any]:
    """What the registry holds: loaded indexes (path, index_version, store_version for the versioned
    store layout, items, load time) and failed ones (path, error); ``poll_seconds``: the alias poll interval
    (0 = off). ``loaded_at`` is when the index was (re)loaded (per index when the registry records it, else
    when the registry finished loading)."""
    per_index = getattr(registry, "loaded_at", None)
    per_index = per_index if isinstance(per_index, dict) else {}
    fallback = getattr(request.app.state, "registry_loaded_at", None)
    store_versions = getattr(registry, "versions", None)  # store layout: name -> active version directory
    store_versions = store_versions if isinstance(store_versions, dict) else {}
    indexes = [
        {
            "name": name,
            "path": registry.paths.get(name),
            "index_version": index.version,
            "store_version": store_versions.get(name),
            "n_items": len(index),
            "loaded_at": _iso(per_index.get(name, fallback)),
        }
        for name, index in sorted(registry.indexes.items())
    ]
    failed = [
        {"name": name, "path": registry.paths.get(name), "message": msg}
        for name, msg in sorted(registry.failed.items())
    ]
    settings = getattr(request.app.state, "settings", None)
    poll_seconds = getattr(settings, "poll_seconds", 0.0)
    return {"loaded": registry.loaded, "poll_seconds": poll_seconds, "indexes": indexes, "failed": failed}


@router.post(
    "/indexes/{name}/reload",
    summary="load, verify and self-test a version, then swap it in atomically",
    responses=errors(
        404,
        409,
        422,
        why={
            404: "unknown index (not served, and not found in the index root)",
            409: "a reload of this index is running",
            422: "the candidate failed to load, verify or self-test; the old version serves",
        },
    ),
)
def reload_index(
    name: str, request: Request, registry: RegistryDep, body: ReloadRequest | None = None
) -> dict[str, Any]:
    """Sync on purpose: loading blocks, so it runs in the thread pool while queries keep being answered."""
    return reload.reload_index(request.app, registry, name, body.version if body is not None else None, rollback=False)


@router.post(
    "/indexes/{name}/rollback",
    summary="reload the alias's previous version (same checks), flipping the alias back to it",
    responses=errors(
        404,
        409,
        422,
        why={
            404: "unknown index",
            409: "reload running, or nothing to roll back",
            422: "the previous version failed to load, verify or self-test",
        },
    ),
)
def rollback_index(name: str, request: Request, registry: RegistryDep) -> dict[str, Any]:
    return reload.reload_index(request.app, registry, name, None, rollback=True)
