"""Prometheus metrics (``GET /metrics``), the request id and the access log.

One ``CollectorRegistry`` per app (``app.state.metrics``), so apps and tests never share series:

    vqrec_requests_total{route,method,status}    requests answered; route = the route template
                                                 (/v1/indexes/{name}/recommend), "unmatched" for 404s;
                                                 method = GET HEAD POST PUT DELETE PATCH OPTIONS or
                                                 "other"; status = the status answered
    vqrec_request_seconds{route,method}          latency histogram (seconds, in-process)
    vqrec_items_served_total{index}              results returned by the query routes (200s)
    vqrec_index_info{index,version}              1 for each loaded index's active version
    vqrec_index_items{index}                     items in the loaded index
    vqrec_index_up{index}                        1 loaded, 0 configured but failed to load
    vqrec_index_build_recall{index,kind}         recall@10 stored at build (manifest evaluation):
                                                 kind = user_to_item, user_to_item_rerank, item_to_item
    vqrec_reloads_total{index,outcome}           reloads, outcome = success | failure (record_reload)
    vqrec_reload_failures_total{index}           failed reloads

Index series are read from ``app.state.registry`` at scrape time (nothing to keep in sync). No label value
comes from a client unchecked: methods outside the seven known ones are "other" and paths no route matches
are "unmatched", so no request can add a series of its own (the routes, the 8 method values and the
statuses the service answers with bound them).

``ObservabilityMiddleware`` (pure ASGI, outermost) gives every request an id (the caller's
``X-Request-ID`` when sane, else a uuid4 hex), returns it as ``X-Request-ID`` on every response, errors
included, exposes it to log records (``request_id`` attribute, via a contextvar and ``RequestIdFilter``),
counts and times the request, and writes one JSON access line to the ``vqrec.access`` logger:
request_id, method, route, status, duration_ms, index. Never headers, query strings or bodies, so
API keys cannot reach the log.

``EscapeControlChars`` (on the service's log handlers, service.main.configure_logging) escapes control
characters and line separators in every record's message, so no value a client sends (a version, an id, a
path) can end a log line and forge the next one; the access line is JSON (``json.dumps`` escapes them too).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vqrec.index.errors import shorten

from .errors import request_id_of

if TYPE_CHECKING:
    from fastapi import FastAPI

access_logger = logging.getLogger("vqrec.access")

request_id_var: ContextVar[str] = ContextVar("vqrec_request_id", default="-")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECALL_KINDS = ("user_to_item", "user_to_item_rerank", "item_to_item")


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record as ``record.request_id`` ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


# C0 controls (\n \r \t \x1b ...), DEL, C1 controls (\x85 NEL ...), and the unicode line/paragraph separators:
# every character str.splitlines() breaks on, and every one a terminal acts on
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_control(text: str) -> str:
    """``text`` on one line: control characters and line separators as escapes (``\\n``, ``\\x1b``,
    ``\\u2028``); printable text, non-ASCII included, unchanged."""
    return _CONTROL.sub(_escape_one, text)


class EscapeControlChars(logging.Filter):
    """Makes every record's message one line (``escape_control``): a value a client sent can not end the
    line and forge the next. The message is formatted once, escaped, and stored back (args cleared)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format call: the handler reports it as usual
            return True
        escaped = escape_control(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def method_label(method: str) -> str:
    """The method as a label value: one of METHODS, else "other"."""
    return method if method in METHODS else "other"


class _IndexCollector(Collector):
    """Index series from the app's registry, computed at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        registry = getattr(self.app.state, "registry", None)
        info = GaugeMetricFamily("vqrec_index_info", "active version of each loaded index", labels=["index", "version"])
        items = GaugeMetricFamily("vqrec_index_items", "items in each loaded index", labels=["index"])
        up = GaugeMetricFamily("vqrec_index_up", "1 loaded, 0 configured but not loaded", labels=["index"])
        recall = GaugeMetricFamily(
            "vqrec_index_build_recall", "recall@10 measured at build (manifest evaluation)", labels=["index", "kind"]
        )
        if registry is not None:
            for name, index in sorted(registry.indexes.items()):
                info.add_metric([name, str(index.version)], 1.0)
                items.add_metric([name], float(len(index)))
                up.add_metric([name], 1.0)
                evaluation = index.manifest.get("evaluation") or {}
                for kind in RECALL_KINDS:
                    value = (evaluation.get(kind) or {}).get("recall@10") if isinstance(evaluation, dict) else None
                    if isinstance(value, int | float):
                        recall.add_metric([name, kind], float(value))
            for name in sorted(registry.failed):
                if name not in registry.indexes:
                    up.add_metric([name], 0.0)
        yield from (info, items, up, recall)


class Metrics:
    """The app's metric objects on their own CollectorRegistry."""

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("vqrec_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "vqrec_request_seconds", "HTTP request latency (seconds)", ["route", "method"], buckets=_BUCKETS, registry=r
        )
        self.items_served = Counter("vqrec_items_served", "results returned by query routes", ["index"], registry=r)
        self.reloads = Counter("vqrec_reloads", "index reloads", ["index", "outcome"], registry=r)
        self.reload_failures = Counter("vqrec_reload_failures", "failed index reloads", ["index"], registry=r)
        r.register(_IndexCollector(app))
        self._app = app

    def render(self) -> bytes:
        # reload series exist (at 0) for every configured index before the first reload
        registry = getattr(self._app.state, "registry", None)
        for name in getattr(registry, "names", []):
            self.reloads.labels(index=name, outcome="success")
            self.reloads.labels(index=name, outcome="failure")
            self.reload_failures.labels(index=name)
        return generate_latest(self.registry)


def count_served(request: Request, n: int) -> None:
    """Count ``n`` results returned by a query route of the index named in the path."""
    m: Metrics | None = getattr(request.app.state, "metrics", None)
    if m is not None and n:
        m.items_served.labels(request.path_params["name"]).inc(n)


def record_reload(app: FastAPI, index: str, ok: bool) -> None:
    """Count one reload of ``index`` (for the admin reload endpoint)."""
    m: Metrics = app.state.metrics
    m.reloads.labels(index=index, outcome="success" if ok else "failure").inc()
    if not ok:
        m.reload_failures.labels(index=index).inc()


async def metrics_endpoint(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObservabilityMiddleware:
    """Request id, X-Request-ID header, request metrics and the access log line (see the module doc)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        status = 500

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append(rid_header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            elapsed = time.perf_counter() - t0
            route = _route_of(scope)
            method = scope.get("method", "")
            index = (scope.get("path_params") or {}).get("name") if route != "unmatched" else None
            if isinstance(index, str):
                index = shorten(index)
            m = self.metrics
            m.requests.labels(route, method_label(method), str(status)).inc()
            m.latency.labels(route, method_label(method)).observe(elapsed)
            if access_logger.isEnabledFor(logging.INFO):
                line: dict[str, Any] = {
                    "request_id": rid,
                    "method": shorten(method, 32),
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "index": index,
                }
                access_logger.info(json.dumps(line), extra={"request_id": rid})
            request_id_var.reset(token)
