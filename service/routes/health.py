"""Liveness and readiness: /healthz (the process answers), /readyz (every index found is loaded, none failed).

An index root with no index yet is ready (200, ``indexes: {}``): a first deployment serves names as they are
published (service/reload.py, service/poller.py), so a job that waits for the API to be healthy can publish
the first one. A name broken in place or failing to load makes it 503 naming the name and why.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import RegistryDep
from ..errors import NotReadyError
from ..openapi import errors
from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="liveness: 200 while the process serves")
async def healthz() -> Health:
    return Health(status="ok")


@router.head("/healthz", summary="liveness, headers only (load balancers and probes that send HEAD)")
async def healthz_head() -> Health:
    return await healthz()


_NOT_READY = errors(
    503, why={503: "an index failed to load or is broken on disk, the root is unreadable, or loading has not run"}
)


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="readiness: 200 when every index found is loaded and none failed (no index yet: 200)",
    responses=_NOT_READY,
)
async def readyz(registry: RegistryDep) -> Readiness:
    if not registry.ready:
        details = {
            "loaded": sorted(registry.indexes),
            "failed": dict(sorted(registry.failed.items())),
            "removed": dict(sorted(registry.removed.items())),
        }
        raise NotReadyError(f"not ready: {registry.not_ready_reason()}", details=details)
    return Readiness(
        status="ready",
        indexes={name: idx.version for name, idx in sorted(registry.indexes.items())},
        removed=dict(sorted(registry.removed.items())),
    )


@router.head("/readyz", summary="readiness, headers only", responses=_NOT_READY)
async def readyz_head(registry: RegistryDep) -> Readiness:
    return await readyz(registry)
