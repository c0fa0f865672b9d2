"""API keys: read keys for queries and index metadata, admin keys for ``/v1/admin/*``.

    Authorization: Bearer KEY      or      X-API-Key: KEY

Keys come from settings (``VQREC_API_KEYS``, ``VQREC_ADMIN_KEYS``). With no key configured at all,
authentication is off (every route open, as before keys existed). Otherwise:

    route                                   no / unknown key   read key   admin key
    /healthz, /readyz, /docs, /openapi.json open               open       open
    /v1/indexes/...  (queries, metadata)    401                200        200
    /v1/admin/...                           401                403        200
    /metrics                                open unless settings.metrics_public is false; then as admin

401 ``unauthorized`` carries ``WWW-Authenticate: Bearer``; 403 is ``forbidden`` (the one error shape).
Keys are compared with ``hmac.compare_digest`` against every configured key (no early exit), never
logged and never echoed: messages say only which kind of key is missing.

The admin routes (``/v1/admin/...``: index list, reload, rollback) are in service/routes/admin.py.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import ForbiddenError, UnauthorizedError
from .settings import Settings

Role = Literal["read", "admin"]

# auto_error=False: a missing key is our 401 (one error shape), not FastAPI's; both also put an
# "Authorize" button in /docs
_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer KEY`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `X-API-Key: KEY`")


class KeyRing:
    """The configured keys as bytes, built once per app (``app.state.keyring``)."""

    def __init__(self, settings: Settings) -> None:
        self.read = [k.get_secret_value().encode() for k in settings.api_keys]
        self.admin = [k.get_secret_value().encode() for k in settings.admin_keys]
        self.enabled = bool(self.read or self.admin)

    def role_of(self, key: str) -> Role | None:
        """The key's role (admin wins), or None. Every configured key is compared (no early exit)."""
        raw = key.encode("utf-8", "surrogateescape")
        is_admin = False
        is_read = False
        for k in self.admin:
            is_admin |= hmac.compare_digest(raw, k)
        for k in self.read:
            is_read |= hmac.compare_digest(raw, k)
        return "admin" if is_admin else ("read" if is_read else None)


def _presented(bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    return api_key or None


def check(request: Request, key: str | None, need: Role) -> Role | None:
    """The caller's role, or UnauthorizedError / ForbiddenError. None when authentication is off."""
    ring: KeyRing = request.app.state.keyring
    if not ring.enabled:
        return None
    if key is None:
        raise UnauthorizedError("missing API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`.")
    role = ring.role_of(key)
    if role is None:
        raise UnauthorizedError("invalid API key.")
    if need == "admin" and role != "admin":
        raise ForbiddenError("this route needs an admin key; the key sent is a read key.")
    return role


async def require_read(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Role | None:
    """Dependency for query and metadata routes: a read or an admin key."""
    return check(request, _presented(bearer, api_key), "read")


async def require_admin(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Role | None:
    """Dependency for ``/v1/admin/*``: an admin key (a read key is 403)."""
    return check(request, _presented(bearer, api_key), "admin")


ReadAuth = Depends(require_read)
AdminAuth = Depends(require_admin)
