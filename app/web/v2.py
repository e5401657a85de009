"""/api/v2/*: effects on the cut-out subject (POST /process) and their catalogue (GET /effects)."""

from __future__ import annotations

import base64
import json
import time

from flask import Blueprint, jsonify, request

import effects
from app import pipeline
from app.web.upload import processing, read_upload, request_budget
from app.ops.observability import add_timings
from app.pipeline.options import MAX_EFFECTS, ProcessOptions
from app.pipeline.request_cache import open_request_cache
from app.service import get_state

bp = Blueprint("v2", __name__, url_prefix="/api/v2")


@bp.post("/process")
@processing(ProcessOptions, produces="json")
def process():
    """One upload, 1-4 effects: JSON with each result base64-encoded, timings and resolved parameters."""
    opts = ProcessOptions.from_form(request.form)  # every option checked before any pixel work
    state = get_state()
    upload = read_upload(state.settings)
    started = time.perf_counter()
    rc = open_request_cache(state.cache, state.cache_model, upload.data)
    cached = rc.cached_output("process", opts.cache_fields())
    if cached is not None:
        result = json.loads(cached)
        timings = {"cache": _ms_since(started)}
    else:
        def mask_of(img):
            return rc.mask(img, lambda: pipeline.subject_alpha(img, state.segmenter))

        budget = request_budget()
        with pipeline.slot(state.gate, budget):  # decoding to encoding, as in pipeline.slot's note
            budget.check()
            decoding = time.perf_counter()
            image = pipeline.decode(upload.data, state.settings)
            decode_ms = _ms_since(decoding)
            processed = pipeline.process(image, opts, mask_of, state.settings, budget)
            del image
        result = {
            "images": {name: base64.b64encode(data).decode("ascii") for name, data in processed.images.items()},
            "width": processed.width,
            "height": processed.height,
        }
        rc.keep_output(json.dumps(result).encode("ascii"))
        timings = {"decode": decode_ms, **processed.timings_ms}
    add_timings(timings)
    state.record_served()
    info = state.segmenter.info
    return jsonify({
        "images": result["images"],
        "format": opts.format,
        "width": result["width"],
        "height": result["height"],
        "metadata": {
            "timings_ms": timings,
            "adapter": info.name,
            "model": info.model_id,
            "remove_background": opts.remove_background,
            "refine_foreground": opts.refine_foreground,
            "params": {name: effects.get(name).public(params) for name, params in opts.effects},
        },
    })


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@bp.get("/effects")
def list_effects():
    """Every effect with its parameter schema and presets, to build a form from."""
    return jsonify({"effects": effects.catalogue(), "max_effects_per_request": MAX_EFFECTS})
