"""One error body everywhere: ``{"error": {"code": "...", "message": "...", "details": {...}?}}``.

    status  code                 raised by
    401     unauthorized         auth: no API key, or an unknown one (with WWW-Authenticate: Bearer)
    403     forbidden            auth: a read key on an admin route (/v1/admin/*, /metrics when not public)
    404     unknown_index        deps.get_index (name not configured)
    404     unknown_user/_item   index.errors.UnknownIdError subclasses (code from the exception); also
                                 several ids at once (semantic-ids/lookup, details.unknown lists them)
    404     unknown_semantic_id  semantic-ids/lookup: a well-formed semantic id no item/user has
                                 (index.errors.UnknownSemanticIdError maps here too)
    404     no_semantic_ids      semantic-id routes on an index built without them, or whose users
                                 were not tokenized (the message says how to build them)
    404     not_found            no such route
    405     method_not_allowed   route exists, method does not
    408     request_timeout      the body did not arrive within settings.body_timeout_seconds (service.limits)
    409     reload_in_progress   admin reload/rollback while one of that index runs
    409     rollback_unavailable admin rollback of a flat (unversioned) index, or an alias with no previous
    413     payload_too_large    a body over settings.max_body_bytes, refused before it is read or parsed
                                 (service.limits)
    413     batch_too_large      more queries (or semantic-id lookups) than settings.max_batch
    413     exclude_too_large    more exclude_item_ids than settings.max_exclude
    422     malformed_json       the body is not JSON
    422     validation_error     wrong type / missing / unknown field (the message names the field)
    422     non_finite           NaN / Infinity / beyond-float32 value or norm in a vector (schema, or
                                 index.errors.NonFiniteError)
    422     invalid_query        both or neither of id and vector
    422     invalid_k            k outside 1..settings.max_k
    422     dimension_mismatch   index.errors.DimensionMismatchError (message carries both dimensions)
    422     invalid_prefix       semantic-id prefix: a code out of its level's range, not an integer, or
                                 more codes than the levels (index.semantic.InvalidPrefixError)
    422     invalid_semantic_id  semantic-ids/lookup: a string that is not "c1-...-cL-suffix" with in-range codes
    422     invalid_cursor       semantic-ids/prefix: a cursor not issued by this service, issued for another
                                 prefix or entity, or for another version of the index (InvalidCursorError)
    422     reload_failed        admin reload/rollback: the candidate is missing, fails verification or its
                                 self-test (the old version keeps serving; details name both versions)
    422     invalid_input        other index.errors.InputError (rerank without item vectors, zero cosine query)
    503     index_not_loaded     the named index failed to load (index.errors.ArtifactError also maps to 503)
    503     not_ready            /readyz while any configured index is not loaded
    500     internal             anything unexpected: logged with traceback and a request id; the client
                                 sees only the request id

Every response carries ``X-Request-ID`` (the caller's when sane, else a new uuid4 hex): set once per
request by service.metrics.ObservabilityMiddleware (``scope["state"]["request_id"]``), reused here.

Domain errors from ``index/`` carry their own ``code``; this module only picks the status.

No body echoes unbounded input (``error_response``): a message's runs of more than 200 characters without a
space (an id, index name, version or path a client sent) are cut to their first 100 and their length
(``…(N chars)``), the whole message to 2000 characters, and every string in ``details`` the same way.
Messages built in index/errors.py cut the ids they name already (``vqrec.index.errors.echo``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vqrec.index.errors import (
    ECHO_LIMIT,
    ArtifactError,
    UnknownIdError,
    UnknownSemanticIdError,
    VqrecError,
    shorten,
)

logger = logging.getLogger(__name__)


# ---- service-level errors (no counterpart in index/) ------------------------------------------
class ServiceError(Exception):
    """An error the service raises on purpose; subclasses fix status_code and code."""

    status_code = 500
    code = "internal"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnauthorizedError(ServiceError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServiceError):
    status_code = 403
    code = "forbidden"


class UnknownIndexError(ServiceError):
    status_code = 404
    code = "unknown_index"


class IndexNotLoadedError(ServiceError):
    status_code = 503
    code = "index_not_loaded"


class NotReadyError(ServiceError):
    status_code = 503
    code = "not_ready"


class ReloadInProgressError(ServiceError):
    status_code = 409
    code = "reload_in_progress"


class RollbackUnavailableError(ServiceError):
    status_code = 409
    code = "rollback_unavailable"


class ReloadFailedError(ServiceError):
    status_code = 422
    code = "reload_failed"


class InvalidKError(ServiceError):
    status_code = 422
    code = "invalid_k"


class BatchTooLargeError(ServiceError):
    status_code = 413
    code = "batch_too_large"


class ExcludeTooLargeError(ServiceError):
    status_code = 413
    code = "exclude_too_large"


class PayloadTooLargeError(ServiceError):
    """A body over settings.max_body_bytes (answered by service.limits, before the body is read)."""

    status_code = 413
    code = "payload_too_large"
    headers = {"Connection": "close"}


class RequestTimeoutError(ServiceError):
    """The body did not arrive within settings.body_timeout_seconds (answered by service.limits)."""

    status_code = 408
    code = "request_timeout"
    headers = {"Connection": "close"}


class NoSemanticIdsError(ServiceError):
    status_code = 404
    code = "no_semantic_ids"


class InvalidSemanticIdError(ServiceError):
    status_code = 422
    code = "invalid_semantic_id"


class UnknownIdsError(ServiceError):
    """Several ids at once (semantic-ids/lookup); the code names the kind: unknown_item, unknown_user or
    unknown_semantic_id."""

    status_code = 404

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code


# ---- the body ----------------------------------------------------------------------------------
MAX_MESSAGE = 2000  # characters of one error message
_LONG_RUN = re.compile(rf"\S{{{2 * ECHO_LIMIT + 1},}}")  # an echoed value, not words


def bounded_message(message: str) -> str:
    """``message`` as it is sent: runs of more than 2 * ECHO_LIMIT characters without a space cut to
    ECHO_LIMIT and their length, the whole to MAX_MESSAGE characters."""
    return shorten(_LONG_RUN.sub(lambda m: shorten(m.group()), message), MAX_MESSAGE)


def bounded_details(value: Any) -> Any:
    """``details`` as they are sent: every string over 2 * ECHO_LIMIT characters cut to ECHO_LIMIT."""
    if isinstance(value, str):
        return value if len(value) <= 2 * ECHO_LIMIT else shorten(value)
    if isinstance(value, dict):
        return {k: bounded_details(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bounded_details(v) for v in value]
    return value


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": bounded_message(message)}
    if details:
        body["details"] = bounded_details(details)
    return JSONResponse({"error": body}, status_code=status_code, headers=headers)


def status_for(exc: VqrecError) -> int:
    """404 for unknown ids, 503 for unusable artifacts, 422 for every other domain error (bad input)."""
    if isinstance(exc, UnknownIdError | UnknownSemanticIdError):
        return 404
    if isinstance(exc, ArtifactError):
        return 503
    return 422


# ---- request validation ------------------------------------------------------------------------
# error types that get their own code; the first match (in this order) decides the response code
_TYPE_CODES = (
    ("json_invalid", "malformed_json"),
    ("finite_number", "non_finite"),
    ("float32_overflow", "non_finite"),
    ("invalid_query", "invalid_query"),
)


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'queries', 2, 'vector', 0) -> 'queries[2].vector[0]'; other sources keep their prefix."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else list(loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _field_of(err: dict[str, Any]) -> str:
    if err.get("type") == "json_invalid":  # its loc holds a character position, not a field
        return "body"
    return field_path(err.get("loc", ())) or "body"


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        pos = loc[1] if len(loc) > 1 else "?"
        return f"malformed JSON at character {pos}: {err.get('ctx', {}).get('error', err.get('msg'))}."
    if loc == ("body",) and err.get("type") == "missing":
        return "request body is required: a JSON object."
    if loc == ("body",) and err.get("type") in ("model_attributes_type", "model_type", "dict_type"):
        return "request body must be a JSON object, sent with content-type application/json."
    if err.get("type") == "finite_number":
        return f"{field_path(loc)}: must be a finite number (NaN and Infinity are not allowed)."
    where = field_path(loc)
    msg = str(err.get("msg", "invalid value"))
    return f"{where}: {msg}" if where else msg


def validation_error_response(errors: Sequence[Any]) -> JSONResponse:
    errs = [dict(e) for e in errors]
    chosen, code = (errs[0] if errs else {}), "validation_error"
    for typ, typ_code in _TYPE_CODES:
        hit = next((e for e in errs if e.get("type") == typ), None)
        if hit is not None:
            chosen, code = hit, typ_code
            break
    # no "input" echoed back: it may be a large vector, or NaN (not valid JSON)
    details = {"errors": [{"field": _field_of(e), "type": e.get("type"), "message": e.get("msg")} for e in errs[:20]]}
    return error_response(422, code, _describe(chosen), details=details)


# ---- handlers ----------------------------------------------------------------------------------
async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status_code, exc.code, exc.message, details=exc.details, headers=exc.headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VqrecError)
    status = status_for(exc)
    if status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status, exc.code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error_response(exc.errors())


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


def _unparseable(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a JSON body (its 400 "There was an error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 JSON ({cause.reason} at byte {cause.start})."
    if isinstance(cause, RecursionError):
        return "the body is JSON nested too deeply to parse."
    return f"the body is not valid JSON ({type(cause).__name__ if cause else 'unreadable'})."


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return error_response(422, "malformed_json", _unparseable(exc.__cause__))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}."
    return error_response(exc.status_code, code, message, headers=exc.headers)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """This request's id: the one already chosen for it (scope state), else the caller's X-Request-ID
    when it is a sane token (at most 128 of ``A-Z a-z 0-9 . _ : -``), else a new uuid4 hex."""
    state = scope.get("state")
    if isinstance(state, dict) and "request_id" in state:
        return str(state["request_id"])
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            rid = value.decode("latin-1")
            if _REQUEST_ID.match(rid):
                return rid
            break
    return uuid.uuid4().hex


class InternalErrorMiddleware:
    """Unexpected exceptions -> 500 ``internal`` with a request id; the traceback goes to the log only.

    A plain ASGI middleware rather than ``add_exception_handler(Exception, ...)``: Starlette re-raises
    after such a handler, so the server would log the traceback a second time, without the request id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            rid = request_id_of(scope)
            logger.exception(
                "internal error, request id %s: %s %s",
                rid,
                scope.get("method"),
                scope.get("path"),
                extra={"request_id": rid},
            )
            if started:  # too late for an error body
                raise
            response = error_response(
                500, "internal", f"internal error, request id {rid}", headers={"x-request-id": rid}
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(VqrecError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(InternalErrorMiddleware)
