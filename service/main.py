"""The FastAPI app: ``create_app(settings)``; the lifespan loads the indexes onto app.state.

    uvicorn service.main:create_app --factory       (reads Settings from VQREC_* variables)
    vqrec serve ...                                  (service.main.run(settings))

Nothing happens at import: no settings read, no index loaded (and no torch imported, ever).

Auth (service.auth): read key on /v1/indexes/..., admin key on /v1/admin/...; /healthz, /readyz, /docs,
/openapi.json open; /metrics open unless settings.metrics_public is false. No key configured = auth off.
Observability (service.metrics): X-Request-ID on every response, /metrics, the vqrec.access log.
Request limits (service.limits): a body over settings.max_body_bytes is 413 before it is read or parsed, a
body that does not arrive within settings.body_timeout_seconds is 408, and a request with a body to a route
that needs a key is authenticated before any of it is read.
Logging (``configure_logging``): one line per record, control characters escaped (EscapeControlChars);
``vqrec serve`` hands logging to the service at settings.log_level, so the access lines (INFO) are written.
Alias polling (service.poller): with settings.poll_seconds > 0 the lifespan starts an AliasPoller task
(``app.state.poller``; None when off) that reloads a store index whose ACTIVE alias moved, and stops it
at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from threadpoolctl import threadpool_limits

from .auth import AdminAuth, KeyRing, ReadAuth, Role
from .errors import install_error_handlers
from .limits import RequestLimitsMiddleware
from .metrics import EscapeControlChars, Metrics, ObservabilityMiddleware, RequestIdFilter, metrics_endpoint
from .openapi import install_openapi
from .poller import AliasPoller
from .registry import Registry, load_registry
from .routes import admin, health, indexes, query, semantic
from .settings import Settings

logger = logging.getLogger(__name__)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def configure_logging(level: str, *, force: bool = False) -> None:
    """The service's log handler on the root logger: stderr, LOG_FORMAT, ``level`` ("trace" is DEBUG), with
    RequestIdFilter and EscapeControlChars on it (every record one line, whatever a client sent).

    Without ``force``, a no-op under a host that already installed root handlers (e.g. pytest; uvicorn's
    own configuration touches only its loggers). ``force`` replaces the host's handlers: ``vqrec serve``
    hands logging over to the service (the CLI's WARNING handler would drop the INFO access lines)."""
    root = logging.getLogger()
    if root.handlers and not force:
        return
    logging.basicConfig(level=_level(level), format=LOG_FORMAT, force=force)
    for handler in root.handlers:
        handler.addFilter(RequestIdFilter())
        handler.addFilter(EscapeControlChars())


def _level(level: str) -> str:
    return "DEBUG" if level.lower() == "trace" else level.upper()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level)
    # One BLAS thread: query LUTs are small matmuls, and OpenBLAS threads spin-waiting for a busy core
    # made a (64, 64) @ (64, 4096) product 30x slower (16 ms vs 0.5 ms) on a loaded 2-core machine.
    threadpool_limits(limits=1, user_api="blas")
    # blocking on purpose: the server accepts requests only once the indexes are loaded (or failed)
    app.state.registry = load_registry(
        settings.index_root, settings.indexes, verify=settings.verify_checksums, mmap=settings.mmap
    )
    app.state.registry_loaded_at = time.time()
    ring: KeyRing = app.state.keyring
    if ring.enabled:  # counts only: keys are never logged
        logger.info("API keys: %d read, %d admin", len(ring.read), len(ring.admin))
    else:
        logger.warning("no API key configured (VQREC_API_KEYS / VQREC_ADMIN_KEYS): authentication is off")
    poller = AliasPoller(app, settings.poll_seconds) if settings.poll_seconds > 0 else None
    app.state.poller = poller
    if poller is not None:
        poller.start()
    try:
        yield
    finally:
        if poller is not None:
            await poller.stop()
        app.state.registry = Registry()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving the indexes under ``settings.index_root`` (``Settings()`` from the environment)."""
    settings = settings if settings is not None else Settings()  # type: ignore[call-arg]
    app = FastAPI(
        title="vqrec",
        summary="Top-k recommendations from vector-quantized (PQ/OPQ/RQ) embedding indexes.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = Registry()  # empty until the lifespan runs: /readyz answers 503
    app.state.keyring = KeyRing(settings)
    app.state.poller = None  # the lifespan starts one when settings.poll_seconds > 0
    app.state.metrics = metrics = Metrics(app)
    install_error_handlers(app)
    # before any route (or its auth dependency) reads a body: the routers' key requirements, by path prefix
    protected: dict[str, Role] = {"/v1/indexes": "read", "/v1/admin": "admin"}
    if not settings.metrics_public:
        protected["/metrics"] = "admin"
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        protected=protected,
    )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)  # added last: outermost, sees every answer
    app.include_router(health.router)
    app.include_router(indexes.router, dependencies=[ReadAuth])
    app.include_router(query.router, dependencies=[ReadAuth])
    app.include_router(semantic.router, dependencies=[ReadAuth])
    app.include_router(admin.router)
    observability = APIRouter(tags=["observability"], dependencies=[] if settings.metrics_public else [AdminAuth])
    observability.add_api_route(
        "/metrics", metrics_endpoint, methods=["GET"], summary="Prometheus metrics", include_in_schema=True
    )
    app.include_router(observability)
    install_openapi(app, auth=app.state.keyring.enabled, metrics_public=settings.metrics_public)
    return app


def run(settings: Settings | None = None) -> None:
    """Serve with uvicorn on settings.host:settings.port (the ``vqrec serve`` command). uvicorn's loggers
    go through the service's handler (log_config=None), and its own access line is off: the service writes
    one JSON access line per request (vqrec.access, INFO)."""
    import uvicorn

    settings = settings if settings is not None else Settings()  # type: ignore[call-arg]
    configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,
        "access_log": False,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    # several processes: uvicorn starts each from the import string, and each reads its Settings from the
    # environment, so the settings given here are exported first. A reload request reaches one worker; the
    # others follow the alias through their poller, which is therefore on.
    if settings.poll_seconds == 0:
        settings = settings.model_copy(update={"poll_seconds": DEFAULT_WORKER_POLL_SECONDS})
        logger.warning(
            "%d workers: alias poller on every %.0f s (VQREC_POLL_SECONDS) so a reload reaches every worker",
            settings.workers,
            DEFAULT_WORKER_POLL_SECONDS,
        )
    os.environ.update(settings_env(settings))
    uvicorn.run("vqrec.service.main:create_app", factory=True, workers=settings.workers, **common)


DEFAULT_WORKER_POLL_SECONDS = 5.0


def settings_env(settings: Settings) -> dict[str, str]:
    """VQREC_* variables that make ``Settings()`` equal ``settings`` (for the worker processes)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if name in ("api_keys", "admin_keys"):
            value = json.dumps([k.get_secret_value() for k in value])
        elif isinstance(value, list):
            value = json.dumps(value)
        env[f"VQREC_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
