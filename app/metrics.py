"""Prometheus metrics through prometheus-client, correct across gunicorn workers.

gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the
workers fork; prometheus-client then keeps every worker's values in memory-mapped
files there, and ``/metrics`` (served by any one worker) adds them up. Gauges say how:
``livesum`` (queue depth, memory: the sum over live workers) or ``livemax``. Without
that variable (tests in one process) the default registry is used.

Labels are bounded: ``endpoint`` is the route's pattern (``/api/bg/remove``), never the raw path.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
)

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


def on_gate_change(active: int, waiting: int) -> None:
    INFERENCE_ACTIVE.set(active)
    QUEUE_DEPTH.set(waiting)


def on_cache_event(event: str) -> None:
    CACHE_EVENTS.labels(event).inc()


def render(multiprocess_dir: str) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
