"""/api/v2/*: effects on the cut-out subject (POST /process) and their catalogue (GET /effects)."""

from __future__ import annotations

import base64

from flask import Blueprint, jsonify, request

import effects
from app.pipeline.options import MAX_EFFECTS, PRESETS, ProcessOptions, fields
from app.pipeline.errors import BadOption
from app.web.endpoints import image_response, processing

bp = Blueprint("v2", __name__, url_prefix="/api/v2")


@bp.post("/process")
@processing(ProcessOptions, produces="json")
def process(job, upload):
    """One upload, 1-4 effects: JSON with each result base64-encoded, timings and resolved parameters
    With `response=image` or `Accept: image/*` (and one effect), the image itself, as the image endpoints send it."""
    asked: ProcessOptions = job.options
    as_image = asked.response == "image" or \
        request.accept_mimetypes.best_match(["application/json", "image/*"]) == "image/*"
    if as_image and len(asked.effects) > 1:
        raise BadOption("response", f"an image response carries one effect, {len(asked.effects)} were asked for; "
                                    "ask for JSON (response=json, Accept: application/json) to get several")
    rendered = job.run()
    if as_image:
        return image_response(rendered, job, upload, next(iter(rendered.images)))
    opts: ProcessOptions = job.options
    info = job.runtime.segmenter.info
    return jsonify({
        "images": {name: base64.b64encode(data).decode("ascii") for name, data in rendered.images.items()},
        "format": opts.format,
        "width": rendered.width,
        "height": rendered.height,
        "metadata": {
            "timings_ms": job.timings.ms(),
            "adapter": info.name,
            "model": info.model_id,
            "remove_background": opts.remove_background,
            "refine_foreground": opts.refine_foreground,
            "params": rendered.params,
            # each image's subject box (remove.bg's X-Foreground-* in the image endpoints' headers)
            "foreground": {name: None if box is None else dict(zip(("left", "top", "width", "height"), box))
                           for name, box in rendered.foreground.items()},
            "mask_confidence": rendered.mask_confidence,  # 0-1; null when the background is kept
            # why a person should look at it ([] when it looks clean); null when the background is kept
            "mask_warnings": None if rendered.mask_warnings is None else list(rendered.mask_warnings),
            # the image endpoints' X-Upscaled (each image: the subject enlarged past its own pixels) and
            # X-Scaled-From (the upload's size when it was worked smaller; null: at its own size)
            "upscaled": {name: rendered.upscaled.get(name, False) for name in rendered.images},
            "scaled_from": None if rendered.scaled_from is None else "{}x{}".format(*rendered.scaled_from),
        },
    })


@bp.get("/layouts")
def list_layouts():
    """Every layout preset with the fields it sets (as a form writes them), and every layout field's schema."""
    layout = {f.name: f.schema for f in fields(ProcessOptions) if f.group == "layout"}
    return jsonify({"presets": PRESETS, "fields": layout})


@bp.get("/effects")
def list_effects():
    """Every effect with its parameter schema and presets, to build a form from."""
    return jsonify({"effects": effects.catalogue(), "max_effects_per_request": MAX_EFFECTS})
