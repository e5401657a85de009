"""Cache keys: everything that decides the bytes of a result (the upload's sha256, the model, the
settings that change pixels, the normalised options, :data:`PIPELINE_VERSION`), and nothing else;
the details: docs/cache.md ("Keys").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from adapters import ModelInfo
from config import Settings

# Bump when output bytes change for the same inputs and options (a rendering fix, an encoder
# setting): a deployment sharing a bucket with an older one then never serves the older one's bytes.
# 2: confident masks reach 255 (adapters/onnx.py), decoding scales before converting.
# 3: the key holds this number instead of a hash of the source files (which changed on any edit).
# 4: 8bit and dither defaults follow the subject (8bit with a blocky alpha); stickers and contact shadows;
#    masks of photos over 1024 px brought up along the photo's edges (app/pipeline/upscale.py).
# 5: the mask's uncertain band re-solved by matting (EDGE_MATTING=band, app/pipeline/matte.py);
#    correction strokes.
# 6: PNG at PNG_COMPRESS_LEVEL 1-3 written by app/pipeline/png.py (the same pixels, other bytes).
# 7: strokes that fell back (grey on grey) have the edge matting solve twice (app/pipeline/correct.py).
PIPELINE_VERSION = 7


def upload_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The settings that change a result's pixels (besides the model): part of the result cache's key and
# of a batch's resume key (app.cli.local.deployment).
PIXEL_SETTINGS = ("max_dimension", "max_work_pixels", "png_compress_level", "edge_matting", "onnx_runtime")


def fingerprint(info: ModelInfo, settings: Settings) -> dict[str, Any]:
    """What, besides the upload and the request's options, decides a result on this deployment."""
    return {
        "adapter": info.name,
        "model": info.model_id,
        "model_sha256": info.file_sha256,
        "input_size": list(info.input_size),
        **{name: getattr(settings, name) for name in PIXEL_SETTINGS},
    }


def entry_key(kind: str, upload_sha256: str, model: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    document = {"v": PIPELINE_VERSION, "kind": kind, "upload": upload_sha256, "model": model, "options": options}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
