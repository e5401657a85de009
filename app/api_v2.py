"""/api/v2/*: effects on the cut-out subject (POST /process) and their catalogue (GET /effects)."""

from __future__ import annotations

import base64
import time

from flask import Blueprint, g, jsonify, request

import effects
from app import pipeline
from app.http_io import read_upload, start_processing
from app.options import MAX_EFFECTS, ProcessOptions
from app.state import get_state

bp = Blueprint("v2", __name__, url_prefix="/api/v2")


@bp.before_request
def _before():
    if request.endpoint == "v2.process":
        start_processing(get_state().settings)


@bp.post("/process")
def process():
    """One upload, 1-4 effects: JSON with each result base64-encoded, timings and resolved parameters."""
    opts = ProcessOptions.from_form(request.form)  # every option checked before any pixel work
    state = get_state()
    upload = read_upload(state.settings)
    started = time.perf_counter()
    image = pipeline.decode(upload.data, state.settings)
    decode_ms = round((time.perf_counter() - started) * 1000, 1)
    result = pipeline.process(image, opts, state.segmenter, state.gate, g.deadline, state.settings)
    state.record_served()
    info = state.segmenter.info
    return jsonify({
        "images": {name: base64.b64encode(data).decode("ascii") for name, data in result.images.items()},
        "format": opts.format,
        "width": result.width,
        "height": result.height,
        "metadata": {
            "timings_ms": {"decode": decode_ms, **result.timings_ms},
            "adapter": info.name,
            "model": info.model_id,
            "remove_background": opts.remove_background,
            "refine_foreground": opts.refine_foreground,
            "params": {name: effects.get(name).public(params) for name, params in opts.effects},
        },
    })


@bp.get("/effects")
def list_effects():
    """Every effect with its parameter schema and presets, to build a form from."""
    return jsonify({"effects": effects.catalogue(), "max_effects_per_request": MAX_EFFECTS})
