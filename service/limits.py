"""Request limits, enforced on the ASGI receive stream before anything reads or parses a body.

    VQREC_MAX_BODY_BYTES=16777216      largest request body (16 MiB; settings.py says why): over it, 413
                                       payload_too_large
    VQREC_BODY_TIMEOUT_SECONDS=30      the whole body must arrive within this many seconds of the request
                                       head: else 408 request_timeout

``RequestLimitsMiddleware`` (pure ASGI) sits inside the observability middleware (a refusal has an
X-Request-ID, is counted under its route template and logged like any answer) and outside everything
else. For a request that carries a body (a Content-Length above 0, or a Transfer-Encoding), in order:

1. authentication, when the path needs a key (``protected``: path prefix -> "read" | "admin", the same
   table as the routers' dependencies in service/main.py): no key or an unknown one is 401, a read key on
   an admin path 403, exactly as the route's own dependency would answer (service.auth.check), and not a
   byte of the body has been read;
2. a Content-Length over the limit: 413 at once, the body never read;
3. otherwise the app runs with a receive that counts the body as it arrives (chunked uploads) and refuses
   at the first chunk past the limit (413), and that gives the whole body ``body_timeout_seconds`` from
   the request head: a client that stops mid-body gets 408 when the time is up.

A refusal carries ``Connection: close``: the server closes the connection instead of reading (and
discarding) the rest of a body nobody wants, so a refused or stalled upload keeps no slot. When a
refusal happens mid-body, the app's own answer to the body it could not read (FastAPI's 400) is dropped
and the 413 / 408 is sent instead. A request without a body passes straight through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Role, check
from .errors import PayloadTooLargeError, RequestTimeoutError, ServiceError, error_response


def declared_body(scope: Scope) -> tuple[int | None, bool]:
    """(the Content-Length, or None when absent or not a number; whether a Transfer-Encoding is sent)."""
    length: int | None = None
    encoded = False
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif key == b"transfer-encoding":
            encoded = True
    return length, encoded


def presented_key(scope: Scope) -> str | None:
    """The API key a request carries, read as service.auth's dependencies read it: the credentials of
    ``Authorization: Bearer KEY`` (any case of "Bearer"), else ``X-API-Key``."""
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme and credentials and scheme.lower() == "bearer":
            return credentials
    return headers.get("x-api-key") or None


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes in the order the router tries them, included routers opened (FastAPI wraps each
    ``include_router`` in an object holding ``original_router``)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def label_route(scope: Scope) -> None:
    """Put on ``scope`` the route (and path params) the router would have picked, so that a request refused
    before routing is counted and logged under its route template (else "unmatched")."""
    if "route" in scope:
        return
    router = getattr(scope.get("app"), "router", None)
    partial = None
    for route in _leaf_routes(getattr(router, "routes", ())):
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope.update(child)
            scope["route"] = route
            return
        if match is Match.PARTIAL and partial is None:
            partial = (route, child)
    if partial is not None:
        scope.update(partial[1])
        scope["route"] = partial[0]


class RequestLimitsMiddleware:
    """Authentication before the body, the body limit and the body timeout (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_seconds: float,
        protected: Mapping[str, Role] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.protected = {prefix.rstrip("/"): role for prefix, role in (protected or {}).items()}

    def role_for(self, path: str) -> Role | None:
        for prefix, role in self.protected.items():
            if path == prefix or path.startswith(prefix + "/"):
                return role
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, encoded = declared_body(scope)
        if not encoded and not length:
            await self.app(scope, receive, send)  # no body: nothing to limit
            return
        refusal = self._before_reading(scope, length)
        if refusal is not None:
            label_route(scope)
            await self._refuse(refusal, scope, receive, send)
            return
        await self._read_limited(scope, receive, send, length)

    def _before_reading(self, scope: Scope, length: int | None) -> ServiceError | None:
        """401 / 403 for a path that needs a key the request does not carry, else 413 for a Content-Length over
        the limit, else None; nothing has been read."""
        role = self.role_for(scope.get("path", ""))
        if role is not None:
            try:
                check(Request(scope), presented_key(scope), role)
            except ServiceError as e:
                return e
        if length is not None and length > self.max_body_bytes:
            return PayloadTooLargeError(
                f"request body of {length} bytes is over the limit of {self.max_body_bytes} bytes "
                "(VQREC_MAX_BODY_BYTES); it was not read.",
                details={"max_body_bytes": self.max_body_bytes, "content_length": length},
            )
        return None

    @staticmethod
    async def _refuse(exc: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {**(exc.headers or {}), "Connection": "close"}
        response = error_response(exc.status_code, exc.code, exc.message, details=exc.details, headers=headers)
        await response(scope, receive, send)

    async def _read_limited(self, scope: Scope, receive: Receive, send: Send, length: int | None) -> None:
        limit, timeout = self.max_body_bytes, self.body_timeout_seconds
        deadline = anyio.current_time() + timeout
        received = 0
        complete = False
        refusal: ServiceError | None = None
        signal: StarletteHTTPException | None = None  # raised to the app; FastAPI re-raises HTTPExceptions
        started = False

        async def limited_receive() -> Message:
            nonlocal received, complete, refusal, signal
            if complete:  # e.g. waiting for a disconnect after the body: no limit applies
                return await receive()
            if signal is not None:
                raise signal
            message: Message | None = None
            with anyio.CancelScope(deadline=deadline):
                message = await receive()
            if message is None:
                of = f" of {length}" if length is not None else ""
                refusal = RequestTimeoutError(
                    f"request body not received within {timeout:g} s (VQREC_BODY_TIMEOUT_SECONDS): "
                    f"{received}{of} bytes arrived.",
                    details={"body_timeout_seconds": timeout, "received_bytes": received},
                )
            elif message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = PayloadTooLargeError(
                        f"request body is over the limit of {limit} bytes (VQREC_MAX_BODY_BYTES): refused after "
                        f"{received} bytes.",
                        details={"max_body_bytes": limit, "received_bytes": received},
                    )
                elif not message.get("more_body", False):
                    complete = True
            else:  # http.disconnect
                complete = True
            if refusal is not None:
                signal = StarletteHTTPException(refusal.status_code, refusal.message)
                raise signal
            assert message is not None
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return  # the app's answer to a body it could not read: the refusal goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except StarletteHTTPException as e:
            if signal is None or e is not signal:
                raise
        if refusal is not None and not started:
            await self._refuse(refusal, scope, receive, send)
