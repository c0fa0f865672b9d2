"""The FastAPI app: ``create_app(settings)``; the lifespan loads the indexes onto app.state.

    uvicorn service.main:create_app --factory       (reads Settings from VQREC_* variables)
    vqrec serve ...                                  (service.main.run(settings))

Nothing happens at import: no settings read, no index loaded (and no torch imported, ever).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from .errors import install_error_handlers
from .registry import Registry, load_registry
from .routes import health, indexes, query, semantic
from .settings import Settings

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Send INFO (index loads) somewhere when nothing else configured logging (uvicorn configures only its
    own loggers). A no-op under a host that already installed root handlers, e.g. pytest."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level.upper() if level != "trace" else "DEBUG",
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level)
    # One BLAS thread: query LUTs are small matmuls, and OpenBLAS threads spin-waiting for a busy core
    # made a (64, 64) @ (64, 4096) product 30x slower (16 ms vs 0.5 ms) on a loaded 2-core machine.
    threadpool_limits(limits=1, user_api="blas")
    # blocking on purpose: the server accepts requests only once the indexes are loaded (or failed)
    app.state.registry = load_registry(settings.index_root, settings.indexes, verify=settings.verify_checksums)
    try:
        yield
    finally:
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
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(indexes.router)
    app.include_router(query.router)
    app.include_router(semantic.router)
    return app


def run(settings: Settings | None = None) -> None:
    """Serve with uvicorn on settings.host:settings.port (the ``vqrec serve`` command)."""
    import uvicorn

    settings = settings if settings is not None else Settings()  # type: ignore[call-arg]
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
