"""Per-request telemetry: the request id (``X-Request-ID``, else Cloud Run's trace id, else a new one),
the access log line with Cloud Logging's ``httpRequest`` fields, and the request metrics; the
details: docs/operations.md ("Telemetry").
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque

import psutil
from flask import Flask, Response, g, has_request_context, request

from app.ops import metrics
log = logging.getLogger("app.access")
LATENCY_KEY = "bgremove.latency"  # app.extensions: this worker's LatencyWindow
_PROCESS = psutil.Process()


def rss_mb() -> float:
    """This worker's resident memory."""
    return _PROCESS.memory_info().rss / 2**20

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")


def request_id_and_trace(headers) -> tuple[str, str | None]:
    """(request id, Cloud Trace id or None) from the request's headers."""
    trace_match = _TRACE.match(headers.get("X-Cloud-Trace-Context", ""))
    trace = trace_match.group(1).lower() if trace_match else None
    given = headers.get("X-Request-ID", "").strip()
    if _SAFE_ID.match(given):
        return given, trace
    return trace or uuid.uuid4().hex, trace


def current_request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


def current_trace() -> str | None:
    return g.get("trace") if has_request_context() else None


class LatencyWindow:
    """The last ``size`` request latencies of this worker, for /stats' p50/p95 (capacity, not per-user state)."""

    def __init__(self, size: int = 1000):
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentiles_ms(self) -> dict[str, float | None]:
        with self._lock:
            values = sorted(self._values)
        if not values:
            return {"p50": None, "p95": None}
        pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)  # noqa: E731
        return {"p50": pick(0.50), "p95": pick(0.95)}


def register(app: Flask) -> None:
    window = app.extensions[LATENCY_KEY] = LatencyWindow()
    metrics.RSS.set(_PROCESS.memory_info().rss)  # every worker counts from its boot, not its first request

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id, g.trace = request_id_and_trace(request.headers)
        metrics.IN_FLIGHT.inc()
        g.in_flight = True

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        response.headers["X-Request-ID"] = g.get("request_id", "")
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"  # bounded labels only
        metrics.observe_request(route, request.method, response.status_code, elapsed)
        metrics.RSS.set(_PROCESS.memory_info().rss)
        if getattr(app.view_functions.get(request.endpoint), "processing", False):
            window.add(elapsed)
        _access_log(response, elapsed)
        return response

    @app.teardown_request
    def _end(exc) -> None:
        if g.pop("in_flight", False):
            metrics.IN_FLIGHT.dec()


def _access_log(response: Response, elapsed: float) -> None:
    level = logging.INFO if response.status_code < 500 else logging.ERROR
    http_request = {  # https://cloud.google.com/logging/docs/reference/v2/rest/v2/LogEntry#HttpRequest
        "requestMethod": request.method,
        "requestUrl": request.full_path.rstrip("?") if request.query_string else request.path,
        "status": response.status_code,
        "responseSize": str(response.calculate_content_length() or 0),
        "userAgent": request.user_agent.string,
        "remoteIp": request.remote_addr,
        "latency": f"{elapsed:.6f}s",
        "protocol": request.environ.get("SERVER_PROTOCOL", ""),
    }
    log.log(level, "%s %s %d %.1f ms", request.method, http_request["requestUrl"], response.status_code,
            elapsed * 1000, extra={"httpRequest": http_request})
