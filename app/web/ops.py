"""Operations endpoints outside the API's namespace: /health, /model-info, /stats, /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.web import bg as api_bg

from app.ops import metrics
from app.service import get_state

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health():
    """Same as /api/bg/health (kept for clients of the original GPU service)."""
    return api_bg.health()


@bp.get("/model-info")
def model_info():
    """The model being served: adapter, id, parameters, file size, input size, device."""
    state = get_state()
    info = state.segmenter.info
    return jsonify({
        "status": "ready" if state.ready else "warming_up",
        "adapter": info.name,
        "model": info.model_id,
        "total_parameters": info.parameters,
        "model_size_mb": round(info.file_size_bytes / 2**20, 2),
        "target_size": list(info.input_size),
        "device": info.device,
        "file_sha256": info.file_sha256,
    })


@bp.get("/stats")
def stats():
    """This worker's figures: requests, latency of processing requests, inference queue, memory, cache.
    (/metrics has the same figures summed over every worker.)"""
    state = get_state()
    runtime = state.segmenter.runtime()
    cache = state.cache.stats()
    return jsonify({
        "uptime_s": round(state.uptime_s(), 1),
        "requests_total": state.requests_served,
        "active_requests": state.gate.active + state.gate.waiting,
        "latency_ms": state.latency.percentiles_ms(),
        "cache_hit_rate": cache.get("hit_rate"),
        "model_memory_mb": state.model_memory_mb(),
        "rss_mb": round(state.rss_mb(), 1),
        "gpu_memory_allocated_gb": runtime.get("gpu_memory_allocated_gb"),
        "inference": state.inference(),
        "cache": cache,
    })


@bp.get("/metrics")
def prometheus():
    """Prometheus text exposition, summed over the gunicorn workers."""
    state = get_state()
    gpu = state.segmenter.runtime().get("gpu_memory_allocated_gb")
    if gpu is not None:
        metrics.GPU_MEMORY.set(gpu * 2**30)
    body, content_type = metrics.render(state.settings.metrics_dir)
    return Response(body, content_type=content_type)
