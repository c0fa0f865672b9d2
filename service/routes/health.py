"""Liveness and readiness: /healthz (the process answers), /readyz (every configured index loaded)."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import RegistryDep
from ..errors import NotReadyError
from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="liveness: always 200 while the process serves")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="readiness: 200 when every configured index is loaded",
    responses={503: {"description": "an index failed to load, or loading has not run"}},
)
async def readyz(registry: RegistryDep) -> Readiness:
    if not registry.ready:
        details = {"loaded": sorted(registry.indexes), "failed": dict(sorted(registry.failed.items()))}
        raise NotReadyError(f"not ready: {registry.not_ready_reason()}", details=details)
    return Readiness(status="ready", indexes={name: idx.version for name, idx in sorted(registry.indexes.items())})
