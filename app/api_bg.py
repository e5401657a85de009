"""/api/bg/*: background removal, background colour, health and status."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from app import compose, pipeline
from app.http_io import image_response, output_name, read_upload, start_processing
from app.imaging import ALLOWED_EXTENSIONS
from app.options import ChangeColorOptions, RemoveOptions
from app.state import get_state

bp = Blueprint("bg", __name__, url_prefix="/api/bg")
PROCESSING = {"bg.remove", "bg.change_color"}
# The probe's body stays small: the device and its memory, if the adapter has them.
HEALTH_RUNTIME_KEYS = ("device", "gpu_memory_allocated_gb")


@bp.before_request
def _before():
    if request.endpoint in PROCESSING:
        start_processing(get_state().settings)


@bp.post("/remove")
def remove():
    """Subject on a transparent background (PNG/WebP), or the mask alone."""
    opts = RemoveOptions.from_form(request.form)
    upload, image, alpha = _segment_upload()
    if opts.only_mask:
        return _respond(compose.mask_image(alpha), opts.format, opts.quality, image, output_name("mask", upload.stem, opts.format))
    rgb = compose.refine_foreground(image.rgb, alpha) if opts.refine_foreground else image.rgb
    return _respond(compose.cutout(rgb, alpha), opts.format, opts.quality, image, output_name("nobg", upload.stem, opts.format))


@bp.post("/change_color")
def change_color():
    """Subject over a solid colour."""
    opts = ChangeColorOptions.from_form(request.form)
    upload, image, alpha = _segment_upload()
    rgb = compose.refine_foreground(image.rgb, alpha) if opts.refine_foreground else image.rgb
    result = compose.over_color(rgb, alpha, opts.color)
    return _respond(result, opts.format, opts.quality, image, output_name("nobg", upload.stem, opts.format))


def _segment_upload():
    """Read the upload, decode it, and segment it within the request's deadline."""
    state = get_state()
    upload = read_upload(state.settings)
    image = pipeline.decode(upload.data, state.settings)
    return upload, image, pipeline.segment(image, state.segmenter, state.gate, g.deadline)


def _respond(result, fmt: str, quality: int, image, download_name: str):
    state = get_state()
    data = pipeline.encode(result, fmt, quality, image, state.settings)
    state.record_served()
    return image_response(data, fmt, download_name)


@bp.get("/health")
def health():
    state = get_state()
    body = {"status": "healthy" if state.ready else "warming_up", "model_loaded": state.ready,
            "memory_mb": round(state.rss_mb(), 1)}
    runtime = state.segmenter.runtime()
    body.update({k: v for k, v in runtime.items() if k in HEALTH_RUNTIME_KEYS})
    return jsonify(body), 200 if state.ready else 503


@bp.get("/status")
def status():
    state = get_state()
    s = state.settings
    info = state.segmenter.info
    return jsonify({
        "status": "ready" if state.ready else "warming_up",
        "adapter": info.name,
        "model": info.model_id,
        "model_info": info.as_dict(),
        "memory": {"rss_mb": round(state.rss_mb(), 1), "model_loaded": state.ready},
        "runtime": state.segmenter.runtime(),
        "max_file_size_mb": s.max_file_size_mb,
        "max_dimension": s.max_dimension,
        "max_input_pixels": s.max_input_pixels,
        "allowed_extensions": ALLOWED_EXTENSIONS,
        "uptime_s": round(state.uptime_s(), 1),
        "requests_served": state.requests_served,
        "inference": {
            "max_concurrent": s.max_concurrent_inferences,
            "max_queue": s.max_queue,
            "active": state.gate.active,
            "waiting": state.gate.waiting,
            "request_timeout_s": s.request_timeout_s,
        },
    })
