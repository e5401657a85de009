"""Operations endpoints outside the API's namespace: /health, /model-info, /stats, /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.ops import metrics
from app.ops.observability import LATENCY_KEY, rss_mb
from app.web import current_runtime
from app.web import bg
from app.web.openapi import responds

bp = Blueprint("ops", __name__)


@bp.get("/health")
@responds(s503="warming up")
def health():
    """Same as /api/bg/health (kept for clients of the original GPU service)."""
    return bg.health()


@bp.get("/model-info")
def model_info():
    """The model being served: adapter, id, parameters, file size, input size, device, and how it
    runs (``runtime``: the engine, its precision and why, as ``/api/bg/status`` gives them)."""
    runtime = current_runtime()
    info = runtime.segmenter.info
    return jsonify({
        "status": runtime.activity.status,
        "adapter": info.name,
        "model": info.model_id,
        "total_parameters": info.parameters,
        "model_size_mb": round(info.file_size_bytes / 2**20, 2),
        "target_size": list(info.input_size),
        "device": info.device,
        "file_sha256": info.file_sha256,
        "runtime": runtime.segmenter.runtime(),
    })


@bp.get("/stats")
def stats():
    """This worker's figures: requests, latency of processing requests, inference queue, memory, cache.
    (/metrics has the same figures summed over every worker.)"""
    runtime = current_runtime()
    device = runtime.segmenter.runtime()
    cache = runtime.cache.stats()
    return jsonify({
        "uptime_s": round(runtime.activity.uptime_s(), 1),
        "requests_total": runtime.activity.requests_served,
        "active_requests": runtime.gate.active + runtime.gate.waiting,
        "latency_ms": current_app.extensions[LATENCY_KEY].percentiles_ms(),
        "cache_hit_rate": cache.get("hit_rate"),
        # the weights' memory: float32 parameters (activations come and go with requests)
        "model_memory_mb": round(runtime.segmenter.info.parameters * 4 / 2**20, 1),
        "rss_mb": round(rss_mb(), 1),
        "gpu_memory_allocated_gb": device.get("gpu_memory_allocated_gb"),
        "inference": runtime.inference(),
        "cache": cache,
    })


@bp.get("/metrics")
@responds("text/plain")
def prometheus():
    """Prometheus text exposition, summed over the gunicorn workers."""
    runtime = current_runtime()
    gpu = runtime.segmenter.runtime().get("gpu_memory_allocated_gb")
    if gpu is not None:
        metrics.GPU_MEMORY.set(gpu * 2**30)
    body, content_type = metrics.render(runtime.settings.metrics_dir)
    return Response(body, content_type=content_type)
