"""/api/bg/*: background removal, background colour, health and status."""

from __future__ import annotations

import os

from flask import Blueprint, jsonify, request

from app.pipeline import compose

from app import pipeline
from app.web.auth import require_admin
from app.pipeline.cache import CacheUnavailable
from app.web.errors import Overloaded
from app.ops.observability import stage
from app.web.upload import image_response, output_name, processing, read_upload, request_budget
from app.pipeline.imaging import ALLOWED_EXTENSIONS
from app.pipeline.options import ChangeColorOptions, RemoveBackgroundOptions, RemoveOptions
from app.pipeline.request_cache import open_request_cache
from app.service import get_state

bp = Blueprint("bg", __name__, url_prefix="/api/bg")
# The probe's body stays small: the device and its memory, if the adapter has them.
HEALTH_RUNTIME_KEYS = ("device", "gpu_memory_allocated_gb")


# The original GPU service's routes, kept for its clients (no /api/bg prefix).
compat = Blueprint("compat", __name__)


@bp.post("/remove")
@processing(RemoveOptions)
def remove():
    """Subject on a transparent background (PNG/WebP), or the mask alone."""
    return _remove(RemoveOptions.from_form(request.form))


@bp.post("/change_color")
@processing(ChangeColorOptions)
def change_color():
    """Subject over a solid colour."""
    return _change_color(ChangeColorOptions.from_form(request.form))


@compat.post("/remove-background")
@processing(RemoveBackgroundOptions)
def remove_background():
    """The original service's route: `output_format` png/webp (transparent) or jpeg (over white), `quality`.
    Shares cache entries with the equivalent /api/bg/remove and /api/bg/change_color requests."""
    opts = RemoveBackgroundOptions.from_form(request.form)
    if opts.output_format == "jpeg":
        return _change_color(ChangeColorOptions((255, 255, 255), "jpeg", opts.quality, False))
    return _remove(RemoveOptions(opts.output_format, False, opts.quality, False))


def _remove(opts: RemoveOptions):
    upload, rc = _upload_and_cache()
    with stage("cache"):
        cached = rc.cached_output("remove", opts.cache_fields())
    prefix = "mask" if opts.only_mask else "nobg"
    if cached is None:
        def render(image, alpha):
            if opts.only_mask:
                return compose.mask_image(alpha)
            rgb = compose.refine_foreground(image.rgb, alpha) if opts.refine_foreground else image.rgb
            return compose.cutout(rgb, alpha)

        cached = _compute(upload, rc, render, opts.format, opts.quality)
    return _respond(cached, opts.format, output_name(prefix, upload.stem, opts.format))


def _change_color(opts: ChangeColorOptions):
    upload, rc = _upload_and_cache()
    with stage("cache"):
        cached = rc.cached_output("change_color", opts.cache_fields())
    if cached is None:
        def render(image, alpha):
            rgb = compose.refine_foreground(image.rgb, alpha) if opts.refine_foreground else image.rgb
            return compose.over_color(rgb, alpha, opts.color)

        cached = _compute(upload, rc, render, opts.format, opts.quality)
    return _respond(cached, opts.format, output_name("nobg", upload.stem, opts.format))


def _upload_and_cache():
    state = get_state()
    upload = read_upload(state.settings)
    return upload, open_request_cache(state.cache, state.cache_model, upload.data)


def _compute(upload, rc, render, fmt: str, quality: int) -> bytes:
    """Decode, get the mask (cached, or the model's), ``render(image, alpha)``, encode: holding one
    inference slot throughout (see pipeline.slot), and stopping between steps when the deadline
    passes or the client leaves. The output is stored once the response is sent."""
    state = get_state()
    budget = request_budget()
    with pipeline.slot(state.gate, budget):
        budget.check()
        with stage("decode"):
            image = pipeline.decode(upload.data, state.settings)
        budget.check()

        def segment():
            with stage("segment"):
                return pipeline.subject_alpha(image, state.segmenter)

        alpha = rc.mask(image, segment)
        budget.check()
        with stage("compose"):
            result = render(image, alpha)
        del alpha
        budget.check()
        with stage("encode"):
            data = pipeline.encode(result, fmt, quality, image, state.settings)
    rc.keep_output(data)
    return data


def _respond(data: bytes, fmt: str, download_name: str):
    get_state().record_served()
    return image_response(data, fmt, download_name)


@bp.post("/clear_cache")
def clear_cache():
    """Empty the result cache (every instance's, for the shared GCS cache). Admin token required."""
    state = get_state()
    require_admin(state.settings)
    try:
        cleared = state.cache.clear()
    except CacheUnavailable as exc:
        raise Overloaded(f"cache: {exc}; retry later", retry_after=5, code="cache_unavailable") from None
    return jsonify({"cleared": cleared, "backend": state.cache.name})


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
        "worker_pid": os.getpid(),
        "requests_served": state.requests_served,
        "cache": state.cache.stats(),
        "inference": state.inference(),
    })
