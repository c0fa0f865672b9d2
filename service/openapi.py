"""The OpenAPI document says what the service does.

- Every route lists each error status it can answer, with the one error body (``ErrorResponse``:
  ``{"error": {"code", "message", "details"?}}``), never FastAPI's default ``{"detail": ...}``.
- ``/metrics`` is ``text/plain`` (Prometheus' exposition format), not JSON.
- Security schemes and requirements appear only when keys are configured: with auth off nothing asks for one.

The routers take their error statuses from ``errors(...)`` (see service/routes/); ``install_openapi`` adjusts
what is decided per app (auth, /metrics) when the document is first built.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .schemas import ErrorResponse

WHY = {
    401: "no key, or an unknown key (only when keys are configured)",
    403: "a read key on an admin route (only when keys are configured)",
    404: "unknown index, user, item or semantic id",
    408: "the request body did not arrive within the body timeout",
    409: "a reload of this index is running, or there is nothing to roll back to",
    413: "the body, a batch or an exclusion list is larger than allowed",
    422: "invalid input (malformed JSON, a wrong type, a value out of range, ...): the error says which",
    503: "the index is not loaded: it failed to load, is broken on disk, or loading has not run",
}


def errors(*statuses: int, why: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these error statuses, each with the error body (``why`` overrides a
    description)."""
    text = {**WHY, **(why or {})}
    return {status: {"model": ErrorResponse, "description": text[status]} for status in statuses}


# what each group of routes can answer besides 200 (POST bodies can also be too large or too slow)
READ = errors(401, 403, 404, 422, 503)
QUERY = errors(401, 403, 404, 408, 413, 422, 503)
ADMIN = errors(401, 403, 404, 408, 409, 413, 422)


def install_openapi(app: FastAPI, *, auth: bool, metrics_public: bool) -> None:
    """Build the document once, on first request, adjusted for this app's settings."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        operations = [op for path in doc.get("paths", {}).values() for op in path.values() if isinstance(op, dict)]
        if not auth:
            for op in operations:
                op.pop("security", None)
            doc.get("components", {}).pop("securitySchemes", None)
        metrics = doc.get("paths", {}).get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"]["200"] = {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
            if auth and not metrics_public:
                err = {"$ref": "#/components/schemas/ErrorResponse"}
                for status in (401, 403):
                    metrics["responses"][str(status)] = {
                        "description": WHY[status],
                        "content": {"application/json": {"schema": err}},
                    }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
