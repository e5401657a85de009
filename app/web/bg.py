"""/api/bg/*: background removal, background colour, health and status; the original service's route."""

from __future__ import annotations

import os

from flask import Blueprint, jsonify

from app.ops.observability import rss_mb
from app.pipeline.imaging import ALLOWED_EXTENSIONS
from app.pipeline.options import ChangeColorOptions, RemoveBackgroundOptions, RemoveOptions
from app.web import current_runtime
from app.web.auth import admin_required
from app.web.endpoints import image_response, processing
from app.web.openapi import responds

bp = Blueprint("bg", __name__, url_prefix="/api/bg")
# The probe's body stays small: the device and its memory, if the adapter has them.
HEALTH_RUNTIME_KEYS = ("device", "gpu_memory_allocated_gb")


# The original GPU service's routes, kept for its clients (no /api/bg prefix).
compat = Blueprint("compat", __name__)


@bp.post("/remove")
@processing(RemoveOptions)
def remove(job, upload):
    """Subject on a transparent background (PNG/WebP), or the mask alone."""
    return image_response(job.run(), job, upload)


@bp.post("/change_color")
@processing(ChangeColorOptions)
def change_color(job, upload):
    """Subject over a solid colour."""
    return image_response(job.run(), job, upload)


@compat.post("/remove-background")
@processing(RemoveBackgroundOptions)
def remove_background(job, upload):
    """The original service's route: `output_format` png/webp (transparent) or jpeg (over white), `quality`.
    Shares cache entries with the equivalent /api/bg/remove and /api/bg/change_color requests."""
    return image_response(job.run(), job, upload)


@bp.post("/clear_cache")
@admin_required
def clear_cache():
    """Empty the result cache (every instance's, for the shared GCS cache). Admin token required."""
    runtime = current_runtime()
    return jsonify({"cleared": runtime.cache.clear(), "backend": runtime.cache.name})


@bp.get("/health")
@responds(s503="warming up")
def health():
    """Readiness probe: 200 once the model has run, 503 while it warms up."""
    runtime = current_runtime()
    status = runtime.activity.status  # the probe's body says "healthy" for ready, as it always has
    body = {"status": "healthy" if status == "ready" else status, "model_loaded": runtime.activity.model_loaded,
            "memory_mb": round(rss_mb(), 1)}
    body.update({k: v for k, v in runtime.segmenter.runtime().items() if k in HEALTH_RUNTIME_KEYS})
    return jsonify(body), 200 if status == "ready" else 503


@bp.get("/status")
def status():
    """The service's state: model, limits, memory, uptime, requests served, cache and inference queue."""
    runtime = current_runtime()
    s = runtime.settings
    info = runtime.segmenter.info
    activity = runtime.activity
    return jsonify({
        "status": activity.status,
        "adapter": info.name,
        "model": info.model_id,
        "model_info": info.as_dict(),
        "memory": {"rss_mb": round(rss_mb(), 1), "model_loaded": activity.model_loaded},
        "runtime": runtime.segmenter.runtime(),
        "max_file_size_mb": s.max_file_size_mb,
        "max_dimension": s.max_dimension,
        "max_input_pixels": s.max_input_pixels,
        "max_output_pixels": s.max_output_pixels,
        "allowed_extensions": ALLOWED_EXTENSIONS,
        "uptime_s": round(activity.uptime_s(), 1),
        "worker_pid": os.getpid(),
        "requests_served": activity.requests_served,
        "cache": runtime.cache.stats(),
        "inference": runtime.inference(),
    })
