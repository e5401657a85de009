"""Cache keys: everything that decides the bytes of a result, and nothing else.

A key is the sha256 of a canonical JSON document holding
- the sha256 of the uploaded bytes,
- the model: adapter, model id, the model file's sha256, the size the network runs at,
- the service settings that change pixels or bytes (the decode size limit, PNG compression),
- the kind of result and the request's output options, already normalised by the
  option classes (``cache_fields()``: parsed colours, resolved effect parameters,
  no quality for PNG...), so equivalent requests share an entry,
- :data:`KEY_VERSION`, bumped whenever the pipeline's output changes for the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from adapters import ModelInfo
from config import Settings

KEY_VERSION = 2  # 2: confident masks reach 255 (adapters/onnx.py), decoding scales before converting


def upload_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(info: ModelInfo, settings: Settings) -> dict[str, Any]:
    """What, besides the upload and the request's options, decides a result on this deployment."""
    return {
        "adapter": info.name,
        "model": info.model_id,
        "model_sha256": info.file_sha256,
        "input_size": list(info.input_size),
        "max_dimension": settings.max_dimension,
        "png_compress_level": settings.png_compress_level,
    }


def entry_key(kind: str, upload_sha256: str, model: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    document = {"v": KEY_VERSION, "kind": kind, "upload": upload_sha256, "model": model, "options": options}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
