"""Prometheus metrics through prometheus-client, summed across gunicorn workers (multiprocess mode),
every label from a fixed set; the details: docs/operations.md ("Metrics").
"""

from __future__ import annotations

import threading
from http import HTTPStatus

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER = "other"
# The statuses HTTP defines, plus 499 (a client that went away, app/errors.py's ClientGone).
STATUSES = frozenset({str(int(s)) for s in HTTPStatus} | {"499"})

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("bgremove_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram("bgremove_http_request_duration_seconds", "Time to answer an HTTP request",
                    ["endpoint", "method", "status"], buckets=_LATENCY_BUCKETS)
STAGE = Histogram("bgremove_stage_duration_seconds",
                  "Time in one step of the pipeline (segment = inference, including its wait for a slot)",
                  ["stage"], buckets=_LATENCY_BUCKETS)
IN_FLIGHT = Gauge("bgremove_http_requests_in_flight", "Requests being answered", multiprocess_mode="livesum")
INFERENCE_ACTIVE = Gauge("bgremove_inference_active", "Requests holding an inference slot", multiprocess_mode="livesum")
QUEUE_DEPTH = Gauge("bgremove_inference_queue_depth", "Requests waiting for an inference slot",
                    multiprocess_mode="livesum")
CACHE_EVENTS = Counter("bgremove_cache_events_total",
                       "Result cache events: output_hits, output_misses, mask_hits, ..., errors, corrupt, expired, writes",
                       ["event"])
RSS = Gauge("bgremove_worker_resident_memory_bytes", "Resident memory of the workers (sum over live workers)",
            multiprocess_mode="livesum")
GPU_MEMORY = Gauge("bgremove_gpu_memory_allocated_bytes", "GPU memory allocated by PyTorch (largest worker)",
                   multiprocess_mode="livemax")


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    text = str(status)
    return text if text in STATUSES else OTHER


class _CappedLabel:
    """At most ``limit`` distinct values per worker; any further value is counted as ``other``.
    For labels whose values the code chooses (stage and cache event names): a bug that let a
    request's data through could then not grow the metrics without bound."""

    def __init__(self, limit: int = 64):
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


_stage_label = _CappedLabel()
_cache_event_label = _CappedLabel()


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    labels = (route, method_label(method), status_label(status))
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)


def observe_stage(name: str, seconds: float) -> None:
    STAGE.labels(_stage_label(name)).observe(seconds)


def on_gate_change(active: int, waiting: int) -> None:
    INFERENCE_ACTIVE.set(active)
    QUEUE_DEPTH.set(waiting)


def on_cache_event(event: str) -> None:
    CACHE_EVENTS.labels(_cache_event_label(event)).inc()


def render(multiprocess_dir: str) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
